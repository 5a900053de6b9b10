"""Real backend processes on free loopback ports, for the server and add-on tests."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from motionclone.backend.samples import make_moving_square_clip

START_TIMEOUT_S = 120


class ServerProcess:
    """`motionclone serve` in a child process; `endpoint` is known once it printed its listening line."""

    def __init__(self, results_dir: Path, bind: str = "tcp://127.0.0.1:*", extra: tuple[str, ...] = ()) -> None:
        self.results_dir = results_dir
        self.bind = bind
        self.extra = extra
        self.process: subprocess.Popen | None = None
        self.endpoint: str | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []

    def start(self) -> "ServerProcess":
        command = [
            sys.executable,
            "-m",
            "motionclone.backend",
            "serve",
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--bind",
            self.bind,
            "--results-dir",
            str(self.results_dir),
            "--preview-every",
            "2",
            *self.extra,
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if "listening on " in line:
                self.endpoint = line.split("listening on ")[1].split()[0]
                return self
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def start_server(tmp_path):
    started: list[ServerProcess] = []

    def start(results_dir: Path | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(results_dir or tmp_path / "results", **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def reference_frames():
    return make_moving_square_clip(num_frames=12, height=64, width=64)


def job_params(**changes):
    values = {
        "prompt": "a fox",
        "num_frames": 8,
        "height": 64,
        "width": 64,
        "num_inference_steps": 4,
        "guidance_steps": 2,
        "warm_up_steps": 1,
        "cool_down_steps": 1,
        "seed": 1,
    }
    values.update(changes)
    return values
