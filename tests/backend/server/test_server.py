"""The backend server with real processes, real sockets and the tiny preset."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motionclone.backend.video_io import read_clip, write_mp4
from motionclone.protocol import errors as codes
from motionclone.protocol.client import Client
from motionclone.protocol.codec import decode, encode
from motionclone.protocol.errors import BackendUnavailable, JobCancelledError, JobFailed
from motionclone.protocol.messages import PROTOCOL_VERSION, ArraySpec, Submit
from tests.protocol.slow_link import SlowLink
from tests.server_process import ServerProcess, cancel_mid_job, job_params

FAST = {"heartbeat_interval": 0.25, "dead_after": 1.5, "max_backoff": 1.0}


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for the tests that do not stop it (starting one costs seconds)."""
    server = ServerProcess(tmp_path_factory.mktemp("shared")).start()
    yield server
    server.kill()


CLI = [sys.executable, "-m", "motionclone.backend"]


def cli_job_options(reference, steps: int) -> list[str]:
    """`motionclone generate/submit` options for a small tiny-preset job: 8 frames of 64 × 64, 2 guided steps."""
    size = ["--frames", "8", "--width", "64", "--height", "64"]
    return [
        "--reference",
        str(reference),
        "--prompt",
        "a fox",
        *size,
        "--steps",
        str(steps),
        "--guidance-steps",
        "2",
        "--no-progress",
    ]


def connect(endpoint, **keys):
    client = Client(endpoint, **FAST, **keys).start()
    client.wait_connected(10)
    return client


def test_job_end_to_end_matches_motionclone_generate_bit_for_bit(shared_server, reference_frames, tmp_path):
    server = shared_server
    reference = write_mp4(reference_frames, tmp_path / "reference.mp4")
    options = [*cli_job_options(reference, steps=4), "--seed", "5"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cli = CLI
    submitted = subprocess.run(
        [*cli, "submit", "--server", server.endpoint, *options, "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "accepted, queue position 0" in submitted.stdout
    generated = subprocess.run(
        [*cli, "generate", "--preset", "tiny", "--device", "cpu", *options, "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert generated.returncode == 0, generated.stderr
    remote, local = read_clip(tmp_path / "a" / "frames").frames, read_clip(tmp_path / "b" / "frames").frames
    assert remote.shape == (8, 64, 64, 3)
    assert np.array_equal(remote, local)
    assert (tmp_path / "a" / "result.mp4").is_file() and (tmp_path / "a" / "result.json").is_file()


def test_submit_uses_the_servers_native_size_and_a_frame_step_and_warns_like_generate(shared_server, tmp_path, capsys):
    """Left out, the size is the server's preset's (tiny: 64 x 64), not SD-1.5's 512; with --frame-step the frames
    sent are every 2nd, and result.json says so, so that `motionclone evaluate` samples the same ones. A prompt
    longer than the text encoder reads is named, with the words left out, by both commands."""
    from motionclone.backend.cli import main
    from motionclone.backend.evaluation import evaluate
    from motionclone.backend.samples import make_moving_square_clip

    reference = write_mp4(make_moving_square_clip(20, 96, 96), tmp_path / "reference.mp4", fps=24.0)
    # The tiny preset's tokenizer reads a character per token (spaces aside): 75 fit, the last 7 do not.
    prompt = "a fox runs through the snowy forest at dawn as the camera pans left, soft light. Then it rains all day"
    options = ["--reference", str(reference), "--prompt", prompt, "--frame-step", "2", "--steps", "2"]
    options += ["--guidance-steps", "1", "--seed", "4", "--no-progress"]
    assert main(["submit", "--server", shared_server.endpoint, *options, "--out", str(tmp_path / "a")]) == 0
    remote_warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert main(["generate", "--preset", "tiny", "--device", "cpu", *options, "--out", str(tmp_path / "b")]) == 0
    local_warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    expected = "`prompt` is 84 tokens long, but the text encoder reads 77 (start and end included), so 's all day'"
    assert remote_warnings == local_warnings  # the tiny tokenizer cuts the official negative prompt too
    assert f"warning: {expected} was left out: shorten it or put what matters first" in local_warnings
    remote, local = read_clip(tmp_path / "a" / "frames").frames, read_clip(tmp_path / "b" / "frames").frames
    assert remote.shape == (10, 64, 64, 3)  # 20 frames, every 2nd
    assert np.array_equal(remote, local)
    recorded = json.loads((tmp_path / "a" / "result.json").read_text())
    assert recorded["parameters"]["frame_sampling"] == "step" and recorded["parameters"]["frame_step"] == 2
    assert recorded["reference_frames"]["indices"] == list(range(0, 20, 2))
    assert recorded["warnings"] == [line.removeprefix("warning: ") for line in local_warnings]
    sampling = evaluate(reference, tmp_path / "a")["inputs"]["reference_sampling"]
    assert sampling["indices"] == list(range(0, 20, 2))


def test_progress_and_previews_arrive_for_every_step(shared_server, reference_frames):
    server = shared_server
    with connect(server.endpoint) as client:
        events = []
        result = client.run_job(reference_frames, job_params(), on_event=events.append, timeout=120)
        welcome = client.server_info
    denoise_steps = [
        e.message.step
        for e in events
        if e.kind == "progress" and e.message.stage == "denoise" and e.message.preview is None
    ]
    assert denoise_steps == [0, 1, 2, 3, 4]
    previews = [e for e in events if e.kind == "progress" and e.message.preview is not None]
    assert [e.message.step for e in previews] == [2, 4]
    assert previews[0].payload.startswith(b"\x89PNG")
    assert result.frames().shape == (8, 64, 64, 3)
    assert welcome.presets == ["tiny"] and welcome.limits["max_output_frames"] == 32
    assert welcome.limits["size_multiple"] == 8
    assert welcome.limits["native_size"] == {"num_frames": 16, "height": 64, "width": 64}  # the tiny preset's
    assert welcome.limits["default_config"] == "camera"


def test_four_clients_with_three_jobs_each_get_their_own_in_submit_order(shared_server, reference_frames):
    server = shared_server
    outcomes: dict[int, list] = {}

    def client_run(index):
        with Client(server.endpoint, **FAST).start() as client:
            client.wait_connected(10)
            requests = [
                client.submit(
                    reference_frames, job_params(seed=index * 10 + n, num_inference_steps=2, guidance_steps=1)
                )
                for n in range(3)
            ]
            accepted, results = set(), []
            deadline = time.monotonic() + 240
            while len(results) < 3 and time.monotonic() < deadline:
                event = client.next_event(1.0)
                if event is None:
                    continue
                if event.kind == "accepted":
                    assert event.request_id in requests
                    accepted.add(event.job_id)
                elif event.kind == "result":
                    results.append(event)
                    client.ack(event.job_id)
                elif event.kind == "error":
                    raise AssertionError(event.message)
            outcomes[index] = [accepted, results]

    threads = [threading.Thread(target=client_run, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert sorted(outcomes) == [0, 1, 2, 3]
    finished = []
    for index, (accepted, results) in outcomes.items():
        assert len(results) == 3
        assert {result.job_id for result in results} == accepted  # only its own results
        assert {result.message.metadata["seed"] for result in results} == {index * 10 + n for n in range(3)}
        finished += [
            (result.message.metadata["job"]["completed"], result.message.metadata["job"]["sequence"])
            for result in results
        ]
    # Fair queue: each client's jobs complete in the order it submitted them (round robin only interleaves
    # clients), and no other job ran in between
    for index, (_, results) in outcomes.items():
        mine = sorted((r.message.metadata["job"]["completed"], r.message.metadata["job"]["sequence"]) for r in results)
        assert [sequence for _, sequence in mine] == sorted(sequence for _, sequence in mine), index
    sequences = sorted(sequence for _, sequence in finished)
    completions = sorted(completed for completed, _ in finished)
    assert sequences == list(range(sequences[0], sequences[0] + 12))
    assert completions == list(range(completions[0], completions[0] + 12))


def test_cancel_mid_job_stops_within_one_step_and_the_next_job_runs(shared_server, reference_frames):
    server = shared_server
    with connect(server.endpoint) as client:
        seen_step, stopped_at = cancel_mid_job(client, reference_frames)
        # progress still in flight when the cancel was sent may arrive after it; the job stops at the next step
        assert stopped_at <= seen_step + 1 and stopped_at < 40
        result = client.run_job(reference_frames, job_params(), timeout=120)
        assert result.frames().shape == (8, 64, 64, 3)


def test_a_killed_server_is_reported_within_5_s_and_finished_results_survive_a_restart(
    start_server, reference_frames, tmp_path
):
    results_dir = tmp_path / "kept"
    server = start_server(results_dir)
    with connect(server.endpoint) as client:
        finished = client.run_job(reference_frames, job_params(seed=3), timeout=120)  # not acknowledged
        killed_at = []

        def kill_once_running(event):
            if event.kind == "progress" and not killed_at:
                killed_at.append(time.monotonic())
                server.kill()

        with pytest.raises(BackendUnavailable, match=r"while job [0-9a-f]{32} was running"):
            client.run_job(
                reference_frames,
                job_params(num_inference_steps=400, guidance_steps=2),
                on_event=kill_once_running,
                timeout=60,
            )
        assert time.monotonic() - killed_at[0] < 5

    restarted = start_server(results_dir, bind=server.endpoint)
    with connect(restarted.endpoint) as again:
        fetched = again.fetch_result(finished.job_id, timeout=30)
    assert np.array_equal(fetched.frames(), finished.frames())
    assert fetched.message.metadata["seed"] == 3
    assert restarted.terminate() == 0  # SIGTERM shuts down cleanly
    assert any("stopped" in line for line in restarted.output)


def running_cli_submit(endpoint, reference_frames, tmp_path, out) -> tuple[subprocess.Popen, str]:
    """`motionclone submit` of a 400-step job in a process of its own, a second after the server accepted it."""
    reference = write_mp4(reference_frames, tmp_path / "reference.mp4")
    submit = subprocess.Popen(
        [*CLI, "submit", "--server", endpoint, *cli_job_options(reference, steps=400), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        # A test run started in the background inherits SIGINT ignored, and so would the command: Ctrl+C is a
        # terminal's SIGINT with the default handling.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    accepted = submit.stdout.readline()
    assert "accepted" in accepted, accepted
    time.sleep(1.0)
    return submit, accepted.split()[1]


def test_cli_status_and_fetch_and_what_submit_says_when_the_server_dies(
    start_server, reference_frames, tmp_path, capsys, monkeypatch
):
    from motionclone.backend import results
    from motionclone.backend.cli import EXIT_BACKEND, main

    server = start_server(tmp_path / "kept")
    assert main(["status", "--server", server.endpoint]) == 0
    out = capsys.readouterr().out
    assert "MotionClone backend" in out and "Device: cpu" in out and "tiny" in out
    assert "Queue: 0 running, 0 waiting" in out and "Worker in-process: idle on cpu" in out
    assert "Conditions: none (text-to-video only)" in out
    assert "Jobs that leave them out: 16 frames of 64 x 64, config camera" in out and "native_size" not in out
    assert "Frames per job: up to 256; one pass of its motion model takes up to 32, so longer jobs run in" in out

    with connect(server.endpoint) as client:
        finished = client.run_job(reference_frames, job_params(seed=3), timeout=120)  # not acknowledged
    fetch = ["fetch", finished.job_id, "--server", server.endpoint, "--out", str(tmp_path / "fetched")]

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    earlier = tmp_path / "earlier-result"
    results.write_result_folder(reference_frames[:2], {}, earlier, fps=8.0)
    with monkeypatch.context() as patched:  # a result that cannot be written says how to get it again
        patched.setattr(results, "write_mp4", full_disk)
        assert main(fetch) == EXIT_BACKEND
        error = capsys.readouterr().err
        assert main([*fetch[:-1], str(earlier), "--overwrite"]) == EXIT_BACKEND
        replacing = capsys.readouterr().err
    assert "No space left on device. The result stays on the server: once that is fixed, motionclone fetch" in error
    assert error.rstrip().endswith(f"fetch {finished.job_id} --server {server.endpoint} --out {tmp_path / 'fetched'}")
    assert replacing.rstrip().endswith(f"--out {earlier} --overwrite")  # the earlier result there is still in the way
    assert main(fetch) == 0  # it did: not acknowledged
    assert read_clip(tmp_path / "fetched" / "frames").frames.shape == (8, 64, 64, 3)
    capsys.readouterr()
    assert main([*fetch[:-1], str(tmp_path / "again")]) == EXIT_BACKEND  # acknowledged by the first fetch
    assert f"does not know job {finished.job_id}" in capsys.readouterr().err

    # A fetch that gives up on a running job says so, and the submit that waited for it learns that it moved.
    taken, taken_id = running_cli_submit(server.endpoint, reference_frames, tmp_path, tmp_path / "taken")
    early = ["fetch", taken_id, "--server", server.endpoint, "--out", str(tmp_path / "early"), "--wait", "1"]
    assert main(early) == EXIT_BACKEND
    assert "it is still queued or running; fetch it again later" in capsys.readouterr().err
    _, stderr = taken.communicate(timeout=60)
    assert taken.returncode == EXIT_BACKEND and f"another connection fetched job {taken_id}" in stderr

    submit, job_id = running_cli_submit(server.endpoint, reference_frames, tmp_path, tmp_path / "lost")
    server.kill()
    _, stderr = submit.communicate(timeout=60)
    assert submit.returncode == EXIT_BACKEND
    assert f"motionclone fetch {job_id} --server {server.endpoint} --out {tmp_path / 'lost'}" in stderr
    assert "fetch_result(" not in stderr


def test_ctrl_c_during_submit_cancels_the_job_on_the_server(shared_server, reference_frames, tmp_path):
    from motionclone.backend.cli import EXIT_INTERRUPTED

    submit, job_id = running_cli_submit(shared_server.endpoint, reference_frames, tmp_path, tmp_path / "out")
    submit.send_signal(signal.SIGINT)
    _, stderr = submit.communicate(timeout=60)
    assert submit.returncode == EXIT_INTERRUPTED, stderr
    assert f"Cancelled job {job_id} on the server." in stderr
    with connect(shared_server.endpoint) as client:  # the server no longer runs or keeps it
        with pytest.raises(JobFailed) as unknown:
            client.fetch_result(job_id, timeout=10)
        assert unknown.value.code == codes.UNKNOWN_JOB


def submitted_job_id(client, reference_frames, params) -> str:
    """Submit a job and wait for its `accepted`; the job id."""
    client.submit(reference_frames, params)
    while True:
        event = client.next_event(30)
        assert event is not None
        if event.kind == "accepted":
            return event.job_id


def test_a_client_that_disconnects_mid_job_fetches_its_result_by_id_later(shared_server, reference_frames):
    server = shared_server
    first = connect(server.endpoint)
    job_id = submitted_job_id(first, reference_frames, job_params(num_inference_steps=12, guidance_steps=2, seed=9))
    first.close()
    with connect(server.endpoint) as second:
        result = second.fetch_result(job_id, timeout=120)
        assert result.frames().shape == (8, 64, 64, 3)
        second.ack(job_id)
        with pytest.raises(JobFailed) as raised:
            second.fetch_result(job_id, timeout=30)  # acknowledged: deleted
    assert raised.value.code == codes.UNKNOWN_JOB


def test_a_fetch_from_another_connection_tells_the_one_that_followed_the_job_that_its_result_goes_there(
    shared_server, reference_frames
):
    with connect(shared_server.endpoint) as owner, connect(shared_server.endpoint) as other:
        # A long job: it is still running when the other connection fetches it.
        long_job = job_params(num_inference_steps=60, guidance_steps=2, seed=11)
        job_id = submitted_job_id(owner, reference_frames, long_job)
        result = other.fetch_result(job_id, timeout=120)
        told = [event for event in owner.poll_events() if event.kind == "error"]
        other.ack(job_id)

    assert result.frames().shape == (8, 64, 64, 3)
    assert [(event.message.code, event.job_id) for event in told] == [(codes.TAKEN_OVER, job_id)]
    assert "motionclone fetch" in told[0].message.hint


def test_a_clients_own_sampling_of_its_clip_is_checked_and_recorded_in_the_result(shared_server, reference_frames):
    """A client that sends every 2nd frame of a longer clip says so; the metadata then names those frames, also for a
    later fetch (the result is stored with it)."""
    sent = reference_frames[:8]
    sampling = {"frame_sampling": "step", "frame_step": 2, "indices": list(range(0, 16, 2))}
    with connect(shared_server.endpoint) as client:
        for bad, detail in [
            ({**sampling, "indices": sampling["indices"][:5]}, "one index per reference frame (8)"),
            ({**sampling, "indices": sampling["indices"][::-1]}, "strictly increasing"),
            ({**sampling, "frame_step": 0}, "at least 1"),
            (
                {**sampling, "frame_step": 10**6},
                "frame_step must be a whole number of frames, at least 1 and at most 1000",
            ),
            ({**sampling, "indices": [*sampling["indices"][:7], 2**40]}, "indices must be whole numbers from 0 to"),
            ({**sampling, "frame_sampling": "every"}, "frame_sampling must be one of"),
            ({"indices": sampling["indices"]}, "must hold frame_sampling, frame_step and indices"),
        ]:
            with pytest.raises(JobFailed) as raised:
                client.run_job(sent, job_params(), reference_sampling=bad, timeout=60)
            assert raised.value.code == codes.INVALID_FIELD and raised.value.field == "reference_sampling"
            assert detail in str(raised.value)
        result = client.run_job(sent, job_params(), reference_sampling=sampling, timeout=120)
        client.ack(result.job_id)
    metadata = result.message.metadata
    assert metadata["parameters"]["frame_sampling"] == "step" and metadata["parameters"]["frame_step"] == 2
    assert metadata["reference_frames"]["indices"] == sampling["indices"]
    assert metadata["reference_frames"]["sampled_by"] == "client"
    with connect(shared_server.endpoint) as client:  # without it, the server's own sampling of what it got
        plain = client.run_job(sent, job_params(), timeout=120).message.metadata
    assert plain["parameters"]["frame_sampling"] == "linspace"
    assert plain["reference_frames"]["indices"] == list(range(8))


def test_bad_parameters_are_rejected_with_the_field_and_the_server_keeps_serving(shared_server, reference_frames):
    server = shared_server
    with connect(server.endpoint) as client:
        for params, field in [
            (job_params(width=60), "width"),
            (job_params(num_frames=300), "num_frames"),
            (job_params(motion_guidance_weight=float("nan")), "motion_guidance_weight"),
            (job_params(guidance_sclae=1), "guidance_sclae"),
            (job_params(num_frames=16), "reference"),  # the reference has only 12 frames
            (job_params(motion_guidance_blocks={"up_blocks.1": 1}), "motion_guidance_blocks"),  # a map's keys
            (job_params(cls=1), "cls"),  # not a parameter, whatever the engine's own argument names are
        ]:
            with pytest.raises(JobFailed) as raised:
                client.run_job(reference_frames, params, timeout=30)
            assert raised.value.field == field, raised.value
        assert client.run_job(reference_frames, job_params(), timeout=120).frames().shape == (8, 64, 64, 3)


def test_job_status_counts_the_running_job_in_the_queue_position(shared_server, reference_frames):
    with connect(shared_server.endpoint) as client:
        running = client.submit(reference_frames, job_params(num_inference_steps=60, guidance_steps=2))
        waiting = client.submit(reference_frames, job_params())
        ids: dict[str, str] = {}
        status, running_seen = None, False
        deadline = time.monotonic() + 120
        while status is None and time.monotonic() < deadline:
            event = client.next_event(1.0)
            if event is None:
                continue
            if event.kind == "accepted":
                ids[event.request_id] = event.job_id
            if event.kind == "progress" and len(ids) == 2 and event.job_id == ids[running] and not running_seen:
                client.fetch(ids[waiting])
                running_seen = True
            if event.kind == "job_status" and event.job_id == ids.get(waiting):
                status = event.message
        assert running_seen and status is not None
        assert (status.state, status.queue_position) == ("queued", 1)  # one job, the running one, before it
        client.cancel(ids[running])
        client.cancel(ids[waiting])


def test_a_server_only_message_without_its_fields_is_an_unknown_type(fuzz_server):
    _, socket = fuzz_server
    socket.send_multipart([msgpack.packb({"v": PROTOCOL_VERSION, "type": "welcome", "request_id": "w1"})])
    assert socket.poll(10000)
    reply, _ = decode(socket.recv_multipart())
    assert (reply.code, reply.field, reply.request_id) == (codes.UNKNOWN_TYPE, "type", "w1")


@pytest.fixture(scope="module")
def fuzz_server(shared_server):
    server = shared_server
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(server.endpoint)
    yield server, socket
    socket.close()
    context.term()


def valid_header(**fields):
    return {"v": PROTOCOL_VERSION, "type": "ping", "request_id": "x", **fields}


header_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.lists(st.integers(-3, 2**40), max_size=5)
    | st.dictionaries(
        st.sampled_from(["shape", "dtype", "prompt", "width", "seed"]),
        st.integers(-3, 2**40) | st.text(max_size=5) | st.floats(),
        max_size=3,
    )
)
hostile_messages = (
    st.lists(st.binary(max_size=64), min_size=1, max_size=3)
    | st.builds(
        lambda h: [msgpack.packb(h)],
        st.dictionaries(
            st.sampled_from(["v", "type", "request_id", "job_id", "params", "reference", "preset", "junk"]),
            header_values,
            max_size=6,
        ),
    )
    | st.builds(
        lambda fields: [msgpack.packb({"v": PROTOCOL_VERSION, "type": "submit", "request_id": "r", **fields})],
        st.fixed_dictionaries(
            {
                "params": st.dictionaries(
                    st.sampled_from(["prompt", "width", "num_frames", "seed", "cfg_scale", "guidance_steps"]),
                    header_values,
                ),
                "reference": st.fixed_dictionaries(
                    {"shape": st.lists(st.integers(1, 2**31 - 1), min_size=4, max_size=4), "dtype": st.just("uint8")}
                ),
            }
        ),
    )
    | st.builds(lambda version: [msgpack.packb(valid_header(v=version))], st.integers(-5, 5))
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=hostile_messages)
def test_fuzzed_input_always_gets_an_answer_and_never_stops_the_server(fuzz_server, message):
    server, socket = fuzz_server
    socket.send_multipart(message)
    assert socket.poll(5000), "the server stopped answering"
    reply, _ = decode(socket.recv_multipart())
    assert reply.TYPE in ("error", "pong", "accepted", "welcome", "job_status", "cancelled", "echo")
    assert server.process.poll() is None


def test_after_fuzzing_a_valid_job_still_completes(fuzz_server, reference_frames):
    server, _ = fuzz_server
    with connect(server.endpoint) as client:
        assert client.run_job(reference_frames, job_params(), timeout=120).frames().shape == (8, 64, 64, 3)


def test_declared_shape_larger_than_the_bytes_is_refused(fuzz_server):
    _, socket = fuzz_server
    parts = encode(Submit("r", job_params(), ArraySpec((8, 64, 64, 3))), b"\0" * (8 * 64 * 64 * 3))
    socket.send_multipart([parts[0], b"\0" * 10])
    assert socket.poll(5000)
    reply, _ = decode(socket.recv_multipart())
    assert reply.code == codes.BAD_MESSAGE and reply.field == "reference"


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"reference_fps": -8.0}, "reference_fps"), ({"reference_fps": 0.0}, "reference_fps"), ({"preset": ""}, "preset")],
)
def test_submit_fields_the_reference_client_never_sends_wrong_are_checked_too(fuzz_server, fields, field):
    """Another client may send them: a frame rate that is none, an empty preset name (not the default preset)."""
    _, socket = fuzz_server
    frames = b"\0" * (8 * 64 * 64 * 3)
    message = Submit("r", job_params(), ArraySpec((8, 64, 64, 3)), **fields)
    socket.send_multipart(encode(message, frames))
    assert socket.poll(5000)
    reply, _ = decode(socket.recv_multipart())
    assert (reply.TYPE, reply.code, reply.field) == ("error", codes.INVALID_FIELD, field), reply


def test_curve_keys_admit_only_clients_with_the_server_key(start_server, reference_frames, tmp_path):
    keys = tmp_path / "keys"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    made = subprocess.run(
        [sys.executable, "-m", "motionclone.backend", "keygen", str(keys)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    server = start_server(extra=("--keys", str(keys)))
    from motionclone.protocol.keys import load_key_pair, load_public_key

    public, secret = load_key_pair(keys / "clients" / "client.key_secret")
    with connect(
        server.endpoint,
        server_public_key=load_public_key(keys / "server.key"),
        client_public_key=public,
        client_secret_key=secret,
    ) as client:
        assert client.run_job(reference_frames, job_params(), timeout=120).frames().shape == (8, 64, 64, 3)
    outsider = Client(server.endpoint, **FAST).start()
    with pytest.raises(BackendUnavailable):
        outsider.wait_connected(3)
    outsider.close()


def test_a_non_loopback_bind_without_keys_refuses_to_start(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "motionclone.backend",
            "serve",
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--bind",
            "tcp://0.0.0.0:0",
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Refusing to bind tcp://0.0.0.0:0 without encryption" in result.stderr
    assert "motionclone keygen" in result.stderr


def test_cancelled_job_raises_for_run_job_helpers(shared_server, reference_frames):
    server = shared_server
    with connect(server.endpoint) as client:

        def cancel_on_accept(event):
            if event.kind == "accepted":
                client.cancel(event.job_id)

        with pytest.raises(JobCancelledError):
            client.run_job(
                reference_frames,
                job_params(num_inference_steps=60, guidance_steps=2),
                on_event=cancel_on_accept,
                timeout=60,
            )


def test_status_reports_the_queue_and_the_worker(shared_server, reference_frames):
    with connect(shared_server.endpoint) as client, connect(shared_server.endpoint) as other:
        idle = client.server_status(10)
        assert (idle.queued, idle.running) == (0, 0)
        assert [worker["state"] for worker in idle.workers] == ["idle"]
        client.submit(reference_frames, job_params(num_inference_steps=30))
        client.submit(reference_frames, job_params(num_inference_steps=2))
        deadline = time.monotonic() + 60
        while (busy := other.server_status(10)).running == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (busy.queued, busy.running) == (1, 1)
        assert busy.workers == [{"name": "in-process", "device": "cpu", "state": "busy"}]  # no job ids
        assert busy.uptime > idle.uptime
        finished, deadline = 0, time.monotonic() + 120
        while finished < 2 and time.monotonic() < deadline:
            for event in client.poll_events():
                if event.kind == "result":
                    client.ack(event.job_id)
                    finished += 1
            time.sleep(0.05)
        done = other.server_status(10)
        assert (done.queued, done.running, done.completed) == (0, 0, idle.completed + 2)


def test_a_large_echo_slower_than_the_dead_time_crosses_a_slow_link_without_losing_the_connection(shared_server):
    port = int(shared_server.endpoint.rsplit(":", 1)[1])
    link = SlowLink(port, bytes_per_second=1_000_000)
    try:
        # 2 MB each way at 1 MB/s: the server sends the echo back tracked (it is over 1 MiB), and each way takes longer
        # than the client's 1.5 s dead time. The server answers the heartbeat connection's Pings meanwhile.
        with connect(link.endpoint) as client:
            seconds = client.measure_round_trip(bytes(2_000_000), timeout=20)
            assert client.connected
    finally:
        link.close()
    assert seconds > 2 * FAST["dead_after"]


def memory_kib(pid: int, field: str) -> int:
    """A memory figure of process `pid` from Linux's /proc/PID/status, in KiB (VmRSS now, VmHWM its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").is_file(), reason="peak memory is read from Linux's /proc")
def test_a_256_frame_512px_reference_passes_the_limits_and_the_server_holds_it_once(start_server, reference_frames):
    """The longest reference windows allow, at SD-1.5's size: 256 x 512 x 512 x 3 bytes = 192 MiB in one message.
    The server keeps it in the zmq frame it arrived in, so its peak memory grows by one copy, not two."""
    reference = np.empty((256, 512, 512, 3), dtype=np.uint8)
    reference[:] = (np.arange(256, dtype=np.uint8) * 7)[:, None, None, None]  # every frame its own grey level
    assert reference.nbytes == 192 * 1024 * 1024
    params = job_params(num_inference_steps=2, guidance_steps=1)
    server = start_server()  # its own, so that the peak measured is this test's
    with connect(server.endpoint) as client:
        client.run_job(reference_frames, params, timeout=120)  # the engine's own working memory first
        Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # the peak starts again from here
        before = memory_kib(server.process.pid, "VmRSS") * 1024
        assert reference.nbytes < client.server_info.limits["max_message_bytes"]
        result = client.run_job(reference, params, timeout=300)
        grown = memory_kib(server.process.pid, "VmHWM") * 1024 - before
    indices = result.message.metadata["reference_frames"]["indices"]
    assert len(indices) == 8 and indices[0] == 0 and indices[-1] == 255  # spread over every frame that arrived
    assert result.frames().shape == (8, 64, 64, 3)
    assert reference.nbytes * 0.9 < grown < reference.nbytes * 1.5, f"peak grew by {grown / 2**20:.0f} MiB"
