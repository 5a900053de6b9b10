"""Jobs and the fair queue (round robin between clients). No bpy.

Touched only by the server's socket thread, except `cancel_requested`.
"""

import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...protocol import stages
from ..engine import MotionCloneParams
from ..engine.sparsectrl import SparseCondition


def job_bytes(reference: np.ndarray, condition: SparseCondition | None) -> int:
    """The frames a job holds while it waits: its reference, and its condition images."""
    return reference.nbytes + (0 if condition is None else condition.images.nbytes)


@dataclass(eq=False)
class Job:
    """One submitted job.

    Attributes:
        job_id: random 128-bit hex; knowing it is what lets a client fetch the result.
        identity: ZeroMQ routing id of the connection that receives this job's messages (changes on Fetch).
        client: who submitted it, for the queue's fairness: the CurveZMQ key when the server uses keys, else the
            routing id of the submitting connection (b"" when unknown: all such jobs count as one client).
        params: validated parameters.
        reference: the reference frames (F, H, W, 3) uint8.
        reference_fps: frame rate of the reference.
        preset: model preset that runs it.
        sequence: order of acceptance on this server.
        condition: SparseCtrl condition images at the job's size, or None for text-to-video.
        reference_sampling: how the client took the reference from its own clip (Submit), for the metadata.
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
    client: bytes = b""
    reference_sampling: dict[str, Any] | None = None
    job_id: str = field(default_factory=lambda: secrets.token_hex(16))
    state: str = stages.QUEUED
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)


class JobQueue:
    """Round robin between clients, first in first out within a client. Position 0 is the job that runs next.

    One client's ten jobs must not block everyone else: the next job is the oldest queued job of the client that was
    served least recently (a client never served yet goes first, in order of its first queued job). The whole order is
    computed by the same rule `pop` follows, so the positions in `Queued` messages are the real order.
    """

    # Clients remembered for fairness after their last job left the queue; beyond this the longest-served are dropped.
    MAX_REMEMBERED_CLIENTS = 1024

    def __init__(self) -> None:
        self._jobs: dict[bytes, deque[Job]] = {}  # per client, oldest first
        self._pushed: dict[int, int] = {}  # id(job) -> push counter: FIFO within a client and ties between clients
        self._last_served: dict[bytes, int] = {}
        self._counter = 0

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._jobs.values())

    def push(self, job: Job) -> int:
        """Queue `job` behind its client's earlier jobs; returns its position."""
        self._counter += 1
        self._pushed[id(job)] = self._counter
        self._jobs.setdefault(job.client, deque()).append(job)
        return self.position(job)  # type: ignore[return-value]

    def pop(self) -> Job | None:
        if not self._jobs:
            return None
        client = min(self._jobs, key=lambda key: self._turn(key, self._last_served))
        job = self._take(client)
        self._counter += 1
        self._last_served[client] = self._counter
        self._forget_old_clients()
        return job

    def remove(self, job: Job) -> bool:
        jobs = self._jobs.get(job.client)
        if jobs is None or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self._jobs[job.client]
        del self._pushed[id(job)]
        return True

    def position(self, job: Job) -> int | None:
        try:
            return self.order().index(job)
        except ValueError:
            return None

    def order(self) -> list[Job]:
        """All queued jobs in the order `pop` will return them (if nothing is pushed meanwhile)."""
        pending = {client: list(jobs) for client, jobs in self._jobs.items()}
        last_served = dict(self._last_served)
        heads = dict.fromkeys(pending, 0)
        order: list[Job] = []
        counter = self._counter
        while pending:
            client = min(
                pending, key=lambda key: (last_served.get(key, -1), self._pushed[id(pending[key][heads[key]])])
            )
            order.append(pending[client][heads[client]])
            heads[client] += 1
            if heads[client] == len(pending[client]):
                del pending[client]
            counter += 1
            last_served[client] = counter
        return order

    def __iter__(self) -> Iterator[Job]:
        return iter(self.order())

    def _turn(self, client: bytes, last_served: dict[bytes, int]) -> tuple[int, int]:
        """Sort key: least recently served client first, then the one whose next job came first."""
        return last_served.get(client, -1), self._pushed[id(self._jobs[client][0])]

    def _take(self, client: bytes) -> Job:
        jobs = self._jobs[client]
        job = jobs.popleft()
        if not jobs:
            del self._jobs[client]
        del self._pushed[id(job)]
        return job

    def _forget_old_clients(self) -> None:
        excess = len(self._last_served) - self.MAX_REMEMBERED_CLIENTS
        for client in sorted(self._last_served, key=self._last_served.__getitem__)[: max(excess, 0)]:
            if client not in self._jobs:
                del self._last_served[client]
