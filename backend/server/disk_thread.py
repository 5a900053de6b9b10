"""One daemon thread for the server's result files: the reads that `fetch` asks for and the writes of finished
results. No bpy.

A result is up to hundreds of MB: read or written on the socket thread to a slow disk, it would hold every
connection's messages and heartbeats for seconds. Mapping the file instead would move the reads into ZeroMQ's I/O
thread, where a disk error kills the process (SIGBUS). So this thread reads and writes, one file at a time, and the
socket thread sends what it has read or written. It is a daemon: a read that hangs on a dead disk must not keep the
process from exiting.
"""

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class HasFuture(Protocol):
    future: Future


class DiskThread:
    """Runs submitted work one item at a time, in the order it came, on a daemon thread."""

    def __init__(self, name: str = "motionclone-results-disk") -> None:
        self._requests: queue.Queue[tuple[Future, Callable[[], object]] | None] = queue.Queue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, work: Callable[[], T]) -> "Future[T]":
        """Queue `work`; its future holds what it returned or raised."""
        future: Future[T] = Future()
        self._requests.put((future, work))
        return future

    def stop(self) -> None:
        """End the thread once the work queued before has run."""
        self._requests.put(None)

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            future, work = request
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as error:  # handed to the socket thread, which answers with it
                future.set_exception(error)


W = TypeVar("W", bound=HasFuture)


class InOrder(Generic[W]):
    """Work on a disk thread that the socket thread takes back in the order it was started (each item's `future`)."""

    def __init__(self, disk: DiskThread) -> None:
        self.disk = disk
        self._waiting: list[W] = []  # the socket thread's alone

    def take_finished(self) -> list[W]:
        """The items that are done, in the order they were started, up to the first that is not."""
        finished = []
        while self._waiting and self._waiting[0].future.done():
            finished.append(self._waiting.pop(0))
        return finished
