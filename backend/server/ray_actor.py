"""The engine as a Ray actor: one loaded pipeline and representation cache per GPU (or CPU slot). No bpy, no ZeroMQ.

This module does not import Ray: `ray_pool.py` wraps `EngineActor` with `ray.remote(...)` when the pool starts, so
the class can be imported (and tested) without a Ray installation. The pool creates it with `max_concurrency=2`:
while `run` holds one thread for the whole job, `poll_events` and `cancel` are served on the other, which is how
progress leaves and a cancel arrives within one denoising step.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..engine import MotionClonePipeline, RepresentationCache
from ..generate import DTYPES
from ..models import load_preset
from .engine_job import TERMINAL_KINDS, JobInputs, run_engine_job


class EngineActor:
    """Runs jobs the pool sends; queues their progress until the pool polls it."""

    def __init__(
        self,
        preset: str,
        preset_options: dict[str, Any],
        device: str,
        dtype: str | None,
        cache_dir: str,
        preview_every: int,
    ) -> None:
        """Load `preset` on `device` (the GPU Ray assigned to this actor is "cuda" inside it)."""
        # Ray may call `run` on either of the actor's threads: the torch work goes to one thread of its own, which
        # also loads the model, so that the actor's CPU ops run on one OpenMP team (torch_thread.py).
        self._torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="motionclone-engine")
        self.pipeline = self._torch_thread.submit(
            lambda: MotionClonePipeline.from_bundle(
                load_preset(preset, device=device, dtype=DTYPES[dtype] if dtype else None, **preset_options)
            )
        ).result()
        self.cache = RepresentationCache(Path(cache_dir))
        self.preview_every = preview_every
        self._lock = threading.Lock()
        self._events: list[tuple[str, dict[str, Any]]] = []
        # Job ids, not one flag: a cancel may arrive on the other thread before `run` of that job has started.
        self._cancelled: set[str] = set()

    def describe(self) -> dict[str, Any]:
        """Where this actor runs: {"device", "node", "pid"}. Answers as soon as the model is loaded."""
        import ray  # only ever called inside a Ray worker

        return {"device": str(self.pipeline.unet.device), "node": ray.util.get_node_ip_address(), "pid": os.getpid()}

    def run(self, inputs: JobInputs) -> tuple[str, dict[str, Any]]:
        """Run one job; returns its terminal event (kind, data). Progress and previews wait for `poll_events`."""
        outcome: list[tuple[str, dict[str, Any]]] = []
        # The slot runs one job at a time and each once: a cancel that came after its job had ended is dropped here,
        # and one that came before this job's run started is kept.
        self._cancelled.intersection_update({inputs.job_id})

        def emit(kind: str, data: dict[str, Any]) -> None:
            if kind in TERMINAL_KINDS:
                outcome.append((kind, data))  # returned through the object store, not polled
                return
            with self._lock:
                self._events.append((kind, data))

        try:
            self._torch_thread.submit(
                run_engine_job,
                self.pipeline,
                self.cache,
                inputs,
                emit,
                lambda: inputs.job_id in self._cancelled,
                self.preview_every,
            ).result()
        finally:
            self._cancelled.discard(inputs.job_id)
        return outcome[0]

    def poll_events(self) -> list[tuple[str, dict[str, Any]]]:
        """The progress and preview events since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def cancel(self, job_id: str) -> None:
        """Stop job `job_id` before its next denoising step (it then returns a "cancelled" event)."""
        self._cancelled.add(job_id)
