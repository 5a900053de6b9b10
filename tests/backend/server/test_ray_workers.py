"""`motionclone serve --workers ray`: a real server process with a local Ray instance and 2 CPU worker actors."""

import os
import signal
import time

import numpy as np
import pytest

from motionclone.protocol.client import Client
from motionclone.protocol.errors import JobFailed
from tests.server_process import ServerProcess, cancel_mid_job, job_params

pytest.importorskip("ray")

pytestmark = pytest.mark.slow
FAST = {"heartbeat_interval": 0.25, "dead_after": 5.0, "max_backoff": 1.0}


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    server = ServerProcess(
        tmp_path_factory.mktemp("ray"), extra=("--workers", "ray", "--ray-workers", "2", "--ray-cpus-per-worker", "1")
    )
    server.start()
    yield server
    server.terminate()


def connect(endpoint: str) -> Client:
    client = Client(endpoint, **FAST).start()
    client.wait_connected(120)
    return client


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_status_lists_one_idle_cpu_worker_per_actor(ray_server):
    with connect(ray_server.endpoint) as client:
        status = client.server_status(10)
        welcome = client.server_info
    assert [worker["name"] for worker in status.workers] == ["ray-worker-0", "ray-worker-1"]
    assert {worker["state"] for worker in status.workers} == {"idle"}
    assert {worker["device"] for worker in status.workers} == {"cpu"}
    assert len({worker["pid"] for worker in status.workers}) == 2  # two processes, not two threads
    assert welcome.device == "ray: 2 x cpu"


def test_two_clients_jobs_run_at_the_same_time_on_different_actors(ray_server, reference_frames):
    with connect(ray_server.endpoint) as first, connect(ray_server.endpoint) as second:
        params = job_params(num_inference_steps=12, guidance_steps=2)
        first.submit(reference_frames, params)
        second.submit(reference_frames, {**params, "seed": 2})
        # `running` counts the jobs handed to the pool; the actors' states reach the server a moment later
        wait_for(lambda: both_actors_busy(first.server_status(10)), 60, "both workers to be busy")
        results = [wait_for(lambda c=c: next_result(c), 120, "a result") for c in (first, second)]
        # a worker is shown idle by the time its job's result arrives
        assert [worker["state"] for worker in first.server_status(10).workers] == ["idle", "idle"]
    assert [r.message.metadata["seed"] for r in results] == [1, 2]


def both_actors_busy(status) -> bool:
    return status.running == 2 and [worker["state"] for worker in status.workers] == ["busy", "busy"]


def next_result(client: Client):
    event = client.next_event(0.5)
    if event is not None and event.kind == "error":
        raise AssertionError(event.message)
    return event if event is not None and event.kind == "result" else None


def test_results_and_previews_equal_the_in_process_worker_bit_for_bit(
    ray_server, reference_frames, tmp_path, monkeypatch
):
    # Each actor runs torch on the CPUs it reserved (one here); the in-process server gets the same thread count,
    # since float sums split over another number of threads round differently.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    local_server = ServerProcess(tmp_path / "local").start()
    local_events, remote_events = [], []
    try:
        with connect(local_server.endpoint) as client:
            local = client.run_job(reference_frames, job_params(seed=7), on_event=local_events.append, timeout=120)
    finally:
        local_server.terminate()
    with connect(ray_server.endpoint) as client:
        remote = client.run_job(reference_frames, job_params(seed=7), on_event=remote_events.append, timeout=120)
    assert remote.frames().shape == (8, 64, 64, 3)
    assert np.array_equal(remote.frames(), local.frames())
    local_previews, remote_previews = previews(local_events), previews(remote_events)
    assert len(remote_previews) == 2 and remote_previews == local_previews  # the previews cross the actor boundary


def previews(events) -> list[tuple[int, bytes]]:
    """(step, PNG bytes) of every preview among `events`."""
    return [
        (event.message.step, bytes(event.payload))
        for event in events
        if event.kind == "progress" and event.message.preview is not None
    ]


def test_cancel_reaches_the_actor_within_one_step(ray_server, reference_frames):
    with connect(ray_server.endpoint) as client:
        seen_step, stopped_at = cancel_mid_job(client, reference_frames)
    # progress still in flight when the cancel was sent may arrive after it; the actor stops at the next step
    assert stopped_at <= seen_step + 1 and stopped_at < 40


def test_a_killed_actor_fails_its_job_the_other_actors_job_finishes_and_the_next_job_runs(ray_server, reference_frames):
    with connect(ray_server.endpoint) as victim, connect(ray_server.endpoint) as bystander:
        wait_for(lambda: busy_pids(victim) == [], 60, "both workers to be idle")  # after the earlier tests' jobs
        before = {w["name"]: w["pid"] for w in victim.server_status(10).workers}
        victim.submit(reference_frames, job_params(num_inference_steps=600))  # long: it is killed anyway
        running = wait_for(lambda: busy_pids(victim), 60, "the first job to start")
        bystander.submit(reference_frames, job_params(num_inference_steps=40, seed=3))
        wait_for(lambda: len(busy_pids(victim)) == 2, 60, "the second job to start on the other actor")
        killed = running[0]
        os.kill(killed, signal.SIGKILL)

        failure = wait_for(lambda: next_event_of(victim, "error"), 120, "the killed job's error")
        assert "died" in failure.message.message
        assert "Submit the job again" in (failure.message.hint or failure.message.message)
        survivor = wait_for(lambda: next_result(bystander), 120, "the other actor's result")  # raises on an error
        assert survivor.frames().shape == (8, 64, 64, 3)
        result = victim.run_job(reference_frames, job_params(seed=4), timeout=180)
        assert result.frames().shape == (8, 64, 64, 3)
        after = wait_for(
            lambda: (w := victim.server_status(10).workers) and all(x["state"] == "idle" for x in w) and w,
            180,
            "the replaced worker",
        )
    assert killed in before.values()
    assert killed not in {w["pid"] for w in after}  # replaced by a new process
    assert len(after) == 2


def busy_pids(client: Client) -> list[int]:
    return [worker["pid"] for worker in client.server_status(10).workers if worker["state"] == "busy"]


def next_event_of(client: Client, kind: str):
    """The next event when it is of `kind`; None when there is none yet or it is another kind."""
    event = client.next_event(0.5)
    return event if event is not None and event.kind == kind else None


def test_one_clients_many_jobs_do_not_starve_another_clients_job(ray_server, reference_frames):
    params = job_params(num_inference_steps=4, guidance_steps=2)
    finished: list[str] = []  # "busy" or "other", in the order the results arrived
    with connect(ray_server.endpoint) as busy, connect(ray_server.endpoint) as other:
        for seed in range(6):
            busy.submit(reference_frames, {**params, "seed": seed})
        wait_for(lambda: busy.server_status(10).queued >= 3, 30, "the first client's jobs to queue up")
        other.submit(reference_frames, {**params, "seed": 100})

        def collect(client, name):
            event = client.next_event(0.2)
            if event is not None and event.kind == "error":
                raise AssertionError(event.message)
            if event is not None and event.kind == "result":
                finished.append(name)
                client.ack(event.job_id)

        def all_done():
            collect(busy, "busy")
            collect(other, "other")
            return len(finished) == 7

        wait_for(all_done, 240, "all seven results")
    # two actors: the other client's job is next in line after the two that were running when it came
    assert finished.index("other") <= 3, finished


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, pid -> command line (from /proc)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                commands[int(entry)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = {}, list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found[child] = commands.get(child, "")
        stack.extend(children.get(child, []))
    return found


def test_the_server_outlives_its_ray_cluster_and_runs_the_next_job_on_a_new_one(
    tmp_path, monkeypatch, reference_frames
):
    # Ray ends a driver whose GCS is gone after this many seconds (60 by default)
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "3")
    server = ServerProcess(tmp_path, extra=("--workers", "ray", "--ray-workers", "1")).start()
    try:
        with connect(server.endpoint) as client:
            killed: list[int] = []

            def kill_the_cluster(event):
                if event.kind == "progress" and event.message.stage == "denoise" and not killed:
                    for pid, command in descendants(server.process.pid).items():
                        if "gcs_server" in command:
                            os.kill(pid, signal.SIGKILL)
                            killed.append(pid)

            with pytest.raises(JobFailed) as failed:
                client.run_job(
                    reference_frames,
                    job_params(num_inference_steps=600, guidance_steps=2),
                    on_event=kill_the_cluster,
                    timeout=180,
                )
            assert killed, f"no gcs_server process below the server; the job failed: {failed.value}"
            assert "Ray cluster" in str(failed.value) and "keeps running" in str(failed.value)
            down = client.server_status(10).workers
            assert [worker["state"] for worker in down] == ["down"]
            result = client.run_job(reference_frames, job_params(seed=5), timeout=240)
            assert result.frames().shape == (8, 64, 64, 3)
            assert [worker["state"] for worker in client.server_status(10).workers] == ["idle"]
        assert server.process.poll() is None
    finally:
        server.terminate()
