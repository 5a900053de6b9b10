"""Keep a process's torch work on one thread, so that its CPU ops run on a single OpenMP thread team. No bpy.

An OpenMP team belongs to the thread that started it: a thread that has run a parallel torch op keeps its team (one
waiting thread per extra core) until the thread ends. Once a second thread runs parallel ops, libgomp manages more
threads than there are cores, stops spinning at its barriers and sleeps there instead, and every small op pays for a
wake-up. A server that loaded the blocks model on its main thread and denoised on its worker thread took 52 s where a
single thread took 30 s (2-core CPU, 20 steps). So the server loads its model on a thread that then ends, and an actor
does all its torch work on one thread that lasts.
"""

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_in_passing_thread(work: Callable[[], T], name: str) -> T:
    """Return `work()`, run on a new thread that ends with it (and takes its OpenMP team along); its exception is
    raised here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # handed to the caller's thread, which decides what it means
            failure.append(error)

    # daemon: an interrupted caller (Ctrl+C during a model load) must not wait for the load to finish
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
