"""Stored results read on a thread of their own for `fetch`, and handed back to the socket thread in order. No bpy.

A result is up to hundreds of MB: read on the socket thread from a slow disk, it would hold every connection's
messages and heartbeats for seconds. Mapping the file instead would move the reads into ZeroMQ's I/O thread, where a
disk error kills the process (SIGBUS). So one reader thread reads, and the socket thread sends what it has read.
"""

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from .results_store import ResultsStore, StoredResult


@dataclass
class ResultLoad:
    """A fetch waiting for its result to be read."""

    identity: bytes
    request_id: str
    job_id: str
    future: "Future[StoredResult | None]"


class ResultLoads:
    """Reads stored results on one daemon thread (a read that hangs on a dead disk must not keep the process from
    exiting); the socket thread takes the finished reads, oldest first."""

    def __init__(self, results: ResultsStore) -> None:
        self.results = results
        self._requests: queue.Queue[ResultLoad | None] = queue.Queue()
        self._waiting: list[ResultLoad] = []  # the socket thread's alone
        threading.Thread(target=self._read, name="motionclone-result-reader", daemon=True).start()

    def start(self, identity: bytes, request_id: str, job_id: str) -> None:
        load = ResultLoad(identity, request_id, job_id, Future())
        self._waiting.append(load)
        self._requests.put(load)

    def pending(self, identity: bytes, job_id: str) -> int:
        """Reads of `job_id` for `identity` not yet taken: each becomes a copy in the send queue."""
        return sum(1 for load in self._waiting if (load.identity, load.job_id) == (identity, job_id))

    def take_finished(self) -> list[ResultLoad]:
        """The reads that are done, in the order they were started, up to the first that is not."""
        finished = []
        while self._waiting and self._waiting[0].future.done():
            finished.append(self._waiting.pop(0))
        return finished

    def stop(self) -> list[ResultLoad]:
        """End the reader; returns the fetches still waiting, which get no result."""
        self._requests.put(None)
        waiting, self._waiting = self._waiting, []
        return waiting

    def _read(self) -> None:
        while (load := self._requests.get()) is not None:
            if not load.future.set_running_or_notify_cancel():
                continue
            try:
                load.future.set_result(self.results.load(load.job_id))
            except BaseException as error:  # handed to the socket thread, which answers the fetch with it
                load.future.set_exception(error)
