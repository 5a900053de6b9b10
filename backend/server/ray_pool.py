"""A pool of Ray actors with the in-process `Worker`'s interface: one job per actor, several at once. No bpy.

It runs in the Ray driver process (`ray_driver.py`), not in the server. The ZeroMQ server stays the front end
(socket, keys, limits, queue, results on disk); this pool only moves jobs to
`EngineActor`s (one per GPU, or per `cpus_per_worker` CPUs) and their events back into the server's queue as the same
`WorkerEvent`s the in-process worker sends. Each slot has a thread that starts `run` on its actor, polls
`poll_events` while it runs, forwards a cancel, and collects the result from the object store. An actor that dies
fails its job with a clear message and is replaced; the other slots carry on.
"""

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...protocol import errors as codes
from ..errors import MotionCloneError
from .engine_job import JobInputs, failure
from .jobs import Job
from .ray_actor import EngineActor
from .worker import WorkerEvent

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a slot asks its actor for progress (and checks for a cancel) while a job runs
POLL_TIMEOUT_S = 30.0
ACTOR_START_TIMEOUT_S = 600.0  # loading a real preset onto a GPU can take minutes the first time
# A slot whose actor could not be started takes a job (and tries again) only this long after it went down, or when
# every slot is down: meanwhile a job waits for a live slot rather than for Ray to place an actor that may not fit.
RETRY_DOWN_SLOT_S = 60.0


class RayPoolError(MotionCloneError):
    """The Ray cluster could not be reached or has no room for the workers asked for."""


@dataclass(frozen=True)
class RayPoolSettings:
    """How `motionclone serve --workers ray[:ADDRESS]` runs its pool.

    Attributes:
        address: None starts a local Ray instance; "auto" or "HOST:PORT" connects to a running cluster.
        workers: number of actors; None: the cluster's GPU count (GPU devices) or 1 (CPU).
        cpus_per_worker: CPUs each actor reserves when `device` is the CPU.
        preset, preset_options, device, dtype: the model every actor loads (device "cuda..." reserves one GPU each).
        cache_dir: each actor's motion representation cache (on its own node's disk).
        preview_every: a preview every this many denoising steps (0: none).
    """

    address: str | None
    workers: int | None
    cpus_per_worker: float
    preset: str
    preset_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str | None = None
    cache_dir: Path = Path("motionclone-results/representations")
    preview_every: int = 5

    @property
    def uses_gpus(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class _Slot:
    name: str
    actor: Any = None  # a Ray ActorHandle; None while down
    info: dict[str, Any] = field(default_factory=dict)
    job: Job | None = None
    state: str = "idle"  # idle, busy, restarting or down
    inbox: "queue.Queue[Job | None]" = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None
    down_since: float = 0.0  # time.monotonic() when an actor could not be started for it

    def takes_jobs(self, every_slot_down: bool, now: float) -> bool:
        """Free, and live, or down long enough (or with nothing better) to try starting an actor again."""
        if self.job is not None:
            return False
        return self.actor is not None or every_slot_down or now - self.down_since >= RETRY_DOWN_SLOT_S


class RayWorkerPool:
    """Runs jobs on Ray actors; the same interface as `Worker`, with `size` slots."""

    def __init__(self, settings: RayPoolSettings, events: "queue.Queue[WorkerEvent]") -> None:
        self.settings = settings
        self.events = events
        self.slots: list[_Slot] = []
        self._actor_class: Any = None
        self._started_ray = False

    # ---- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to (or start) Ray, create the actors and wait until each has loaded its model."""
        import ray

        size = self._connect(ray)
        options: dict[str, Any] = {"max_concurrency": 2}  # run() holds one thread; poll_events and cancel use the other
        if self.settings.uses_gpus:
            options["num_gpus"] = 1
            options["num_cpus"] = 1
        else:
            options["num_cpus"] = self.settings.cpus_per_worker
        self._actor_class = ray.remote(EngineActor).options(**options)
        self.slots = [_Slot(f"ray-worker-{index}") for index in range(size)]
        for slot in self.slots:
            slot.actor = self._create_actor()
        try:
            # One wait for all: the driver's start time-out is the actors' one (plus a margin), so one wait per
            # actor, one after another, would outlast it, and the server would report no driver, not this reason.
            infos = ray.get([slot.actor.describe.remote() for slot in self.slots], timeout=ACTOR_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as error:
            self.stop()
            raise RayPoolError(
                f"{size} Ray workers did not start within {ACTOR_START_TIMEOUT_S:.0f} s: the cluster may lack the "
                f"resources ({self._resources_wanted()} each). Check `ray status`, or start with fewer --ray-workers."
            ) from error
        for slot, info in zip(self.slots, infos, strict=True):
            slot.info = info
        for slot in self.slots:
            slot.thread = threading.Thread(target=self._serve_slot, args=(slot,), name=slot.name, daemon=True)
            slot.thread.start()
        log.info("Ray pool ready: %s", ", ".join(f"{s.name} on {s.info.get('device')}" for s in self.slots))

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running jobs, wait for their threads, kill the actors and leave Ray."""
        import ray

        for slot in self.slots:
            if slot.job is not None:
                slot.job.cancel_requested.set()
            slot.inbox.put(None)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(max(deadline - time.monotonic(), 0.1))
            if slot.actor is not None:
                try:
                    ray.kill(slot.actor)
                except Exception as error:  # the cluster may be gone already
                    log.warning("could not stop %s: %s", slot.name, error)
        if self._started_ray:
            ray.shutdown()

    # ---- the Worker interface ------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Start `job` on a slot that takes jobs (one with a live actor first); call only while `has_free_slot`."""
        free = self._slots_taking_jobs()
        slot = next((s for s in free if s.actor is not None), free[0])
        slot.job = job
        slot.state = "busy"
        slot.inbox.put(job)

    @property
    def has_free_slot(self) -> bool:
        return bool(self._slots_taking_jobs())

    def _slots_taking_jobs(self) -> list[_Slot]:
        every_slot_down = all(slot.actor is None for slot in self.slots)
        now = time.monotonic()
        return [slot for slot in self.slots if slot.takes_jobs(every_slot_down, now)]

    @property
    def busy(self) -> bool:
        return not self.has_free_slot

    @property
    def running(self) -> int:
        return sum(slot.job is not None for slot in self.slots)

    @property
    def device(self) -> str:
        """A summary for the Welcome, e.g. "ray: 2 x cuda:0"."""
        devices = sorted({str(slot.info.get("device", "?")) for slot in self.slots})
        return f"ray: {len(self.slots)} x {'/'.join(devices)}"

    def describe(self) -> list[dict[str, Any]]:
        """One {"name", "device", "state", "node", "pid"} map per actor."""
        return [
            {
                "name": slot.name,
                "device": str(slot.info.get("device", "unknown")),
                "state": slot.state,
                "node": slot.info.get("node", ""),
                "pid": slot.info.get("pid"),
            }
            for slot in self.slots
        ]

    # ---- one thread per slot -------------------------------------------------------------------------------------
    def _serve_slot(self, slot: _Slot) -> None:
        while True:
            job = slot.inbox.get()
            if job is None:
                return
            try:
                self._run_job(slot, job)
            except Exception as error:  # never lose a job silently, never end the slot's thread
                log.exception("%s: unexpected error", slot.name)
                self._emit("failed", job, failure(codes.JOB_FAILED, f"{slot.name}: {type(error).__name__}: {error}"))
            finally:
                # The state first: once `job` is None the driver may submit the next job (state "busy"), which a
                # later "idle" would hide.
                slot.state = "idle" if slot.actor is not None else "down"
                slot.job = None
            job = None  # an idle slot must not hold the last job's reference frames

    def _run_job(self, slot: _Slot, job: Job) -> None:
        import ray
        from ray.exceptions import RayActorError, RayError

        if slot.actor is None and not self._replace(slot):
            self._emit("failed", job, self._cluster_failure(slot, "no worker could be started"))
            return
        try:
            result = slot.actor.run.remote(JobInputs.from_job(job))
            cancel_sent = False
            while True:
                done, _ = ray.wait([result], timeout=POLL_S)
                if job.cancel_requested.is_set() and not cancel_sent:
                    slot.actor.cancel.remote(job.job_id)
                    cancel_sent = True
                self._forward_events(slot, job)
                if done:
                    break
            kind, data = ray.get(result)
            self._forward_events(slot, job)  # anything emitted between the last poll and the end
            # shown idle before the job's last event, so that a client told "done" never sees the worker busy; the
            # slot takes a new job only once `_serve_slot` has let go of this one
            slot.state = "idle"
            self._emit(kind, job, data)
        except RayActorError as error:
            log.error("%s died while running job %s: %s", slot.name, job.job_id, error)
            self._emit(
                "failed",
                job,
                failure(
                    codes.JOB_FAILED,
                    f"The worker running this job ({slot.name} on {slot.info.get('node') or 'its node'}) died before "
                    "it finished; nothing of the job was kept.",
                    hint="Submit the job again: the server replaces the worker and other jobs carry on.",
                ),
            )
            self._replace(slot)
        except RayError as error:
            log.error("%s: Ray failed while running job %s: %s", slot.name, job.job_id, error)
            self._emit("failed", job, self._cluster_failure(slot, f"{type(error).__name__}: {error}"))
            self._replace(slot)

    def _forward_events(self, slot: _Slot, job: Job) -> None:
        import ray

        for kind, data in ray.get(slot.actor.poll_events.remote(), timeout=POLL_TIMEOUT_S):
            self._emit(kind, job, data)

    def _emit(self, kind: str, job: Job, data: dict[str, Any]) -> None:
        self.events.put(WorkerEvent(kind, job, data))

    # ---- actors --------------------------------------------------------------------------------------------------
    def _create_actor(self) -> Any:
        settings = self.settings
        # Inside a GPU actor, Ray's CUDA_VISIBLE_DEVICES shows only its own GPU, so "cuda:1" here would not exist there.
        device = "cuda" if settings.uses_gpus else settings.device
        return self._actor_class.remote(
            settings.preset,
            settings.preset_options,
            device,
            settings.dtype,
            str(Path(settings.cache_dir).resolve()),
            settings.preview_every,
        )

    def _replace(self, slot: _Slot) -> bool:
        """Kill what is left of the slot's actor and start a new one; False (slot down) if Ray cannot."""
        import ray

        slot.state = "restarting"
        if slot.actor is not None:
            try:
                ray.kill(slot.actor)
            except Exception as error:  # already dead, or the cluster is gone
                log.info("%s: kill of the old actor: %s", slot.name, error)
        slot.actor = None
        try:
            actor = self._create_actor()
            slot.info = ray.get(actor.describe.remote(), timeout=ACTOR_START_TIMEOUT_S)
        except Exception as error:  # the cluster is gone or full: the slot stays down, the server stays up
            log.error("%s could not be replaced: %s", slot.name, error)
            slot.state = "down"
            slot.down_since = time.monotonic()
            return False
        slot.actor = actor
        log.info("%s replaced: %s", slot.name, slot.info)
        return True

    def _cluster_failure(self, slot: _Slot, reason: str) -> dict[str, Any]:
        address = self.settings.address or "the local Ray instance"
        return failure(
            codes.JOB_FAILED,
            f"The job could not run: the Ray cluster ({address}) did not answer for {slot.name} ({reason}).",
            hint="Check the cluster with `ray status`; submit the job again once it is back (the server keeps "
            "running and starts new workers when it can).",
        )

    def _connect(self, ray: Any) -> int:
        """ray.init for the settings; returns the pool size."""
        settings = self.settings
        try:
            if settings.address is None:
                wanted = (settings.workers or 1) * (1 if settings.uses_gpus else settings.cpus_per_worker)
                ray.init(num_cpus=max(int(wanted + 0.999), os.cpu_count() or 1), include_dashboard=False)
                self._started_ray = True
            else:
                ray.init(address=settings.address)
        except Exception as error:
            raise RayPoolError(
                f"cannot start or reach Ray at {settings.address or 'a new local instance'}: {error}. For a cluster "
                "start its head with `ray start --head` and pass --workers ray:auto (on a node of it) or "
                "ray:HOST:6379; plain --workers ray starts a local instance."
            ) from error
        if settings.workers is not None:
            return settings.workers
        if not settings.uses_gpus:
            return 1
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus < 1:
            raise RayPoolError(
                f"the Ray cluster at {settings.address or 'localhost'} has no GPUs, but --device is "
                f"{settings.device}: add GPU nodes, or run CPU workers with --device cpu --ray-workers N."
            )
        return gpus

    def _resources_wanted(self) -> str:
        if self.settings.uses_gpus:
            return "1 GPU"
        return f"{self.settings.cpus_per_worker:g} CPU"
