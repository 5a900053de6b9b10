"""Finished jobs' results written on the disk thread, and handed back to the socket thread to send. No bpy.

A result is sent once it is stored, so a client that has it can always fetch it again (after a crash of Blender, say),
and a client that is gone finds it stored when it comes back.
"""

import concurrent.futures
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from .disk_thread import DiskThread, InOrder
from .jobs import Job
from .results_store import ResultsStore


@dataclass
class ResultSave:
    """A finished job whose result is being stored."""

    job: Job
    frames: np.ndarray
    fps: float
    metadata: dict[str, Any]
    future: "Future[None]"
    started_at: float  # time.monotonic()


class ResultSaves(InOrder[ResultSave]):
    """Stores results on `disk`; the socket thread takes the finished writes, oldest first."""

    def __init__(self, results: ResultsStore, disk: DiskThread) -> None:
        super().__init__(disk)
        self.results = results

    def start(self, job: Job, frames: np.ndarray, fps: float, metadata: dict[str, Any]) -> None:
        future = self.disk.submit(lambda: self.results.save(job.job_id, frames, fps, metadata))
        self._waiting.append(ResultSave(job, frames, fps, metadata, future, time.monotonic()))

    def take_finished_or_overdue(self, deadline_s: float) -> list[ResultSave]:
        """The writes that are done, oldest first, and those still running after `deadline_s` (a disk that hangs):
        their results are sent unstored rather than kept from their clients, and from memory, for good."""
        now = time.monotonic()
        taken = []
        while self._waiting and (self._waiting[0].future.done() or now - self._waiting[0].started_at > deadline_s):
            taken.append(self._waiting.pop(0))
        return taken

    def take_all(self, timeout_s: float) -> list[ResultSave]:
        """Every write, after waiting up to `timeout_s` for them to finish (a shutdown); some may not have."""
        concurrent.futures.wait([save.future for save in self._waiting], timeout=timeout_s)
        waiting, self._waiting = self._waiting, []
        return waiting
