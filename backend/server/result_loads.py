"""Stored results read on a thread of their own for `fetch`, and handed back to the socket thread in order. No bpy.

A result is up to hundreds of MB: read on the socket thread from a slow disk, it would hold every connection's
messages and heartbeats for seconds. Mapping the file instead would move the reads into ZeroMQ's I/O thread, where a
disk error kills the process (SIGBUS). So one reader thread reads, and the socket thread sends what it has read.
"""

from concurrent.futures import Future, ThreadPoolExecutor
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
    """Reads stored results on one thread; the socket thread takes the finished reads, oldest first."""

    def __init__(self, results: ResultsStore) -> None:
        self.results = results
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="motionclone-result-reader")
        self._waiting: list[ResultLoad] = []

    def start(self, identity: bytes, request_id: str, job_id: str) -> None:
        future = self._reader.submit(self.results.load, job_id)
        self._waiting.append(ResultLoad(identity, request_id, job_id, future))

    def pending(self, identity: bytes, job_id: str) -> int:
        """Reads of `job_id` for `identity` not yet taken: each becomes a copy in the send queue."""
        return sum(1 for load in self._waiting if (load.identity, load.job_id) == (identity, job_id))

    def take_finished(self) -> list[ResultLoad]:
        """The reads that are done, in the order they were started, up to the first that is not."""
        finished = []
        while self._waiting and self._waiting[0].future.done():
            finished.append(self._waiting.pop(0))
        return finished

    def stop(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)
        self._waiting.clear()
