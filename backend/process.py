"""A `motionclone serve` child process: start it on a free loopback port, read its endpoint, stop it. No bpy.

Used by the demo, the protocol benchmark and the tests, which all need a real backend next to them.
"""

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import MotionCloneError

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
READY_MARKER = "listening on "


class BackendStartError(MotionCloneError):
    """The backend process exited or did not announce its endpoint in time; the message holds its last output."""


class BackendProcess:
    """A running `motionclone serve`. `endpoint` is what it bound; `output()` is what it printed last."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.endpoint = ""
        self.lines: queue.Queue[str] = queue.Queue()
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        # Drain the pipe for the process's whole life, so the backend never blocks on a full pipe.
        threading.Thread(target=self._read, name="motionclone-backend-output", daemon=True).start()

    @classmethod
    def start(
        cls,
        results_dir: str | os.PathLike[str],
        preset: str = "tiny",
        device: str = "cpu",
        bind: str = "tcp://127.0.0.1:*",
        extra_args: Sequence[str] = (),
        timeout: float = START_TIMEOUT_S,
    ) -> "BackendProcess":
        """Start `python -m motionclone.backend serve ...` and wait for its "listening on" line.

        Raises:
            BackendStartError: the process exited, or gave no endpoint within `timeout` seconds.
        """
        # MOTIONCLONE_BACKEND_PYTHON: another interpreter with the ML stack (the add-on tests on Blender 4.2 run
        # from a virtual environment that has none).
        python = os.environ.get("MOTIONCLONE_BACKEND_PYTHON") or sys.executable
        command = [
            python, "-m", "motionclone.backend", "serve", "--preset", preset, "--device", device,
            "--bind", bind, "--results-dir", str(Path(results_dir)), *extra_args,
        ]  # fmt: skip
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
        )
        backend = cls(process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = backend.lines.get(timeout=0.5)
            except queue.Empty:
                if process.poll() is not None:
                    break
                continue
            if READY_MARKER in line:
                backend.endpoint = line.split(READY_MARKER, 1)[1].split()[0]
                return backend
        backend.kill()
        raise BackendStartError(f"The backend did not start (`{' '.join(command[2:])}`):\n{backend.output()}")

    def _read(self) -> None:
        assert self.process.stdout is not None  # started with stdout=PIPE
        for line in self.process.stdout:
            self.tail.append(line)
            self.lines.put(line)

    def output(self) -> str:
        return "".join(self.tail).rstrip()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the server shuts down cleanly) and wait; SIGKILL only if it does not exit in time."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the way a crash looks to clients."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
