"""The `serve --state-file` JSON file: where a running backend listens, so a later launcher can reuse it. No bpy.

Written atomically once the server listens (a reader never sees half a file), removed on a clean stop, but only while
it still names this process: a newer backend may have taken the same path over. After a crash the file stays behind;
readers check that `pid` still runs and that the endpoint answers before they trust it.

Contents (one JSON object):
    endpoint        the bound ZeroMQ endpoint, e.g. "tcp://127.0.0.1:40123"
    pid             the backend's process id
    server_version  the backend's version (as in its Welcome)
    preset          the loaded model preset
    device          the torch device the model runs on, e.g. "cpu" or "cuda:0"
    results_dir     absolute path of the results folder
    started_at      when it started listening, ISO 8601 in UTC, e.g. "2025-01-31T12:00:00+00:00"
    parent_pid      the `--parent-pid` it stops after (the Blender that started it), or null without one
"""

import contextlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import MotionCloneError


class StateFileError(MotionCloneError):
    """The state file could not be written."""


def state_record(
    endpoint: str, server_version: str, preset: str, device: str, results_dir: Path, parent_pid: int | None = None
) -> dict[str, Any]:
    """The state file's contents for this process, started now."""
    return {
        "endpoint": endpoint,
        "pid": os.getpid(),
        "server_version": server_version,
        "preset": preset,
        "device": device,
        "results_dir": str(Path(results_dir).resolve()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parent_pid": parent_pid,
    }


def write_state_file(path: Path, record: dict[str, Any]) -> None:
    """Write `record` to `path` atomically: a temporary file in the same folder, then `os.replace`.

    Raises:
        StateFileError: the folder cannot be created or written; names `--state-file` and the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(record, stream, indent=2)
                stream.write("\n")
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:
        raise StateFileError(
            f"`--state-file` {path} cannot be written ({error.strerror or error}); pass a path in a folder this user "
            "may write to, or leave the flag out."
        ) from error


def remove_state_file(path: Path, pid: int) -> bool:
    """Delete `path` if it still names process `pid`; True if it was removed. A missing or foreign file stays."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("pid") != pid:
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True
