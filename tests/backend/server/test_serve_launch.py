"""`motionclone serve` as a launcher (such as the Blender add-on) starts it: --port, the starting line, --parent-pid,
--state-file, and the messages when it cannot start. Real processes, real sockets, the tiny preset."""

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import zmq

from motionclone.backend import __version__
from motionclone.protocol.codec import decode, encode
from motionclone.protocol.messages import Hello, Welcome

CLI = [sys.executable, "-m", "motionclone.backend"]
STARTING = re.compile(r"^MotionClone backend starting on (tcp://127\.0\.0\.1:(\d+))$")
LINE_TIMEOUT_S = 120.0  # loading torch and the tiny model on a busy 2-core machine


class LaunchedServer:
    """`motionclone serve` with stdout read line by line (stderr kept apart, so "first line" means stdout's)."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [*CLI, "serve", "--preset", "tiny", "--device", "cpu", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)

    def next_line(self, timeout: float = LINE_TIMEOUT_S) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout} s; stderr:\n{''.join(self.stderr)}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


@pytest.fixture
def launch():
    started: list[LaunchedServer] = []

    def start(*args: str, cwd: Path | None = None) -> LaunchedServer:
        server = LaunchedServer(*args, cwd=cwd)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_port_0_prints_the_starting_line_first_and_a_hello_sent_during_model_loading_gets_its_welcome(launch, tmp_path):
    server = launch("--port", "0", "--results-dir", str(tmp_path / "results"))
    first = server.next_line()
    match = STARTING.match(first)
    assert match, f"first stdout line was {first!r}"
    endpoint, port = match.group(1), int(match.group(2))
    assert port > 0

    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(endpoint)
        dealer.send_multipart(encode(Hello(request_id="early", client="test")))
        # The Hello went out before the model was ready: the server had not said "listening" yet.
        loading_when_sent = server.lines.empty()
        assert server.next_line() == f"MotionClone backend listening on {endpoint} (tiny on cpu)"
        assert loading_when_sent, "the model loaded before the test could send its Hello; nothing was tested"
        assert dealer.poll(30_000), "no answer to a Hello sent while the model loaded"
        welcome, _ = decode(dealer.recv_multipart())
    finally:
        dealer.close(0)
        context.term()
    assert isinstance(welcome, Welcome)
    assert welcome.request_id == "early" and welcome.presets == ["tiny"]


def test_parent_pid_exit_stops_the_server_cleanly_and_removes_its_state_file(launch, tmp_path):
    helper = subprocess.Popen(["sleep", "30"])
    state_file = tmp_path / "state" / "backend.json"
    results = tmp_path / "results"
    try:
        server = launch(
            "--port", "0", "--results-dir", str(results),
            "--parent-pid", str(helper.pid), "--state-file", str(state_file),
        )  # fmt: skip
        endpoint = STARTING.match(server.next_line()).group(1)
        assert server.next_line().startswith(f"MotionClone backend listening on {endpoint}")
        state = json.loads(state_file.read_text())
        assert state["endpoint"] == endpoint
        assert state["pid"] == server.process.pid
        assert state["server_version"] == __version__
        assert (state["preset"], state["device"]) == ("tiny", "cpu")
        assert state["results_dir"] == str(results.resolve())
        assert datetime.fromisoformat(state["started_at"]).tzinfo is not None
        assert list(state_file.parent.iterdir()) == [state_file]  # no temporary file left behind
        assert server.process.poll() is None  # still serving while its parent runs
    finally:
        helper.kill()
        helper.wait()  # reaped, so the pid is really gone (a zombie still answers kill(pid, 0))
    gone_at = time.monotonic()
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - gone_at < 5.0
    assert server.next_line(timeout=5) == "MotionClone backend stopped."
    assert not state_file.exists()
    assert any("parent process" in line for line in server.stderr)


def test_port_together_with_bind_exits_2_and_says_to_choose_one(tmp_path):
    result = run_cli("serve", "--port", "5555", "--bind", "tcp://127.0.0.1:5556", "--results-dir", str(tmp_path))
    assert result.returncode == 2
    assert "`--port` cannot be combined with --bind" in result.stderr
    assert "not both" in result.stderr
    assert result.stdout == ""


def test_a_port_in_use_exits_with_a_message_naming_the_port_and_what_to_do(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--results-dir", str(tmp_path))
    assert result.returncode == 5
    assert f"port {port} is already in use" in result.stderr
    assert "--port 0" in result.stderr and "motionclone status" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # no starting line for a server that never listened


def test_a_parent_pid_that_is_not_running_is_refused_before_binding(tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()
    result = run_cli("serve", "--port", "0", "--parent-pid", str(finished.pid), "--results-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"`--parent-pid` {finished.pid} is not a running process" in result.stderr
    assert result.stdout == ""


def test_a_port_outside_the_tcp_range_is_refused(tmp_path):
    result = run_cli("serve", "--port", "70000", "--results-dir", str(tmp_path))
    assert result.returncode == 2
    assert "`--port` must be 0 to 65535, got 70000" in result.stderr


def test_state_file_of_a_server_that_cannot_write_it_stops_the_server_with_the_flag_named(launch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    server = launch("--port", "0", "--results-dir", str(tmp_path / "r"), "--state-file", str(blocker / "state.json"))
    assert STARTING.match(server.next_line())
    assert server.process.wait(timeout=LINE_TIMEOUT_S) == 5
    stderr = "".join(server.stderr)
    assert "`--state-file`" in stderr and str(blocker / "state.json") in stderr


def test_the_starting_line_needs_neither_torch_nor_diffusers(tmp_path):
    # The add-on waits for this line to learn the endpoint; it must not wait for the ML stack to import.
    code = (
        "import sys\n"
        "from motionclone.backend import cli\n"
        "seen = {}\n"
        "def record(config, args):\n"
        "    seen['torch'] = 'torch' in sys.modules\n"
        "    seen['diffusers'] = 'diffusers' in sys.modules\n"
        "    print('IMPORTED', seen, flush=True)\n"
        "    raise SystemExit(0)\n"
        "cli.config_with_model = record\n"
        f"cli.main(['serve', '--port', '0', '--results-dir', {str(tmp_path)!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert STARTING.match(lines[0]), result.stdout + result.stderr
    assert lines[1] == "IMPORTED {'torch': False, 'diffusers': False}"


def test_sigterm_removes_the_state_file_whose_results_dir_is_absolute(launch, tmp_path):
    # A launcher reads the state file from anywhere; a relative path would depend on the backend's working folder.
    state_file = tmp_path / "state.json"
    server = launch("--port", "0", "--results-dir", "relative-results", "--state-file", str(state_file), cwd=tmp_path)
    server.next_line()
    assert server.next_line().startswith("MotionClone backend listening on ")
    assert json.loads(state_file.read_text())["results_dir"] == str(tmp_path / "relative-results")
    server.process.terminate()  # SIGTERM: the clean stop
    assert server.process.wait(timeout=30) == 0
    assert not state_file.exists()


def test_a_state_file_taken_over_by_another_backend_is_left_alone(launch, tmp_path):
    state_file = tmp_path / "state.json"
    server = launch("--port", "0", "--results-dir", str(tmp_path / "r"), "--state-file", str(state_file))
    server.next_line()
    server.next_line()
    newer = {**json.loads(state_file.read_text()), "pid": server.process.pid + 1, "endpoint": "tcp://127.0.0.1:1"}
    state_file.write_text(json.dumps(newer))
    server.process.terminate()
    assert server.process.wait(timeout=30) == 0
    assert json.loads(state_file.read_text()) == newer
