"""Jobs and the FIFO queue. Touched only by the server's socket thread, except `cancel_requested`. No bpy."""

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ...protocol import stages
from ..engine import MotionCloneParams
from ..engine.sparsectrl import SparseCondition


@dataclass(eq=False)
class Job:
    """One submitted job.

    Attributes:
        job_id: random 128-bit hex; knowing it is what lets a client fetch the result.
        identity: ZeroMQ routing id of the connection that receives this job's messages (changes on Fetch).
        params: validated parameters.
        reference: the reference frames (F, H, W, 3) uint8.
        reference_fps: frame rate of the reference.
        preset: model preset that runs it.
        sequence: order of acceptance on this server (FIFO means jobs start in this order).
        condition: SparseCtrl condition images at the job's size, or None for text-to-video.
        state: queued, running, done, failed or cancelled.
        cancel_requested: set from the socket thread, read by the worker between steps.
    """

    identity: bytes
    params: MotionCloneParams
    reference: np.ndarray
    reference_fps: float
    preset: str
    sequence: int = 0
    condition: SparseCondition | None = None
    job_id: str = field(default_factory=lambda: secrets.token_hex(16))
    state: str = stages.QUEUED
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)


class JobQueue:
    """First in, first out. Position 0 is the job that runs next."""

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def push(self, job: Job) -> int:
        """Append; returns the job's position."""
        self._jobs.append(job)
        return len(self._jobs) - 1

    def pop(self) -> Job | None:
        return self._jobs.popleft() if self._jobs else None

    def remove(self, job: Job) -> bool:
        try:
            self._jobs.remove(job)
        except ValueError:
            return False
        return True

    def position(self, job: Job) -> int | None:
        try:
            return self._jobs.index(job)
        except ValueError:
            return None

    def __iter__(self):
        return iter(list(self._jobs))
