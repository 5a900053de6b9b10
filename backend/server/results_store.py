"""Finished results on disk, so they survive a disconnect or a server restart until acknowledged. No bpy.

Layout: <results_dir>/<job_id>/frames.npy (uint8, no pickle) and result.json (fps, metadata, finish time, the
frames' SHA-256). Each result is written into a temporary folder and renamed into place, so a crash of the server
never leaves half a result; one whose files cannot be parsed or whose frames do not match their checksum (cut short or
zeroed by a power cut, a failing disk) is named as such when fetched, and deleted. The server reads and writes them on
its disk thread (disk_thread.py).
"""

import contextlib
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
PARTIAL_PATTERN = re.compile(r"^\.[0-9a-f]{32}\.partial$")  # a result being written, or left by a crash


class DamagedResult(Exception):
    """A stored result whose files cannot be read."""


@dataclass
class StoredResult:
    job_id: str
    frames: np.ndarray
    fps: float
    metadata: dict[str, Any]


def frames_digest(frames: np.ndarray) -> str:
    """SHA-256 of the frames' bytes (hashlib releases the GIL for them)."""
    return hashlib.sha256(np.ascontiguousarray(frames).data).hexdigest()


class ResultsStore:
    """Results by job id in a folder, with a retention time."""

    def __init__(self, directory: Path, retention_s: float) -> None:
        self.directory = Path(directory)
        self.retention_s = retention_s
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, job_id: str, frames: np.ndarray, fps: float, metadata: dict[str, Any]) -> None:
        temporary = self.directory / f".{job_id}.partial"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            temporary.mkdir()
            # Not fsynced: the client gets its result once it is stored, and forcing hundreds of MB to a slow disk
            # would keep it waiting seconds more. What a power cut leaves (a result cut short, or zeroed blocks on
            # some file systems) `load` finds by the checksum.
            frames = np.ascontiguousarray(frames)
            np.save(temporary / "frames.npy", frames, allow_pickle=False)
            record = {
                "fps": fps,
                "metadata": metadata,
                "finished_at": time.time(),
                "frames_sha256": frames_digest(frames),
            }
            (temporary / "result.json").write_text(json.dumps(record, default=str), encoding="utf-8")
            temporary.rename(self.directory / job_id)
        except BaseException:  # a full disk, say: leave no half-written folder behind
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def has(self, job_id: str) -> bool:
        return bool(JOB_ID_PATTERN.match(job_id)) and (self.directory / job_id / "result.json").is_file()

    def load(self, job_id: str) -> StoredResult | None:
        """The stored result, or None when there is none.

        Raises:
            DamagedResult: its files cannot be read; when their bytes are wrong (a failing disk, a power cut) the
                result is deleted, when the disk cannot be read now it is kept.
        """
        if not self.has(job_id):
            return None
        folder = self.directory / job_id
        try:
            record = json.loads((folder / "result.json").read_text(encoding="utf-8"))
            frames = np.load(folder / "frames.npy", allow_pickle=False)
            if (
                "frames_sha256" in record and frames_digest(frames) != record["frames_sha256"]
            ):  # older results have none
                raise ValueError("its frames do not match their checksum")
            return StoredResult(job_id, frames, float(record["fps"]), record["metadata"])
        except (ValueError, KeyError, TypeError, EOFError) as error:  # JSONDecodeError is a ValueError
            self.delete(job_id)  # its bytes are wrong: every fetch would fail the same way until it expired
            raise DamagedResult(f"The stored result of job {job_id} could not be read ({error})") from error
        except FileNotFoundError as error:  # acknowledged or expired while it was read
            if not self.has(job_id):
                return None
            raise DamagedResult(f"The stored result of job {job_id} could not be read now ({error})") from error
        except OSError as error:  # the disk, or too many open files: perhaps passing, so the result stays
            raise DamagedResult(f"The stored result of job {job_id} could not be read now ({error})") from error

    def delete(self, job_id: str) -> bool:
        if not self.has(job_id):
            return False
        # The record first: a delete cut short leaves frames without a record, which `has` does not count.
        (self.directory / job_id / "result.json").unlink(missing_ok=True)
        shutil.rmtree(self.directory / job_id, ignore_errors=True)
        return True

    def purge_expired(self, now: float | None = None) -> list[str]:
        """Delete results older than the retention time, and folders that a crash left half-written that long ago;
        returns the job ids of the results."""
        now = time.time() if now is None else now
        expired = []
        for folder in self.directory.iterdir():
            with contextlib.suppress(FileNotFoundError):  # renamed or deleted meanwhile (the writer, an ack)
                self._purge_if_expired(folder, now, expired)
        return expired

    def _purge_if_expired(self, folder: Path, now: float, expired: list[str]) -> None:
        """Delete `folder` when it is a result past the retention time (its id goes to `expired`), or what a crash
        or a cut-short delete left that long ago."""
        if PARTIAL_PATTERN.match(folder.name) and folder.is_dir():
            if now - folder.stat().st_mtime > self.retention_s:
                shutil.rmtree(folder, ignore_errors=True)
            return
        if not (folder.is_dir() and JOB_ID_PATTERN.match(folder.name)):
            return
        record_path = folder / "result.json"
        if not record_path.is_file():  # a delete cut short: frames without a record
            if now - folder.stat().st_mtime > self.retention_s:
                shutil.rmtree(folder, ignore_errors=True)
            return
        if now - record_path.stat().st_mtime > self.retention_s:
            shutil.rmtree(folder, ignore_errors=True)
            expired.append(folder.name)
