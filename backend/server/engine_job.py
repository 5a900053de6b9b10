"""Run one job on a loaded pipeline and report what happened as events. No bpy, no ZeroMQ, no Ray.

Shared by the in-process `Worker` thread and the Ray `EngineActor`, so a job fails, cancels and reports progress the
same way wherever it runs: the two only differ in where `emit` sends the events.
"""

import gc
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...protocol import errors as codes
from ..engine import MotionCloneParams, MotionClonePipeline, RepresentationCache
from ..engine.sparsectrl import SparseCondition
from ..errors import JobCancelled, ParameterError, VideoInputError, out_of_memory_summary
from .preview import latents_preview_png

if TYPE_CHECKING:
    from .jobs import Job

log = logging.getLogger(__name__)

# emit(kind, data): kind is one of EVENT_KINDS, data as described on `WorkerEvent`.
Emit = Callable[[str, dict[str, Any]], None]
EVENT_KINDS = ("progress", "preview", "done", "failed", "cancelled")
TERMINAL_KINDS = ("done", "failed", "cancelled")


@dataclass
class JobInputs:
    """What the engine needs of a `Job`: plain values, so they can cross a process boundary (Ray's object store)."""

    job_id: str
    params: MotionCloneParams
    reference: np.ndarray
    reference_fps: float
    condition: SparseCondition | None = None

    @classmethod
    def from_job(cls, job: "Job") -> "JobInputs":
        return cls(job.job_id, job.params, job.reference, job.reference_fps, job.condition)


def run_engine_job(
    pipeline: MotionClonePipeline,
    cache: RepresentationCache,
    inputs: JobInputs,
    emit: Emit,
    cancel: Callable[[], bool],
    preview_every: int = 5,
) -> None:
    """Run `inputs` on `pipeline`; emit progress and previews while it runs, then exactly one terminal event.

    Args:
        pipeline, cache: the loaded model and the motion representation cache.
        inputs: the validated job.
        emit: called as emit(kind, data) from this thread.
        cancel: polled between denoising steps; True stops the job with a "cancelled" event.
        preview_every: a "preview" event every this many denoising steps (0: none).
    """
    started = time.monotonic()

    def progress(stage: str, step: int, total: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / step * (total - step) if stage == "denoise" and step else None
        emit("progress", {"stage": stage, "step": step, "total": total, "elapsed": elapsed, "eta": eta})

    def preview(step: int, latents: torch.Tensor) -> None:
        if preview_every and step % preview_every == 0:
            emit("preview", {"step": step, "png": latents_preview_png(latents)})

    engine_failure: dict[str, Any] | None = None
    try:
        output = pipeline(
            inputs.reference,
            inputs.params,
            representation_cache=cache,
            progress=progress,
            cancel=cancel,
            latents_callback=preview,
            condition=inputs.condition,
            reference_fps=inputs.reference_fps,
        )
    except JobCancelled as error:
        emit("cancelled", {"reason": str(error)})
    except ParameterError as error:
        emit("failed", failure(codes.INVALID_PARAMETER, str(error), field=error.name))
    except VideoInputError as error:
        emit("failed", failure(codes.INVALID_FIELD, str(error), field="reference"))
    except torch.OutOfMemoryError as error:
        log.warning("job %s ran out of memory: %s", inputs.job_id, str(error))  # a str: a kept record holds no tensors
        engine_failure = failure(
            codes.OUT_OF_MEMORY,
            out_of_memory_summary(error),
            hint="Lower the resolution or the frame count, or run the backend with --dtype float16.",
        )
    except Exception as error:  # a failing job must never take the server (or the actor) down
        log.error("job %s failed:\n%s", inputs.job_id, traceback.format_exc())
        engine_failure = failure(
            codes.JOB_FAILED,
            f"The job failed inside the engine: {type(error).__name__}: {error}",
            hint="Check the server log; try again with default parameters, or report the error.",
        )
    else:
        emit("done", {"frames": output.frames, "fps": inputs.params.fps, "metadata": output.metadata})
    if engine_failure is not None:
        # Out here, not in the handler: there the exception's traceback still holds the failed pass's tensors.
        release_memory()
        emit("failed", engine_failure)


def failure(code: str, message: str, hint: str = "", field: str | None = None) -> dict[str, Any]:
    """The data of a "failed" event: the fields of the protocol's `Error`."""
    return {"code": code, "message": message, "hint": hint, "field": field}


def release_memory() -> None:
    """Give cached GPU memory back after a failed job. Never raises: it runs while a failure is being reported, and
    after some CUDA errors the device refuses every call."""
    try:
        gc.collect()  # tensors of the failed pass that only a reference cycle (frames, tracebacks) still holds
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        log.warning("could not release cached GPU memory:\n%s", traceback.format_exc())
