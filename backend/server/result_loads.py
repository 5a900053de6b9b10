"""Stored results read on the disk thread for `fetch`, and handed back to the socket thread in order. No bpy."""

from concurrent.futures import Future
from dataclasses import dataclass

from .disk_thread import DiskThread, InOrder
from .results_store import ResultsStore, StoredResult


@dataclass
class ResultLoad:
    """A fetch waiting for its result to be read."""

    identity: bytes
    request_id: str
    job_id: str
    future: "Future[StoredResult | None]"


class ResultLoads(InOrder[ResultLoad]):
    """Reads stored results on `disk`; the socket thread takes the finished reads, oldest first."""

    def __init__(self, results: ResultsStore, disk: DiskThread) -> None:
        super().__init__(disk)
        self.results = results

    def start(self, identity: bytes, request_id: str, job_id: str) -> None:
        self._waiting.append(
            ResultLoad(identity, request_id, job_id, self.disk.submit(lambda: self.results.load(job_id)))
        )

    def pending(self, identity: bytes, job_id: str) -> int:
        """Reads of `job_id` for `identity` not yet taken: each becomes a copy in the send queue."""
        return sum(1 for load in self._waiting if (load.identity, load.job_id) == (identity, job_id))

    def stop(self) -> list[ResultLoad]:
        """Returns the fetches still waiting, which get no result."""
        waiting, self._waiting = self._waiting, []
        return waiting
