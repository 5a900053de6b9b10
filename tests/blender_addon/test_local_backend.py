"""The local backend the add-on starts, watches and stops itself (bpy in background mode: the tests call the pump).

Fake `motionclone` programs (small Python scripts) stand in for backends that fail or never get ready; the real
backend of the project's environment (tiny preset, 64 px, 2 steps) runs the jobs end to end.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import bpy
import pytest

from blender_addon import compat, local_backend
from tests.blender_addon.test_addon import (
    ADDON,
    RecordingLayout,
    animated_scene,
    configure_job,
    disable_addon,
    enable_addon,
    pump_until,
)

ROOT = Path(__file__).resolve().parents[2]


def backend_environment() -> Path:
    """The environment with the backend: the one of MOTIONCLONE_BACKEND_PYTHON (the Blender 4.2 leg's own has no
    torch), else this interpreter's. Not resolved: a virtual environment's bin/python links to the system Python."""
    python = os.environ.get("MOTIONCLONE_BACKEND_PYTHON") or sys.executable
    return Path(python).parent.parent


def backend_has_local_flags() -> bool:
    cli = (ROOT / "backend" / "cli.py").read_text(encoding="utf-8")
    return all(text in cli for text in ("--parent-pid", "--state-file", "def command_info"))


needs_real_backend = pytest.mark.skipif(
    not backend_has_local_flags(), reason="the backend has no --parent-pid, --state-file and `info` yet"
)


def use_local_backend(preferences, tmp_path: Path, environment: Path) -> None:
    preferences.backend_mode = "LOCAL"
    preferences.local_environment = str(environment)
    preferences.local_preset = "tiny"
    preferences.local_device = "cpu"
    preferences.local_results_dir = str(tmp_path / "backend")
    preferences.output_dir = str(tmp_path / "results")
    preferences.timeout = 5.0


@pytest.fixture
def local_addon(tmp_path):
    """The add-on set to a local backend in the project's environment; whatever it started is stopped after."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    preferences = enable_addon()
    use_local_backend(preferences, tmp_path, backend_environment())
    yield preferences
    from blender_addon import session

    pid = session.get_session().local.pid
    if ADDON in bpy.context.preferences.addons:
        bpy.context.preferences.addons[ADDON].preferences.keep_running = False
        disable_addon()  # stops the backend
    if pid and local_backend.pid_alive(pid):  # a test that failed half-way: never leave a backend behind
        os.kill(pid, signal.SIGKILL)


def fake_backend(tmp_path: Path, body: str) -> Path:
    """An environment folder whose bin/motionclone is a Python script running `body` (sys, time, json imported)."""
    program = tmp_path / "fake-env" / local_backend.EXECUTABLE_IN_ENVIRONMENT
    program.parent.mkdir(parents=True)
    program.write_text(f"#!{sys.executable}\nimport json, sys, time\n{body}\n", encoding="utf-8")
    program.chmod(0o755)
    return program.parent.parent


def generate_with_fake_backend(local_addon, tmp_path: Path, body: str):
    """Point the add-on at a fake backend program running `body` and press Generate on an 8-frame scene, which
    returns at once (the job waits for the backend). Returns the scene's MotionClone settings."""
    local_addon.local_environment = str(fake_backend(tmp_path, body))
    settings = configure_job(animated_scene(frames=8))
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    return settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def local():
    from blender_addon import session

    return session.get_session().local


def pump_recording_states(condition, timeout: float) -> tuple[bool, list[str]]:
    """pump_until, also recording each local backend state seen."""
    seen: list[str] = []

    def check() -> bool:
        if not seen or seen[-1] != local().state:
            seen.append(local().state)
        return condition()

    return pump_until(check, timeout), seen


# ---- settings and wrong paths ----------------------------------------------------------------------------------------
def test_a_wrong_environment_path_says_what_was_expected_where(local_addon, tmp_path):
    missing = tmp_path / "no-such-env"
    with pytest.raises(local_backend.LocalBackendError, match="does not exist") as error:
        local_backend.find_executable(str(missing))
    assert str(missing / local_backend.EXECUTABLE_IN_ENVIRONMENT) in str(error.value)
    empty = tmp_path / "empty-env"
    empty.mkdir()
    with pytest.raises(local_backend.LocalBackendError, match="holds no") as error:
        local_backend.find_executable(str(empty))
    assert f"expected {empty / local_backend.EXECUTABLE_IN_ENVIRONMENT}" in str(error.value)
    with pytest.raises(local_backend.LocalBackendError, match="No backend environment is set"):
        local_backend.find_executable("")

    # From the buttons: Generate and Check stop at once with the same message, and nothing starts.
    local_addon.local_environment = str(empty)
    scene = animated_scene(frames=8)
    configure_job(scene)
    with pytest.raises(RuntimeError, match="holds no"):
        bpy.ops.motionclone.generate()
    assert len(scene.motionclone.jobs) == 0 and local().state == "stopped"
    with pytest.raises(RuntimeError, match="holds no"):
        bpy.ops.motionclone.check_backend()
    from blender_addon import session

    assert "holds no" in session.get_session().local_check[0]


def test_check_reports_what_the_backend_environment_runs(local_addon, tmp_path):
    info = {  # the shape of the real `motionclone info` (pretty-printed over several lines)
        "version": "9.9.9",
        "python": "3.11.7",
        "torch": "2.13.0",
        "torch_error": None,
        "cuda_available": False,
        "cuda_device": None,
        "presets": [{"name": "blocks", "default_device": "cpu"}, {"name": "tiny", "default_device": "cpu"}],
    }
    environment = fake_backend(tmp_path, f"assert sys.argv[1:] == ['info']\nprint(json.dumps({info!r}, indent=2))")
    local_addon.local_environment = str(environment)
    assert bpy.ops.motionclone.check_backend() == {"FINISHED"}
    from blender_addon import session

    lines = session.get_session().local_check
    assert lines[0] == "MotionClone backend 9.9.9 (Python 3.11.7, torch 2.13.0, no CUDA: runs on the CPU)"
    assert lines[1] == "Presets: blocks, tiny"
    local_addon.local_preset = "sd15-animatediff-v3"
    assert bpy.ops.motionclone.check_backend() == {"FINISHED"}
    assert "no preset 'sd15-animatediff-v3': pick one of blocks, tiny" in session.get_session().local_check[-1]

    # The preferences show what Check found, the weight folders of the SD-1.5 preset, and Start and Stop.
    calls = []
    type(local_addon).draw_local(local_addon, RecordingLayout(calls))
    labels = [kwargs.get("text") for name, _, kwargs in calls if name == "label"]
    assert session.get_session().local_check[-1] in labels
    assert "Local backend not started: Generate starts it" in labels
    props = {args[1] for name, args, _ in calls if name == "prop"}
    assert {"local_environment", "local_base", "local_motion_adapter", "local_checkpoint", "keep_running"} <= props
    operators = {args[0] for name, args, _ in calls if name == "operator"}
    assert {"motionclone.check_backend", "motionclone.start_backend", "motionclone.stop_backend"} <= operators


def test_the_serve_command_carries_the_preferences(tmp_path):
    settings = local_backend.LocalSettings(
        environment="",
        results_dir=tmp_path,
        preset="sd15-animatediff-v3",
        device="cuda",
        dtype="float16",
        base="/weights/sd15",
        motion_adapter="/weights/adapter",
    )
    command = local_backend.serve_command(Path("/env/bin/motionclone"), settings, parent_pid=4242)
    assert command[:4] == ["/env/bin/motionclone", "serve", "--port", "0"]
    text = " ".join(command)
    for part in (
        f"--state-file {tmp_path / 'backend.json'}",
        f"--results-dir {tmp_path}",
        "--preset sd15-animatediff-v3",
        "--parent-pid 4242",
        "--device cuda",
        "--dtype float16",
        "--base /weights/sd15",
        "--motion-adapter /weights/adapter",
    ):
        assert part in text
    assert "--checkpoint" not in command
    # Keep Running: the backend must outlive Blender, so it does not watch Blender's pid.
    keeping = dataclasses.replace(settings, keep_running=True)
    assert "--parent-pid" not in local_backend.serve_command(Path("motionclone"), keeping, parent_pid=4242)
    # The weight folders stay in the preferences when the built-in model is chosen, which refuses them.
    built_in = local_backend.serve_command(Path("motionclone"), dataclasses.replace(settings, preset="blocks"), 4242)
    assert "--preset" in built_in and "blocks" in built_in and "--device" in built_in
    assert not {"--base", "--motion-adapter", "--checkpoint"} & set(built_in)


# ---- backends that fail or take their time (fake programs) -----------------------------------------------------------
def test_a_backend_that_exits_at_once_is_reported_with_its_log_and_its_job_fails(local_addon, tmp_path):
    settings = generate_with_fake_backend(
        local_addon,
        tmp_path,
        "print('Loading ...', flush=True)\n"
        "print('Error: cannot bind tcp://127.0.0.1:5555: Address already in use', flush=True)\n"
        "sys.exit(1)",
    )
    job = settings.jobs[0]
    assert job.state == "SUBMITTED" and job.message == "Starting backend ..."
    assert pump_until(lambda: local().state == "crashed", 20), local().message
    message = local().message
    assert "exited before it was ready (exit code 1)" in message
    assert "Address already in use" in message and "Restart Backend" in message
    assert local().log_tail()[-1] == "Error: cannot bind tcp://127.0.0.1:5555: Address already in use"
    assert job.state == "FAILED" and "Address already in use" in job.message and "Generate again" in job.message

    # The panel shows the crash, the end of the log and a Restart button.
    calls = []
    from blender_addon import panels

    panels.draw_motionclone(RecordingLayout(calls), bpy.context)
    labels = [kwargs.get("text") for name, _, kwargs in calls if name == "label"]
    assert "Local backend crashed: its log ends as below" in labels
    assert "Error: cannot bind tcp://127.0.0.1:5555: Address already in use" in labels
    assert ("operator", ("motionclone.start_backend",), {"text": "Restart Backend", "icon": "FILE_REFRESH"}) in calls


def test_the_backend_writes_its_log_in_utf8_as_the_add_on_reads_it(local_addon, tmp_path):
    generate_with_fake_backend(
        local_addon, tmp_path, "print(f'UTF-8 mode {sys.flags.utf8_mode}: caf\\u00e9', flush=True)\nsys.exit(1)"
    )
    assert pump_until(lambda: local().state == "crashed", 20), local().message
    assert local().log_tail()[-1] == "UTF-8 mode 1: caf\u00e9"


def test_a_job_waits_while_the_backend_starts_and_loads_its_model(local_addon, tmp_path):
    """The job says "Starting backend", then "Loading model" once the backend names its endpoint; Stop ends the
    wait with a clear failure. The fake program records the command line it was started with."""
    arguments = tmp_path / "arguments.json"
    settings = generate_with_fake_backend(
        local_addon,
        tmp_path,
        f"open({str(arguments)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "time.sleep(1.0)\n"
        f"print('MotionClone backend starting on tcp://127.0.0.1:{free_port()}', flush=True)\n"
        "time.sleep(60)",
    )
    job = settings.jobs[0]
    assert job.message == "Starting backend ..." and local().state == "starting"
    assert pump_until(lambda: local().state == "loading", 20), local().message
    assert job.state == "SUBMITTED" and job.message == "Loading model (tiny) ..."
    assert local().status_line().startswith("Loading model (tiny, ")

    command = json.loads(arguments.read_text())
    results = Path(local_addon.local_results_dir)
    assert command[:3] == ["serve", "--port", "0"]
    assert command[command.index("--parent-pid") + 1] == str(os.getpid())
    assert command[command.index("--state-file") + 1] == str(results / "backend.json")
    assert command[command.index("--results-dir") + 1] == str(results)
    assert command[command.index("--preset") + 1] == "tiny" and command[command.index("--device") + 1] == "cpu"

    assert bpy.ops.motionclone.stop_backend() == {"FINISHED"}
    assert pump_until(lambda: local().state == "stopped", 20), local().message
    assert job.state == "FAILED" and "never accepted this job" in job.message


def two_held_jobs(local_addon, tmp_path: Path, ready_after_s: float):
    """Press Generate twice while a fake local backend starts, which listens after `ready_after_s` seconds: both
    jobs wait for it. Returns the two jobs."""
    settings = generate_with_fake_backend(
        local_addon,
        tmp_path,
        f"time.sleep({ready_after_s})\n"
        f"print('MotionClone backend listening on tcp://127.0.0.1:{free_port()}', flush=True)\n"
        "time.sleep(60)",
    )
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    return settings.jobs[0], settings.jobs[1]


def test_a_held_job_the_client_refuses_fails_alone_and_the_others_are_still_sent(local_addon, tmp_path, monkeypatch):
    """Held while the backend starts, two jobs go out once it listens; the first is refused by the client (too large,
    say): it fails with the reason, and the second is still sent, not left waiting for good."""
    from blender_addon._protocol import client as protocol_client

    first, second = two_held_jobs(local_addon, tmp_path, ready_after_s=0.5)
    sent = []

    def submit(self, frames, params, **kwargs):
        if not sent:
            sent.append(None)
            raise ValueError("`frames`: a reference of shape [8, 64, 64, 3] makes a too large message.")
        sent.append(params["seed"])
        return "request-2"

    monkeypatch.setattr(protocol_client.Client, "submit", submit)
    assert pump_until(lambda: local().state == "ready", 20), local().message
    assert first.state == "FAILED" and first.message.startswith("Not sent: `frames`: a reference of shape")
    assert "Generate again" in first.message
    assert second.state == "SUBMITTED" and second.message == "Sent to the backend" and second.request_id == "request-2"
    assert sent == [None, second.seed]


def test_cancel_of_a_job_waiting_for_the_local_backend_keeps_it_from_being_sent(local_addon, tmp_path, monkeypatch):
    from blender_addon._protocol import client as protocol_client

    first, second = two_held_jobs(local_addon, tmp_path, ready_after_s=1.0)
    sent = []

    def submit(self, frames, params, **kwargs):
        sent.append(params["seed"])
        return f"request-{len(sent)}"

    monkeypatch.setattr(protocol_client.Client, "submit", submit)
    assert bpy.ops.motionclone.cancel(index=0) == {"FINISHED"}
    assert first.state == "CANCELLED" and "before the local backend was ready" in first.message
    assert pump_until(lambda: local().state == "ready", 20), local().message
    assert sent == [second.seed] and first.state == "CANCELLED"


def test_a_held_job_brought_back_by_undo_after_it_was_sent_is_still_followed(local_addon, tmp_path, monkeypatch):
    """Undo, revert or reopening can restore a job as it was while it waited for the local backend (its held id);
    it was sent since, so it must not be failed as "never sent"."""
    from blender_addon import session
    from blender_addon._protocol import client as protocol_client

    first, _ = two_held_jobs(local_addon, tmp_path, ready_after_s=0.5)
    held_id = first.request_id
    numbers = iter(range(1, 10))
    monkeypatch.setattr(protocol_client.Client, "submit", lambda self, *args, **kwargs: f"request-{next(numbers)}")
    assert pump_until(lambda: local().state == "ready", 20), local().message
    sent_id = first.request_id
    assert sent_id != held_id and first.state == "SUBMITTED"
    first.request_id = held_id  # what undo restores
    session.get_session().sent[sent_id] = "0123abcd"  # the backend accepted it meanwhile
    session.refetch_active_jobs(bpy.context)
    assert (first.request_id, first.job_id, first.state) == (sent_id, "0123abcd", "QUEUED"), first.message


def test_cancel_with_the_local_backend_down_says_so_and_starts_nothing(local_addon):
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    job = settings.jobs.add()
    job.state, job.job_id, job.prompt = "RUNNING", "0123abcd", "a fox"  # accepted before the backend went down
    settings.active_job = 0
    assert local().state == "stopped"
    assert bpy.ops.motionclone.cancel() == {"CANCELLED"}
    assert local().state == "stopped" and local().process is None  # no backend was started to cancel a job
    assert job.state == "RUNNING"


# ---- the real backend ------------------------------------------------------------------------------------------------
@needs_real_backend
def test_generate_starts_a_local_backend_and_the_result_reaches_the_sequencer(local_addon):
    assert bpy.ops.motionclone.check_backend() == {"FINISHED"}
    from blender_addon import session

    assert session.get_session().local_check[1] == "Presets: blocks, tiny, sd15-animatediff-v3"
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    job = settings.jobs[0]
    assert job.message == "Starting backend ..." and local().state == "starting"
    done, seen = pump_recording_states(lambda: job.state in ("DONE", "FAILED"), 180)
    assert done and job.state == "DONE", job.message
    # "starting" lasts until the backend's first line, which may already be there at the first pump
    assert [state for state in seen if state != "starting"][:2] == ["loading", "ready"], seen
    strip = compat.strips(scene.sequence_editor)[job.strip_name]
    assert strip["motionclone_job_id"] == job.job_id and len(list(Path(job.result_dir).glob("*.png"))) == 4
    state = json.loads((Path(local_addon.local_results_dir) / "backend.json").read_text())
    assert (state["pid"], state["endpoint"], state["preset"]) == (local().pid, local().endpoint, "tiny")
    assert local().message.startswith(f"Local backend ready at {local().endpoint}")


@needs_real_backend
def test_a_killed_backend_is_reported_and_a_restart_fetches_what_it_kept(local_addon, tmp_path):
    from blender_addon import session

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the results folder should be")
    local_addon.output_dir = str(blocked)  # the first result cannot be stored: the backend keeps it, unacknowledged
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    kept = settings.jobs[0]
    assert pump_until(lambda: kept.state in ("DONE", "FAILED"), 180), kept.message
    assert kept.state == "FAILED" and "could not be stored" in kept.message
    settings.steps = 300  # a second job still running when the backend dies
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    running = settings.jobs[1]
    assert pump_until(lambda: running.state == "RUNNING", 60), running.message

    first_pid = local().pid
    os.kill(first_pid, signal.SIGKILL)
    assert pump_until(lambda: local().state == "crashed", 20), local().message
    assert "exited while it was running (exit code -9)" in local().message
    assert any("listening on" in line for line in local().log_tail(20))
    assert session.get_session().client is None and session.get_session().connection.state == "unreachable"
    assert running.state == "RUNNING" and "Restart" in running.message

    local_addon.output_dir = str(tmp_path / "results")
    assert bpy.ops.motionclone.start_backend() == {"FINISHED"}  # Restart Backend
    assert pump_until(lambda: local().state == "ready", 120), local().message
    assert local().pid != first_pid
    # The job that ran at the crash was followed again: it ends (the backend dropped it) instead of waiting forever.
    assert pump_until(lambda: running.state not in ("QUEUED", "RUNNING"), 60), running.message
    assert running.state == "FAILED" and "stopped before this job finished" in running.message
    # The finished, unacknowledged result waited in the results folder: Fetch Result Again stores it now.
    assert bpy.ops.motionclone.fetch_again(index=0) == {"FINISHED"}
    assert pump_until(lambda: kept.state in ("DONE", "FAILED"), 60), kept.message
    assert kept.state == "DONE", kept.message
    assert len(list(Path(kept.result_dir).glob("*.png"))) == 4


# The start of a script for another Blender process (its own bpy): the add-on enabled with a local backend of the
# environment argv[2] on the results folder argv[3]; argv[1] is the repository.
OTHER_BLENDER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import bpy  # first: it puts addon_utils on the path
import addon_utils


def fail(error):
    raise error


addon_utils.enable("blender_addon", default_set=True, handle_error=fail)
preferences = bpy.context.preferences.addons["blender_addon"].preferences
preferences.backend_mode, preferences.local_environment = "LOCAL", sys.argv[2]
preferences.local_preset, preferences.local_device, preferences.local_results_dir = "tiny", "cpu", sys.argv[3]
from blender_addon import event_pump, session


def pump_until(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        event_pump.pump()
        time.sleep(0.05)
"""

SECOND_BLENDER = (
    OTHER_BLENDER
    + """
assert bpy.ops.motionclone.start_backend() == {"FINISHED"}
pump_until(lambda: session.get_session().connection.state == "connected", 60)
local = session.get_session().local
found = {"state": local.state, "pid": local.pid, "endpoint": local.endpoint, "message": local.message}
print("RESULT", json.dumps({**found, "connection": session.get_session().connection.state}), flush=True)
"""
)


@needs_real_backend
@pytest.mark.skipif(not Path("/proc/self").exists(), reason="lists processes from Linux's /proc")
def test_a_second_blender_process_uses_the_running_backend_and_leaves_it_running(local_addon, tmp_path):
    """With default preferences (no Keep Running): the second Blender uses the first one's backend and, when it quits,
    leaves it to the first, which started it and still runs."""
    assert bpy.ops.motionclone.start_backend() == {"FINISHED"}
    assert pump_until(lambda: local().state == "ready", 120), local().message
    pid, endpoint = local().pid, local().endpoint
    results = tmp_path / "backend"
    before = backends_on(results)
    try:
        second = run_other_blender(SECOND_BLENDER, results)
        assert set(backends_on(results)) == set(before) == {pid}  # nothing was started, nothing was stopped
    finally:
        for extra in set(backends_on(results)) - {pid}:
            os.kill(extra, signal.SIGKILL)
    assert (second["state"], second["pid"], second["endpoint"]) == ("ready", pid, endpoint), second
    assert second["connection"] == "connected" and second["message"].startswith("Found the backend left running")
    assert "another Blender started it" in second["message"]
    assert local_backend.pid_alive(pid) and local().state == "ready"


def run_other_blender(script: str, results: Path) -> dict:
    """Run `script` in another Python with bpy (this one's) and return the JSON it printed after "RESULT"."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), str(backend_environment()), str(results)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


QUITTING_BLENDER = (
    OTHER_BLENDER
    + """
assert bpy.ops.motionclone.start_backend() == {"FINISHED"}
pump_until(lambda: session.get_session().local.state == "ready", 120)
local = session.get_session().local
print("RESULT", json.dumps({"state": local.state, "pid": local.pid}), flush=True)
"""
)  # and then this Blender quits, the add-on still enabled


@needs_real_backend
def test_quitting_blender_stops_the_backend_it_started(tmp_path):
    results = tmp_path / "backend"
    started = run_other_blender(QUITTING_BLENDER, results)
    assert started["state"] == "ready" and started["pid"]
    # Stopped by the add-on as Blender quit, not later by the backend noticing its parent is gone (--parent-pid).
    assert not local_backend.pid_alive(started["pid"])
    assert "--parent-pid" not in (results / local_backend.LOG_FILE).read_text()


def backends_on(results: Path) -> list[int]:
    """The pids of the `motionclone serve` processes running now on the results folder `results` (from /proc)."""
    marker = str(results).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if entry.name.isdigit() and b"serve" in command and marker in command:
            pids.append(int(entry.name))
    return pids


@needs_real_backend
def test_keep_running_outlives_the_add_on_and_the_next_blender_reuses_it(local_addon, tmp_path):
    local_addon.keep_running = True
    assert bpy.ops.motionclone.start_backend() == {"FINISHED"}
    assert pump_until(lambda: local().state == "ready", 120), local().message
    pid, endpoint = local().pid, local().endpoint

    disable_addon()  # Keep Running: the backend stays
    assert local_backend.pid_alive(pid)
    # The next Blender: a fresh add-on and session, preferences set again, the state file still there.
    preferences = enable_addon()
    use_local_backend(preferences, tmp_path, backend_environment())
    assert local().state == "stopped"
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    assert (local().state, local().pid, local().endpoint) == ("ready", pid, endpoint)  # found, not started again
    assert local().message.startswith(f"Found the backend left running at {endpoint}")
    job = settings.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120), job.message
    assert job.state == "DONE", job.message

    preferences.keep_running = False
    disable_addon()  # without Keep Running, disabling the add-on stops it
    deadline = time.monotonic() + 15
    while local_backend.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not local_backend.pid_alive(pid)
