"""The Ray driver runs in a process of its own, so the server outlives its Ray cluster. No bpy, no ZeroMQ.

Ray ends a driver process when the cluster's GCS stays unreachable for a minute ("Failed to connect to GCS within 60
seconds ... The program will terminate"). Were the server the driver, a lost cluster would take the endpoint, the
queue and every client's connection with it. So the server keeps `RayDriver` (the worker interface of `worker.py`),
which starts a child process that connects to Ray and runs `RayWorkerPool` there. When that child dies, the server
fails the jobs it was running with a message that says so, lists the workers as "down" and keeps serving; the next
job starts a new driver, which succeeds once the cluster is back.

Messages over the pipe (pickled; both ends are this project's processes):
    server -> driver: ("run", JobInputs), ("cancel", job_id), ("stop",)
    driver -> server: ("ready", workers, device) or ("start_failed", message), then ("event", job_id, kind, data)
        and ("workers", workers) whenever a worker's state changes.
"""

import logging
import multiprocessing
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ...protocol import errors as codes
from .engine_job import TERMINAL_KINDS, JobInputs, failure
from .jobs import Job
from .ray_pool import ACTOR_START_TIMEOUT_S, RayPoolError, RayPoolSettings, RayWorkerPool
from .worker import WorkerEvent

log = logging.getLogger(__name__)

RELAY_S = 0.05  # how often each side looks at the pipe: the delay added to progress and to a cancel
STOP_TIMEOUT_S = 30.0


class RayDriver:
    """Runs jobs on a Ray actor pool through a driver process; the same interface as `Worker`."""

    def __init__(
        self,
        settings: RayPoolSettings,
        events: "queue.Queue[WorkerEvent]",
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """`should_stop`: polled while a driver starts (minutes), so that a server told to stop before `stop()` can
        be called (SIGTERM during `start()`, its parent gone) ends the start at once."""
        self.settings = settings
        self.events = events
        self._should_stop = should_stop or (lambda: False)
        self._context = multiprocessing.get_context("spawn")  # no fork: the server has threads and a ZeroMQ context
        self._process: Any = None
        self._pipe: Connection | None = None
        self._device = "ray"
        self._workers: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}  # submitted and not yet ended, by job id
        self._inbox: deque[Job] = deque()  # submitted, not yet sent to a driver; guarded by `_lock`, like `_active`
        self._cancel_sent: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="motionclone-ray-relay", daemon=True)

    # ---- the Worker interface ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the driver and wait for its actors; raises `RayPoolError` if Ray cannot run them, or if the server
        stops meanwhile."""
        self._launch()
        self._thread.start()

    def submit(self, job: Job) -> None:
        # Both under the lock: `_driver_died` in between would fail a job that the next driver then runs as well.
        with self._lock:
            self._active[job.job_id] = job
            self._inbox.append(job)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._active)

    @property
    def has_free_slot(self) -> bool:
        # the driver's workers once it has started; before, the number asked for
        return self.running < (len(self._workers) or self.settings.workers or 1)

    @property
    def busy(self) -> bool:
        return not self.has_free_slot

    @property
    def device(self) -> str:
        return self._device

    def describe(self) -> list[dict[str, Any]]:
        return [dict(worker) for worker in self._workers]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Cancel the running jobs, stop the driver (it stops its actors and a Ray instance it started)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._end_process(timeout)

    # ---- the relay thread: the only user of the pipe ---------------------------------------------------------------
    def _relay(self) -> None:
        while not self._stopping.is_set():
            try:
                self._send_new_jobs()
                self._send_cancels()
                self._receive(RELAY_S)
            except (EOFError, OSError) as error:
                self._driver_died(error)
            except Exception:  # the relay must keep running: a lost job is better than a dead server's pool
                log.exception("Ray relay: unexpected error")
        self._shut_down_driver()

    def _send_new_jobs(self) -> None:
        if self._pipe is None and not self._relaunch():
            return
        while (job := self._next_waiting()) is not None:
            self._send_job(job)

    def _relaunch(self) -> bool:
        """Start a new driver for the jobs in the inbox; False when none is waiting or the driver could not start.
        One failed start fails every waiting job: a start per job would make each wait out the start time-out."""
        self._end_cancelled_waiting()
        with self._lock:
            if not self._inbox:
                return False
        try:
            self._launch()
        except RayPoolError as error:
            if not self._stop_wanted():  # when stopping, `_shut_down_driver` ends them as cancelled
                self._fail_waiting(self._cluster_failure(str(error)))
            return False
        return True

    def _send_job(self, job: Job) -> None:
        assert self._pipe is not None
        try:
            self._pipe.send(("run", JobInputs.from_job(job)))
        except (EOFError, OSError):
            raise  # the driver is gone: `_driver_died` fails this job with the others it was given
        except Exception as error:  # e.g. a value pickle refuses; pickled before writing, so the pipe is intact
            log.exception("job %s could not be sent to the Ray driver", job.job_id)
            message = f"The job could not be handed to a Ray worker ({type(error).__name__}: {error})."
            self._end_job(job, "failed", failure(codes.JOB_FAILED, message))

    def _next_waiting(self) -> Job | None:
        with self._lock:
            return self._inbox.popleft() if self._inbox else None

    def _end_cancelled_waiting(self) -> None:
        """End the inbox's cancelled jobs now: with no driver, no cancel can reach one, and a start takes minutes."""
        with self._lock:
            cancelled = [job for job in self._inbox if job.cancel_requested.is_set()]
            for job in cancelled:
                self._inbox.remove(job)
        for job in cancelled:
            self._end_job(job, "cancelled", {"reason": "Cancelled while it waited for a worker."})

    def _fail_waiting(self, data: dict[str, Any]) -> None:
        with self._lock:
            waiting = list(self._inbox)
            self._inbox.clear()
        for job in waiting:
            self._end_job(job, "failed", data)

    def _send_cancels(self) -> None:
        if self._pipe is None:
            return
        with self._lock:
            wanted = [job_id for job_id, job in self._active.items() if job.cancel_requested.is_set()]
        for job_id in wanted:
            if job_id not in self._cancel_sent:
                self._pipe.send(("cancel", job_id))
                self._cancel_sent.add(job_id)

    def _receive(self, wait: float) -> None:
        if self._pipe is None:
            self._stopping.wait(wait)
            return
        if not self._pipe.poll(wait):
            return
        while self._pipe.poll(0):
            message = self._pipe.recv()
            if message[0] == "event":
                _, job_id, kind, data = message
                with self._lock:
                    job = self._active.get(job_id)
                if job is not None:
                    self._forward(job, kind, data)
            elif message[0] == "workers":
                self._workers = message[1]

    def _forward(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        if kind in TERMINAL_KINDS:
            self._end_job(job, kind, data)
        else:
            self.events.put(WorkerEvent(kind, job, data))

    def _end_job(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._active.pop(job.job_id, None)
        self._cancel_sent.discard(job.job_id)
        self.events.put(WorkerEvent(kind, job, data))

    def _driver_died(self, error: BaseException) -> None:
        """The driver process is gone (Ray ended it, or it crashed): fail what it ran, show the workers down."""
        exit_code = self._end_process(1.0)
        log.error("the Ray driver process exited (code %s, %s); the server keeps running", exit_code, error)
        for worker in self._workers:
            worker["state"] = "down"
        with self._lock:  # the jobs the driver had been given; those still in the inbox go to the next driver
            lost = [job for job in self._active.values() if job not in self._inbox]
        reason = f"its Ray driver process exited with code {exit_code}"
        for job in lost:
            self._end_job(job, "failed", self._cluster_failure(reason))

    # ---- the driver process --------------------------------------------------------------------------------------
    def _launch(self) -> None:
        """Start a driver and wait until its actors have loaded the model (or it says why it could not)."""
        here, there = self._context.Pipe()
        process = self._context.Process(target=drive, args=(self.settings, there), name="motionclone-ray-driver")
        process.start()
        there.close()
        deadline = time.monotonic() + ACTOR_START_TIMEOUT_S + 60
        try:
            # In slices, so that a server stopping meanwhile ends the start at once rather than waiting for the
            # actors (minutes), and the driver process is not left to hold the server's exit; a job cancelled
            # meanwhile ends at once too.
            while not (reported := here.poll(RELAY_S)) and not self._stop_wanted():
                self._end_cancelled_waiting()
                if time.monotonic() > deadline:
                    raise RayPoolError("the Ray driver did not report within the start time-out")
            message = here.recv() if reported else None
        except (EOFError, OSError, RayPoolError) as error:
            process.kill()
            process.join(5)
            raise RayPoolError(
                f"the Ray driver process ended while starting ({error}, exit code {process.exitcode})"
            ) from error
        if message is None:  # the server is stopping: the driver is ended, not waited for
            process.kill()
            process.join(5)
            raise RayPoolError("the server stopped while its Ray driver was starting")
        if message[0] == "start_failed":
            process.join(STOP_TIMEOUT_S)
            raise RayPoolError(message[1])
        _, self._workers, self._device = message
        self._process, self._pipe = process, here

    def _stop_wanted(self) -> bool:
        return self._stopping.is_set() or self._should_stop()

    def _shut_down_driver(self) -> None:
        """Ask the driver to cancel its jobs and stop; relay what it sends until it exits. Jobs it did not end (or,
        with no driver running, jobs waiting for one) end as cancelled."""
        if self._pipe is not None:
            deadline = time.monotonic() + STOP_TIMEOUT_S
            try:
                self._send_cancels()
                self._pipe.send(("stop",))
                while time.monotonic() < deadline:
                    self._receive(RELAY_S)
            except (EOFError, OSError):
                pass  # the driver closed its end: it has stopped
        with self._lock:
            left = list(self._active.values())
        for job in left:
            self._end_job(job, "cancelled", {"reason": "The server stopped before the job finished."})

    def _end_process(self, timeout: float) -> int | None:
        process, self._process = self._process, None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if process is None:
            return None
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(5)
        return process.exitcode

    def _cluster_failure(self, reason: str) -> dict[str, Any]:
        address = self.settings.address or "the local Ray instance"
        return failure(
            codes.JOB_FAILED,
            f"The job could not run: the Ray cluster ({address}) went away or did not answer ({reason}). "
            "The server keeps running.",
            hint="Check the cluster with `ray status`; submit the job again once it is back (the next job connects "
            "anew).",
        )


def drive(settings: RayPoolSettings, pipe: Connection) -> None:
    """The driver process: run `RayWorkerPool` and relay jobs, cancels and events over `pipe` until told to stop (or
    the server is gone)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    events: queue.Queue[WorkerEvent] = queue.Queue()
    pool = RayWorkerPool(settings, events)
    try:
        pool.start()
    except Exception as error:
        pipe.send(("start_failed", str(error)))
        return
    pipe.send(("ready", pool.describe(), pool.device))
    reader = PipeReader(pipe)
    jobs: dict[str, Job] = {}
    waiting: deque[Job] = deque()  # the server may send a job before a slot thread has finished its last one
    workers = pool.describe()
    try:
        while True:
            if (message := reader.get(RELAY_S)) is not None:
                if message[0] == "stop":
                    break
                take_message(message, jobs, waiting, settings.preset, pipe)
                message = None  # handed on: the next wait must not hold a job's reference frames
            while waiting and pool.has_free_slot:
                pool.submit(waiting.popleft())
            # Events taken before the states are read: a slot is shown idle before its job's last event, so the
            # server always learns that a worker is idle before it tells a client that the worker's job is done.
            ready = drain(events)
            if (now := pool.describe()) != workers:
                workers = now
                pipe.send(("workers", workers))
            relay_events(ready, jobs, pipe)
    except (EOFError, OSError):
        pass  # the server is gone: stop the actors and leave
    finally:
        pool.stop()
        try:
            for job in waiting:
                pipe.send(("event", job.job_id, "cancelled", {"reason": "The server stopped before the job started."}))
            relay_events(drain(events), jobs, pipe)
        except (EOFError, OSError):
            pass


def take_message(message: tuple, jobs: dict[str, Job], waiting: "deque[Job]", preset: str, pipe: Connection) -> None:
    """A "run" joins the jobs waiting for a slot; a "cancel" stops a running job before its next step, and ends a
    waiting one at once (it may wait for minutes while every live slot is busy)."""
    if message[0] == "run":
        job = job_from_inputs(message[1], preset)
        jobs[job.job_id] = job
        waiting.append(job)
    elif message[0] == "cancel" and message[1] in jobs:
        job = jobs[message[1]]
        if job in waiting:
            waiting.remove(job)
            del jobs[job.job_id]
            pipe.send(("event", job.job_id, "cancelled", {"reason": "Cancelled while it waited for a worker."}))
        else:
            job.cancel_requested.set()


class PipeReader:
    """Reads the driver's end of the pipe on a thread of its own. Both ends send large messages (a job's reference
    frames one way, a result the other) and a pipe's buffer holds some 200 KB: were both ends sending at once, each
    would wait for the other to read, for ever. With this end always reading, the server's send always ends."""

    _GONE = ("gone",)

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._messages: queue.Queue[tuple] = queue.Queue()
        threading.Thread(target=self._read, name="motionclone-ray-pipe-reader", daemon=True).start()

    def get(self, timeout: float) -> tuple | None:
        """The next message, or None after `timeout` seconds; raises EOFError once the server has closed its end."""
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is self._GONE:
            self._messages.put(message)  # every later call says so too
            raise EOFError("the server closed the pipe")
        return message

    def _read(self) -> None:
        try:
            while True:
                self._messages.put(self._pipe.recv())
        except (EOFError, OSError):
            self._messages.put(self._GONE)


def job_from_inputs(inputs: JobInputs, preset: str) -> Job:
    return Job(
        b"",
        inputs.params,
        inputs.reference,
        inputs.reference_fps,
        preset,
        condition=inputs.condition,
        job_id=inputs.job_id,
    )


def drain(events: "queue.Queue[WorkerEvent]") -> list[WorkerEvent]:
    taken = []
    while True:
        try:
            taken.append(events.get_nowait())
        except queue.Empty:
            return taken


def relay_events(events: list[WorkerEvent], jobs: dict[str, Job], pipe: Connection) -> None:
    for event in events:
        pipe.send(("event", event.job.job_id, event.kind, event.data))
        if event.kind in TERMINAL_KINDS:
            jobs.pop(event.job.job_id, None)
