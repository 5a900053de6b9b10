"""The in-process engine worker: one thread that runs jobs one at a time and reports through a queue. No bpy.

The worker interface is deliberately narrow, so the Ray actor pool (`ray_pool.py`) can stand in for it:
`start()`, `submit(job)` while `has_free_slot`, events as `WorkerEvent`s on the server's queue, cancel through
`job.cancel_requested`, `running` and `describe()` for status, `stop()`.
"""

import logging
import queue
import threading
import traceback
from dataclasses import dataclass
from typing import Any

from ...protocol import errors as codes
from ..engine import MotionClonePipeline, RepresentationCache
from .engine_job import JobInputs, failure, run_engine_job
from .jobs import Job

log = logging.getLogger(__name__)


@dataclass
class WorkerEvent:
    """Something that happened to a job, for the socket thread to send.

    kind: "progress" (stage, step, total, elapsed, eta), "preview" (step, png), "done" (frames, fps, metadata),
    "failed" (code, message, hint, field) or "cancelled" (reason).
    """

    kind: str
    job: Job
    data: dict[str, Any]


class Worker:
    """Runs one job at a time on `pipeline` in a background thread."""

    def __init__(
        self,
        pipeline: MotionClonePipeline,
        cache: RepresentationCache,
        events: "queue.Queue[WorkerEvent]",
        preview_every: int = 5,
    ) -> None:
        self.pipeline = pipeline
        self.cache = cache
        self.events = events
        self.preview_every = preview_every
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="motionclone-worker", daemon=True)
        self.current: Job | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        self.current = job
        self._inbox.put(job)

    @property
    def busy(self) -> bool:
        return self.current is not None

    @property
    def has_free_slot(self) -> bool:
        return not self.busy

    @property
    def running(self) -> int:
        """Jobs running now (0 or 1)."""
        return int(self.busy)

    @property
    def device(self) -> str:
        """The torch device the model runs on, e.g. "cpu" or "cuda:0"."""
        return str(self.pipeline.unet.device)

    def describe(self) -> list[dict[str, Any]]:
        """One {"name", "device", "state"} map, as `ServerStatus.workers` lists them."""
        return [{"name": "in-process", "device": self.device, "state": "busy" if self.busy else "idle"}]

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running job and end the thread; a job that has not stopped after `timeout` (a long step) is
        reported cancelled all the same, since the server is going."""
        running = self.current  # read once: the thread clears it when the job ends
        if running is not None:
            running.cancel_requested.set()
        self._inbox.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive() and self.current is running and running is not None:
            self.events.put(
                WorkerEvent("cancelled", running, {"reason": "The server stopped before the job finished."})
            )

    def _run(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            try:
                self._run_job(job)
            except BaseException as error:  # the thread must outlive any job, and the job must end with an event
                log.error("job %s: the worker failed:\n%s", job.job_id, traceback.format_exc())
                message = f"The worker failed while running the job: {type(error).__name__}: {error}"
                self.events.put(WorkerEvent("failed", job, failure(codes.JOB_FAILED, message, "Check the server log.")))
            finally:
                self.current = None
            job = None  # an idle worker must not hold the last job, whose reference frames can be hundreds of MB

    def _run_job(self, job: Job) -> None:
        def emit(kind: str, data: dict[str, Any]) -> None:
            self.events.put(WorkerEvent(kind, job, data))

        run_engine_job(
            self.pipeline,
            self.cache,
            JobInputs.from_job(job),
            emit,
            job.cancel_requested.is_set,
            self.preview_every,
        )
