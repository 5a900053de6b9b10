"""A daemon thread for the server's result files: the server has one that reads what `fetch` asks for and one that
writes finished results. No bpy.

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

    def __init__(self, name: str) -> None:
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
            self._do(*request)
            # Nothing of it stays referenced here while the thread waits for the next item: a save's work holds the
            # job's result and reference video, hundreds of MB on an idle server.
            del request

    @staticmethod
    def _do(future: Future, work: Callable[[], object]) -> None:
        if not future.set_running_or_notify_cancel():
            return
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
