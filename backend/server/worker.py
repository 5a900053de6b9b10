"""The engine worker: one thread that runs jobs one at a time and reports through a queue. No bpy.

The worker interface is deliberately narrow (start a validated job, receive events, cancel via the job's flag,
collect the result) so an in-process worker can later be swapped for a remote one.
"""

import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from ...protocol import errors as codes
from ..engine import MotionClonePipeline, RepresentationCache
from ..errors import JobCancelled, ParameterError, VideoInputError
from .jobs import Job
from .preview import latents_preview_png

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

    def stop(self, timeout: float = 30.0) -> None:
        if self.current is not None:
            self.current.cancel_requested.set()
        self._inbox.put(None)
        self._thread.join(timeout)

    def _emit(self, kind: str, job: Job, **data: Any) -> None:
        self.events.put(WorkerEvent(kind, job, data))

    def _run(self) -> None:
        while (job := self._inbox.get()) is not None:
            try:
                self._run_job(job)
            finally:
                self.current = None

    def _run_job(self, job: Job) -> None:
        started = time.monotonic()
        job.started_at = started

        def progress(stage: str, step: int, total: int) -> None:
            elapsed = time.monotonic() - started
            eta = elapsed / step * (total - step) if stage == "denoise" and step else None
            self._emit("progress", job, stage=stage, step=step, total=total, elapsed=elapsed, eta=eta)

        def preview(step: int, latents: torch.Tensor) -> None:
            if self.preview_every and step % self.preview_every == 0:
                self._emit("preview", job, step=step, png=latents_preview_png(latents))

        try:
            output = self.pipeline(
                job.reference,
                job.params,
                representation_cache=self.cache,
                progress=progress,
                cancel=job.cancel_requested.is_set,
                latents_callback=preview,
                condition=job.condition,
                reference_fps=job.reference_fps,
            )
        except JobCancelled as error:
            self._emit("cancelled", job, reason=str(error))
        except ParameterError as error:
            self._emit("failed", job, code=codes.INVALID_PARAMETER, message=str(error), hint="", field=error.name)
        except VideoInputError as error:
            self._emit("failed", job, code=codes.INVALID_FIELD, message=str(error), hint="", field="reference")
        except torch.OutOfMemoryError as error:
            self._release_memory()
            self._emit(
                "failed",
                job,
                code=codes.OUT_OF_MEMORY,
                message=f"The GPU ran out of memory: {str(error).splitlines()[0]}",
                hint="Lower the resolution or the frame count, or run the backend with --dtype float16.",
                field=None,
            )
        except Exception as error:  # a failing job must never take the server down
            log.error("job %s failed:\n%s", job.job_id, traceback.format_exc())
            self._release_memory()
            self._emit(
                "failed",
                job,
                code=codes.JOB_FAILED,
                message=f"The job failed inside the engine: {type(error).__name__}: {error}",
                hint="Check the server log; try again with default parameters, or report the error.",
                field=None,
            )
        else:
            self._emit("done", job, frames=output.frames, fps=job.params.fps, metadata=output.metadata)

    @staticmethod
    def _release_memory() -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
