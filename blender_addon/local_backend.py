"""The local backend: find, check, start, watch and stop a `motionclone serve` child process. Stdlib only: no bpy,
no torch, nothing from the backend package.

The add-on's pump calls `LocalBackend.poll()`, which reads the backend's log file from where it stopped and never
waits. Only `check_environment` (the preferences' Check button, a few seconds) and `stop(wait=...)` on quit block.

Life of a backend this module starts:

    start()  -> "starting"   the process runs; Python imports torch (seconds)
    log line "MotionClone backend starting on ENDPOINT"   -> "loading"  (the endpoint is known; the model loads)
    log line "MotionClone backend listening on ENDPOINT"  -> "ready"    (it answers jobs)
    the process exits and nobody asked it to              -> "crashed"  (with the last lines of its log)
    stop()   -> "stopping" -> "stopped"

A backend that an earlier Blender left running (with Keep Running) is found through the state file it writes,
`<results>/backend.json`, and adopted (`adopt`) instead of starting a second one on the same results folder.
"""

import collections
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SD15_PRESET = "sd15-animatediff-v3"
PRESETS = ("blocks", "tiny", SD15_PRESET)
STATE_FILE = "backend.json"
LOG_FILE = "backend.log"
PREVIOUS_LOG_FILE = "backend.previous.log"
STARTING_MARKER = "MotionClone backend starting on "
LISTENING_MARKER = "MotionClone backend listening on "
INFO_TIMEOUT_S = 60.0  # `motionclone info` imports torch: seconds on a cold disk
STOP_GRACE_S = 10.0  # after Stop, how long the backend gets to shut down cleanly before it is killed
TAIL_LINES = 200
LOG_READ_LIMIT = 64 * 1024  # of an adopted backend's log, only the end is read
RUNNING_STATES = ("starting", "loading", "ready", "stopping")

# Where a virtual environment keeps its console scripts.
EXECUTABLE_IN_ENVIRONMENT = Path("Scripts", "motionclone.exe") if os.name == "nt" else Path("bin", "motionclone")


class LocalBackendError(RuntimeError):
    """The local backend cannot be used as set; the message says what was expected and what to do."""


@dataclass(frozen=True)
class LocalSettings:
    """A plain copy of the add-on preferences for the local backend (never the preferences object itself, which
    may be freed while a backend still runs).

    Attributes:
        environment: the backend's environment folder (holding bin/motionclone) or the `motionclone` executable.
        results_dir: the backend's results folder; its log and state file live there too.
        preset: model preset passed as `--preset`.
        device: "" (the backend picks: CUDA when available), "cpu" or "cuda".
        dtype: "" (the preset's default), "float32", "float16" or "bfloat16".
        base, motion_adapter, checkpoint: weight folders and file for `sd15-animatediff-v3`; "" leaves them out.
        keep_running: the backend outlives Blender (no `--parent-pid`) and is not stopped when the add-on is.
    """

    environment: str
    results_dir: Path
    preset: str = "blocks"
    device: str = ""
    dtype: str = ""
    base: str = ""
    motion_adapter: str = ""
    checkpoint: str = ""
    keep_running: bool = False


# ---- the environment -------------------------------------------------------------------------------------------------
def find_executable(environment: str) -> Path:
    """The `motionclone` executable of `environment` (its environment folder, or the executable itself).

    Raises:
        LocalBackendError: nothing usable there; the message says what was expected where.
    """
    if not environment.strip():
        raise LocalBackendError(
            "No backend environment is set: in the add-on preferences set Backend Environment to the folder the "
            f"MotionClone backend was installed into (it holds {EXECUTABLE_IN_ENVIRONMENT})."
        )
    path = Path(environment).expanduser()
    if path.is_dir():
        executable = path / EXECUTABLE_IN_ENVIRONMENT
        if not executable.is_file():
            raise LocalBackendError(
                f"{path} holds no {EXECUTABLE_IN_ENVIRONMENT}: expected {executable}. Set Backend Environment to the "
                "folder of the Python environment the backend was installed into (pip install of the MotionClone "
                "repository, or its scripts/bootstrap.sh), or to its motionclone program."
            )
        path = executable
    elif not path.exists():
        raise LocalBackendError(
            f"The backend environment {path} does not exist: set Backend Environment to the folder the backend was "
            f"installed into (expected {path / EXECUTABLE_IN_ENVIRONMENT} inside it)."
        )
    if os.name != "nt" and not os.access(path, os.X_OK):
        raise LocalBackendError(f"{path} is not executable: expected the `motionclone` program (chmod +x it).")
    return path


def check_environment(environment: str, timeout: float = INFO_TIMEOUT_S) -> dict:
    """Run `<exe> info` and return what it printed (one JSON object: version, presets, python, torch, cuda).

    Raises:
        LocalBackendError: no executable, or it failed, timed out or printed no JSON; the message says what to do.
    """
    executable = find_executable(environment)
    try:
        done = subprocess.run(
            [str(executable), "info"], capture_output=True, text=True, timeout=timeout, **hidden_window()
        )
    except subprocess.TimeoutExpired as error:
        message = f"`{executable} info` gave no answer within {timeout:g} s: run it in a terminal to see why."
        raise LocalBackendError(message) from error
    except OSError as error:
        raise LocalBackendError(f"Cannot run {executable}: {error}. Is it the motionclone program?") from error
    output = (done.stdout or "").strip()
    if done.returncode != 0:
        last = last_lines(f"{done.stdout}\n{done.stderr}", 6)
        raise LocalBackendError(
            f"`{executable.name} info` failed with exit code {done.returncode}: {last or 'no output'}. Reinstall the "
            "backend into that environment, or run the command in a terminal to see why."
        )
    try:
        # One JSON object, perhaps over several lines, perhaps after other output.
        info, _ = json.JSONDecoder().raw_decode(output[output.index("{") :])
    except (json.JSONDecodeError, ValueError) as error:
        raise LocalBackendError(
            f"`{executable.name} info` printed no backend information ({last_lines(output, 2) or 'nothing'}): the "
            "backend there is older than this add-on; install the MotionClone version of this add-on into it."
        ) from error
    if not isinstance(info, dict):
        raise LocalBackendError(f"`{executable.name} info` printed {type(info).__name__}, not an object: update it.")
    return info


def preset_names(info: dict) -> list[str]:
    """The preset names in `motionclone info`'s answer (entries are {"name": ...} objects)."""
    return [str(entry.get("name") if isinstance(entry, dict) else entry) for entry in info.get("presets") or []]


def describe_info(info: dict, preset: str = "") -> list[str]:
    """The Check button's lines about `motionclone info`'s answer: versions, the GPU, the presets, and whether
    `preset` is among them."""
    torch = info.get("torch") or f"not importable ({info.get('torch_error') or 'unknown error'})"
    gpu = f"CUDA on {info.get('cuda_device') or 'a GPU'}" if info.get("cuda_available") else "no CUDA: runs on the CPU"
    lines = [f"MotionClone backend {info.get('version', '?')} (Python {info.get('python', '?')}, torch {torch}, {gpu})"]
    names = preset_names(info)
    if names:
        lines.append(f"Presets: {', '.join(names)}")
    if preset and names and preset not in names:
        lines.append(f"This backend has no preset '{preset}': pick one of {', '.join(names)}.")
    if not info.get("torch"):
        lines.append("Reinstall the backend's environment: it cannot run models without torch.")
    return lines


def serve_command(executable: Path, settings: LocalSettings, parent_pid: int) -> list[str]:
    """The `motionclone serve` command line for `settings`, on a free loopback port (`--port 0`)."""
    results = Path(settings.results_dir)
    command = [
        str(executable), "serve", "--port", "0",
        "--state-file", str(results / STATE_FILE), "--results-dir", str(results), "--preset", settings.preset,
    ]  # fmt: skip
    if not settings.keep_running:
        command += ["--parent-pid", str(parent_pid)]  # the backend quits when Blender does, even when Blender crashes
    flags = [("--device", settings.device), ("--dtype", settings.dtype)]
    # The weight folders stay set while another model is chosen; only SD-1.5 reads them (blocks refuses them).
    if settings.preset == SD15_PRESET:
        flags += [
            ("--base", settings.base),
            ("--motion-adapter", settings.motion_adapter),
            ("--checkpoint", settings.checkpoint),
        ]
    for flag, value in flags:
        if value:
            command += [flag, value]
    return command


# ---- processes -------------------------------------------------------------------------------------------------------
def hidden_window() -> dict:
    """Popen options that keep a console window from opening on Windows; nothing elsewhere."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NO_WINDOW}
    return {}


def detached() -> dict:
    """Popen options that put the backend in its own session or process group, so that Ctrl+C in Blender's terminal
    does not stop it and Keep Running can outlive Blender."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (not a process this one started with Popen: use its poll())."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_pid_alive(pid)
    try:
        # A child of this process that exited stays a zombie, which still answers kill(pid, 0): reap it first.
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _windows_pid_alive(pid: int) -> bool:
    # os.kill on Windows would terminate the process; ask for its exit code instead.
    import ctypes

    still_active, query_limited_information = 259, 0x1000
    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def endpoint_accepts(endpoint: str, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to `endpoint` (tcp://HOST:PORT) is accepted: a quick sign a backend listens there.
    Loopback answers at once, accepted or refused."""
    try:
        parts = urlsplit(endpoint)
        address = (parts.hostname or "127.0.0.1", int(parts.port or 0))
    except ValueError:
        return False
    if parts.scheme != "tcp" or not address[1]:
        return False
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def read_state_file(results_dir: Path) -> dict | None:
    """The state file of a backend started on `results_dir`, or None when there is none or it is unreadable."""
    try:
        state = json.loads((Path(results_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int) or not state.get("endpoint"):
        return None
    return state


def last_lines(text: str, count: int) -> str:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


# ---- the backend -----------------------------------------------------------------------------------------------------
class LocalBackend:
    """One local `motionclone serve`: the one this add-on started, or one it adopted from an earlier Blender.

    Attributes (plain values, safe to read from draw code):
        state: "stopped", "starting", "loading", "ready", "stopping" or "crashed".
        endpoint: where it listens ("" until its log says).
        pid: its process id (0 when none).
        message: one line for the panel about the state; `tail` holds the log's last lines.
        settings: what it was started (or found) with.
        keep_running: leave it running when the add-on closes (the preference, kept current by its update).
        owner_pid: for an adopted backend, the Blender that started it (its `--parent-pid`); 0 when none or ours.
    """

    def __init__(self) -> None:
        self.state = "stopped"
        self.endpoint = ""
        self.pid = 0
        self.message = ""
        self.settings: LocalSettings | None = None
        self.keep_running = False
        self.owner_pid = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.process: subprocess.Popen | None = None  # None for an adopted backend: watched by pid
        self.log_path: Path | None = None
        self._log_offset = 0
        self._partial = ""
        self._started_at = 0.0
        self._stop_asked_at: float | None = None

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def adopted(self) -> bool:
        return self.running and self.process is None

    @property
    def borrowed(self) -> bool:
        """Adopted from another Blender that still runs: closing this add-on must not stop it under that one."""
        return self.adopted and self._owned_by_another_blender()

    def _owned_by_another_blender(self) -> bool:
        return self.owner_pid not in (0, os.getpid()) and pid_alive(self.owner_pid)

    # ---- starting ---------------------------------------------------------------------------------------------------
    def start(self, settings: LocalSettings) -> None:
        """Start `motionclone serve` as a child that writes to `<results>/backend.log`; returns at once.

        Raises:
            LocalBackendError: the environment is wrong, or the process cannot be started.
        """
        executable = find_executable(settings.environment)
        results = Path(settings.results_dir)
        try:
            results.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LocalBackendError(
                f"Cannot create the backend's results folder {results}: {error}. Pick another Backend Results folder."
            ) from error
        log_path, offset = self._fresh_log(results)
        command = serve_command(executable, settings, os.getpid())
        # Its log lines arrive as they are printed, in UTF-8 as the add-on reads them (a Windows Python writes a file
        # in the ANSI code page otherwise, and a path or prompt with accents would come back garbled).
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONUTF8": "1"}
        try:
            with open(log_path, "ab") as log:
                # The child gets its own copy of the log's handle; ours closes when this block ends.
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    **detached(),
                )
        except OSError as error:
            raise LocalBackendError(f"Cannot start {executable}: {error}. Check it with the Check button.") from error
        self._reset(settings, log_path, self.process.pid)
        self._log_offset = offset
        self._set("starting", "Starting backend ...")

    def _fresh_log(self, results: Path) -> tuple[Path, int]:
        """The log for this start and where its lines begin: a new, empty file, the last start's log kept as
        backend.previous.log; or, when another process still holds the old one open (Windows), its end."""
        log_path = results / LOG_FILE
        try:
            if log_path.exists():
                os.replace(log_path, results / PREVIOUS_LOG_FILE)
            log_path.write_bytes(b"")
        except OSError:
            pass
        try:
            return log_path, log_path.stat().st_size
        except OSError:
            return log_path, 0

    def adopt(self, settings: LocalSettings) -> bool:
        """Take over a backend an earlier Blender left running on `settings.results_dir`, if its state file names a
        live process whose endpoint accepts connections. Returns whether one was adopted."""
        state = read_state_file(settings.results_dir)
        if state is None or not pid_alive(state["pid"]) or not endpoint_accepts(str(state["endpoint"])):
            return False
        log_path = Path(settings.results_dir) / LOG_FILE
        self.process = None
        self._reset(settings, log_path, state["pid"])
        self.owner_pid = int(state.get("parent_pid") or 0)
        self._skip_to_log_end()
        self.endpoint = str(state["endpoint"])
        found = f"{state.get('preset', '?')} on {state.get('device', '?')}"
        note = ""
        if state.get("preset") not in (None, settings.preset):
            note = f"; the preferences ask for {settings.preset}: Stop and Start it to switch"
        if self._owned_by_another_blender():
            note += "; another Blender started it and stops it when that Blender quits"
        self._set("ready", f"Found the backend left running at {self.endpoint} ({found}){note}")
        return True

    def _reset(self, settings: LocalSettings, log_path: Path, pid: int) -> None:
        self.settings = settings
        self.keep_running = settings.keep_running
        self.owner_pid = 0
        self.log_path = log_path
        self.pid = pid
        self.endpoint = ""
        self.tail.clear()
        self._log_offset = 0
        self._partial = ""
        self._started_at = time.monotonic()
        self._stop_asked_at = None

    def _skip_to_log_end(self) -> None:
        """Keep only the end of an adopted backend's log in the tail, and read on from there."""
        try:
            size = self.log_path.stat().st_size
        except OSError:
            return
        self._log_offset = max(0, size - LOG_READ_LIMIT)
        self._read_log()

    def ensure_running(self, settings: LocalSettings) -> None:
        """Adopt the backend an earlier Blender left running on the same results folder, else start one; nothing
        when one runs already.

        Raises:
            LocalBackendError: as `start`.
        """
        if self.running:
            return
        if not self.adopt(settings):
            self.start(settings)

    # ---- watching ---------------------------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Read what the backend logged since the last call and notice its exit. Never waits. Returns whether the
        state changed."""
        before = self.state
        if not self.running:
            return False
        for line in self._read_log():
            self._on_log_line(line)
        exit_code = self._exit_code()
        if exit_code is not None:
            self._read_log()  # its last words
            self._on_exit(exit_code)
        elif self._stop_asked_at is not None and time.monotonic() - self._stop_asked_at > STOP_GRACE_S:
            self._kill()  # it did not shut down in time; the next poll sees it gone
        return self.state != before

    def _read_log(self) -> list[str]:
        if self.log_path is None:
            return []
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except OSError:
            return []
        self._log_offset += len(data)
        text = self._partial + data.decode("utf-8", errors="replace")
        *lines, self._partial = text.split("\n")  # the last piece may be a line still being written
        lines = [line.rstrip("\r") for line in lines]
        self.tail.extend(lines)
        return lines

    def _on_log_line(self, line: str) -> None:
        if STARTING_MARKER in line and self.state == "starting":
            self.endpoint = line.split(STARTING_MARKER, 1)[1].split()[0]
            self._set("loading", f"Loading model ({self.settings.preset}) ...")
        elif LISTENING_MARKER in line and self.state in ("starting", "loading"):
            self.endpoint = line.split(LISTENING_MARKER, 1)[1].split()[0]
            detail = line.split(self.endpoint, 1)[1].strip()
            self._set("ready", f"Local backend ready at {self.endpoint} {detail}".rstrip())

    def _exit_code(self) -> int | None:
        if self.process is not None:
            return self.process.poll()
        return None if pid_alive(self.pid) else -1  # an adopted process's exit code is its parent's to read

    def _on_exit(self, exit_code: int) -> None:
        asked = self._stop_asked_at is not None
        self.process = None
        if asked:
            self._set("stopped", "Local backend stopped")
            return
        code = "" if exit_code == -1 else f" (exit code {exit_code})"
        when = "while it was running" if self.state == "ready" else "before it was ready"
        ending = last_lines("\n".join(self.tail), 3) or "(nothing)"
        self._set(
            "crashed",
            f"The local backend exited {when}{code}. Its log ends: {ending}. Fix what it says (Check in the add-on "
            "preferences tests the environment), then press Restart Backend.",
        )

    def _set(self, state: str, message: str) -> None:
        self.state = state
        self.message = message

    def status_line(self) -> str:
        """One line for the panel: the state, with the time it has taken so far while it starts."""
        elapsed = time.monotonic() - self._started_at
        if self.state == "starting":
            return f"Starting backend ({elapsed:.0f} s)"
        if self.state == "loading":
            return f"Loading model ({self.settings.preset}, {elapsed:.0f} s)"
        if self.state == "crashed":
            return "Local backend crashed: its log ends as below"
        return self.message or "Local backend not started: Generate starts it"

    def log_tail(self, count: int = 8) -> list[str]:
        lines = [line for line in self.tail if line.strip()]
        return lines[-count:]

    # ---- stopping ---------------------------------------------------------------------------------------------------
    def stop(self, wait: float = 0.0) -> None:
        """Ask the backend to shut down (SIGTERM: it stops cleanly; the Windows equivalent ends it at once).

        Args:
            wait: seconds to wait for it to exit, killing it if it has not by then (on quit); 0 returns at once
                and leaves the watching to `poll()`, which kills it after STOP_GRACE_S.
        """
        if not self.running:
            return
        if self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
            self._signal(signal.SIGTERM)
            self._set("stopping", "Stopping the local backend ...")
        deadline = time.monotonic() + wait
        while wait > 0 and self._exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if wait > 0 and self._exit_code() is None:
            self._kill()
            time.sleep(0.1)
        self.poll()

    def _kill(self) -> None:
        self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))

    def _signal(self, signum: int) -> None:
        try:
            if self.process is not None:
                self.process.send_signal(signum)
            elif self.pid:
                os.kill(self.pid, signum)
        except (ProcessLookupError, PermissionError, OSError):
            pass  # it is gone already, which poll() reports
