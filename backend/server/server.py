"""The MotionClone server: a ROUTER socket, a fair queue and the engine worker(s). No bpy.

One thread owns the socket: it polls with a short timeout, dispatches each request by type, then sends what the
worker reported and does housekeeping (queue positions, expired results). The worker (an in-process thread, or a
pool of Ray actors with `--workers ray`) only touches the engine. Every bad input is answered with an `Error`
naming the field and the limit; nothing a client sends can stop the loop.
"""

import contextlib
import itertools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from ...protocol import errors as codes
from ...protocol import stages
from ...protocol.codec import decode, encode
from ...protocol.errors import ProtocolError
from ...protocol.messages import (
    Accepted,
    Ack,
    ArraySpec,
    Cancel,
    Cancelled,
    Echo,
    Error,
    Fetch,
    Hello,
    JobStatus,
    Message,
    Ping,
    Pong,
    Progress,
    Queued,
    Result,
    ServerStatus,
    Status,
    Submit,
    Welcome,
)
from .. import __version__
from ..engine import MotionCloneParams, MotionClonePipeline, RepresentationCache
from ..engine.parameters import MAX_WINDOWED_FRAMES
from ..errors import ParameterError
from ..generate import DTYPES
from ..models import load_preset
from ..models.presets import default_config
from ..models.registry import NATIVE_SIZES
from ..video_io import check_frame_sampling, check_frame_step
from .conditions import condition_from_submit, fit_condition
from .config import ServerConfig
from .disk_thread import DiskThread
from .in_flight import SendsInFlight
from .jobs import Job, JobQueue, job_bytes
from .listener import Listener, open_listener
from .parent import ParentWatch
from .result_loads import ResultLoad, ResultLoads
from .result_saves import ResultSave, ResultSaves
from .results_store import DamagedResult, ResultsStore
from .state_file import remove_state_file, state_record, write_state_file
from .torch_thread import run_in_passing_thread
from .worker import Worker, WorkerEvent

if TYPE_CHECKING:
    from .ray_driver import RayDriver

log = logging.getLogger(__name__)

SERVER_VERSION = __version__
POLL_MS = 20
# Messages taken per turn of the loop before the worker's events, the queue and housekeeping get theirs.
MAX_RECEIVE_BATCH = 100
HOUSEKEEPING_S = 5.0
# Echoes this large go back at most two at a time per connection: each keeps its received bytes until it has left.
TRACKED_ECHO_BYTES = 1 << 20
# How often `--parent-pid` is checked: the server stops within about this long (plus one poll) after its parent.
PARENT_CHECK_S = 1.0
# How long the last messages (shutting_down, cancelled, a result finished just now) may take to leave at shutdown:
# a socket closed at once drops whatever is still queued.
SHUTDOWN_LINGER_MS = 2000
# How long a finished result may take to be stored before it is sent unstored (a disk that hangs), and how long a
# shutdown waits for the results still being stored (below the add-on's grace time before it ends the process).
SAVE_DEADLINE_S = 120.0
SHUTDOWN_SAVE_S = 5.0


def _params_from_request(values: dict[str, Any], preset: str) -> MotionCloneParams:
    """MotionClone parameters from a Submit: an optional "config" ("camera", "object", "blocks", ...) under explicit
    values.

    What the request leaves out is the preset's: its native frame count and size (64 x 64 for blocks, 512 for SD-1.5)
    and its default config (`blocks` for the blocks model, the official `camera` config otherwise), as the Welcome's
    `native_size` and `default_config` say.
    """
    values = {**NATIVE_SIZES.get(preset, {}), **values}
    config = values.pop("config", None)
    if config is None:
        config = default_config(preset)
    if not isinstance(config, str):
        raise ParameterError("config", f"must be a config name, got {config!r}")
    return MotionCloneParams.from_config(config, **values)


MAX_FRAME_INDEX = 2**31  # frames of the client's clip: far beyond any shot, and within every integer type
MAX_REFERENCE_FPS = 1000.0


def check_reference_fps(fps: float) -> None:
    """Refuse a Submit's `reference_fps` that is not a frame rate: it is recorded in the result's metadata."""
    if not 0 < fps <= MAX_REFERENCE_FPS:
        raise ProtocolError(
            codes.INVALID_FIELD,
            f"reference_fps must be above 0 and at most {MAX_REFERENCE_FPS:g}, got {fps}",
            "reference_fps",
        )


def check_reference_sampling(sampling: dict[str, Any] | None, frame_count: int) -> None:
    """Refuse a Submit's `reference_sampling` that is not {"frame_sampling": a rule, "frame_step": N >= 1, "indices":
    one strictly increasing index >= 0 per reference frame}."""
    if sampling is None:
        return

    def refuse(detail: str) -> ProtocolError:
        return ProtocolError(codes.INVALID_FIELD, f"reference_sampling {detail}", "reference_sampling")

    if set(sampling) != {"frame_sampling", "frame_step", "indices"}:
        raise refuse(f"must hold frame_sampling, frame_step and indices, got {sorted(sampling)}")
    try:
        check_frame_sampling(sampling["frame_sampling"])
        check_frame_step(sampling["frame_step"])
    except ParameterError as error:  # the engine's own checks, reported under this field
        raise refuse(f"{error.name} {error.detail}") from error
    indices = sampling["indices"]
    if not isinstance(indices, list) or len(indices) != frame_count:
        raise refuse(f"indices must be a list of one index per reference frame ({frame_count})")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_FRAME_INDEX for i in indices):
        raise refuse(f"indices must be whole numbers from 0 to {MAX_FRAME_INDEX - 1}")
    if any(later <= earlier for earlier, later in itertools.pairwise(indices)):
        raise refuse("indices must be strictly increasing")


def taken_over(job_id: str) -> Error:
    """What the connection that followed a job hears when another one fetches it."""
    return Error(
        code=codes.TAKEN_OVER,
        message=f"another connection fetched job {job_id}: its progress and result go there from now on",
        hint=f"Fetch it again to follow it here (`motionclone fetch {job_id}`, or Fetch Result Again in Blender).",
        job_id=job_id,
    )


def record_client_sampling(metadata: dict[str, Any], sampling: dict[str, Any]) -> None:
    """Write the client's own sampling of its clip into a result's metadata: the engine took every frame it was sent,
    and these say which frames of the client's clip those were."""
    parameters = metadata.get("parameters")
    if isinstance(parameters, dict):
        parameters["frame_sampling"] = sampling["frame_sampling"]
        parameters["frame_step"] = sampling["frame_step"]
    frames = metadata.get("reference_frames")
    if isinstance(frames, dict):
        frames["indices"] = list(sampling["indices"])
        frames["sampled_by"] = "client"


class Server:
    """Serve MotionClone jobs on `config.bind` until `stop()` (or SIGINT/SIGTERM through `serve`)."""

    def __init__(
        self, config: ServerConfig, pipeline: MotionClonePipeline | None = None, listener: Listener | None = None
    ) -> None:
        """Bind (unless given a bound `listener`), then load the model of `config.preset` (unless given `pipeline`).

        Clients may connect as soon as the socket is bound; their Hello is answered once `run()` starts.
        """
        self.config = config
        self.listener = listener or open_listener(config)
        self.socket = self.listener.socket
        self.endpoint = self.listener.endpoint
        # Before the model loads: ParentWatch learns now whether the pid is our real parent (see parent.py).
        self.parent = ParentWatch(config.parent_pid) if config.parent_pid is not None else None
        # With Ray workers this copy of the model only validates jobs and fills the Welcome, so it stays on the CPU
        # and the front end's GPU (if any) is left to a worker.
        front_device = config.device if config.workers == "local" else "cpu"
        try:
            # Loaded on a thread that ends: jobs run on the worker's thread, and two threads with OpenMP teams would
            # slow the CPU engine down (torch_thread.py).
            self.pipeline = pipeline or run_in_passing_thread(
                lambda: MotionClonePipeline.from_bundle(
                    load_preset(
                        config.preset,
                        device=front_device,
                        dtype=DTYPES[config.dtype] if config.dtype else None,
                        **config.preset_options,
                    )
                ),
                "motionclone-model-load",
            )
        except BaseException:
            self.listener.close()  # a failed load must not leave the port taken
            raise
        self.results = ResultsStore(config.results_dir, config.retention_s)
        self.sends_in_flight = SendsInFlight()
        # Reads and writes on threads of their own: a read that hangs on a bad sector must not hold every save.
        self.reader, self.writer = DiskThread("motionclone-result-reader"), DiskThread("motionclone-result-writer")
        self.result_loads = ResultLoads(self.results, self.reader)
        self.result_saves = ResultSaves(self.results, self.writer)
        self.queue = JobQueue()
        self.jobs: dict[str, Job] = {}
        self.worker_events: queue.Queue[WorkerEvent] = queue.Queue()
        self.representations = RepresentationCache(Path(config.results_dir) / "representations")
        self.worker = self._make_worker()
        self._stop = threading.Event()
        # Who sent the request being handled (see `client_key`); handlers share one signature, so it is kept here.
        self._current_client = b""
        self._accepted = 0
        self._completed = 0
        self._started_at = time.monotonic()
        self._next_housekeeping = 0.0
        self._next_parent_check = 0.0

    def _make_worker(self) -> "Worker | RayDriver":
        config = self.config
        if config.workers == "local":
            return Worker(self.pipeline, self.representations, self.worker_events, config.preview_every)
        from .ray_driver import RayDriver  # Ray itself is imported only in the driver process
        from .ray_pool import RayPoolSettings

        settings = RayPoolSettings(
            address=config.ray_address,
            workers=config.ray_workers,
            cpus_per_worker=config.ray_cpus_per_worker,
            preset=config.preset,
            preset_options=config.preset_options,
            device=config.device,
            dtype=config.dtype,
            cache_dir=Path(config.results_dir) / "representations",
            preview_every=config.preview_every,
        )
        # A pool may take minutes to start: a stop (a signal, or the parent exiting) must end that wait too.
        return RayDriver(settings, self.worker_events, should_stop=self._stop_wanted)

    @property
    def device(self) -> str:
        """Where jobs run, e.g. "cpu", "cuda:0" or, with Ray workers, "ray: 2 x cuda:0"."""
        return self.worker.device

    # ---- life cycle ----------------------------------------------------------------------------------------------
    def run(self, ready: Callable[["Server"], None] | None = None) -> None:
        """Serve until `stop()`; then cancel the running job and close everything.

        `ready(server)`, if given, is called once the loop is about to poll; if it raises, the server shuts down.
        """
        try:
            self.worker.start()
        except BaseException:
            self.listener.close()  # a pool that cannot start must not leave the port taken
            if self._stop_wanted():  # stopped while it started: not a failure
                return
            raise
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        try:
            if ready is not None:
                ready(self)
            while not self._stop.is_set():
                if dict(poller.poll(POLL_MS)).get(self.socket):
                    self._receive_all()
                self._send_worker_events()
                self._send_saved_results()
                self._send_loaded_results()
                self._start_next_job()
                self._housekeeping()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _stop_wanted(self) -> bool:
        """A stop was asked for, or the `--parent-pid` process has exited."""
        return self._stop.is_set() or (self.parent is not None and not self.parent.alive())

    def _housekeeping(self) -> None:
        """Expired results and representations every HOUSEKEEPING_S; the parent process every PARENT_CHECK_S."""
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_S
            self.sends_in_flight.forget_sent()
            try:
                self.results.purge_expired()
                self.representations.purge_unused(self.config.retention_s)
            except OSError as error:  # a folder removed or a disk that fails must not stop the server
                log.error("housekeeping failed, tried again in %d s: %s", HOUSEKEEPING_S, error)
        if self.parent is not None and now >= self._next_parent_check:
            self._next_parent_check = now + PARENT_CHECK_S
            if not self.parent.alive():
                log.info("parent process %d has exited; stopping (--parent-pid)", self.parent.pid)
                self.stop()  # the same way out as SIGTERM

    def _shutdown(self) -> None:
        for job in self.queue:
            self._send(job.identity, Error(codes.SHUTTING_DOWN, "The server is shutting down.", job_id=job.job_id))
        self._send_saved_results()  # stored already: sent now, not after the running job has stopped
        self.worker.stop()
        self._send_worker_events()  # the cancelled running job, or a result that finished just now
        for save in self.result_saves.take_all(SHUTDOWN_SAVE_S):  # stored if the disk allows: fetched after a restart
            self._send_saved_or_fail(save)
        self._send_loaded_results()
        for load in self.result_loads.stop():  # still being read: the client hears why no result comes
            self._send(
                load.identity,
                Error(
                    codes.SHUTTING_DOWN,
                    "The server is shutting down.",
                    request_id=load.request_id,
                    job_id=load.job_id,
                ),
            )
        self.reader.stop()
        self.writer.stop()
        self.listener.close(linger_ms=SHUTDOWN_LINGER_MS)

    # ---- receiving -----------------------------------------------------------------------------------------------
    def _receive_all(self) -> None:
        # At most a batch per turn: a client sending without pause must not hold the loop from starting jobs and
        # sending their progress and results.
        for _ in range(MAX_RECEIVE_BATCH):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity, parts = frames[0].bytes, [frame.buffer for frame in frames[1:]]
            self._handle(identity, parts, client_key(frames))

    def _handle(self, identity: bytes, parts: list[memoryview], client: bytes | None = None) -> None:
        request_id = None
        self._current_client = identity if client is None else client
        try:
            handlers = self._handlers()
            accepted = {cls.TYPE for cls in handlers}
            message, payloads = decode(parts, self.config.limits, accepted)
            request_id = getattr(message, "request_id", None)
            handlers[type(message)](identity, message, payloads)
        except ProtocolError as error:
            request_id = request_id or error.request_id
            self._send(identity, Error(error.code, str(error), field=error.field, request_id=request_id))
        except ParameterError as error:
            self._send(
                identity,
                Error(codes.INVALID_PARAMETER, str(error), field=error.name, request_id=request_id),
            )
        except Exception as error:  # a bug in a handler must not stop the server; the client still gets an answer
            log.exception("error while handling a request")
            self._send(identity, Error(codes.BAD_MESSAGE, f"{type(error).__name__}: {error}", request_id=request_id))

    def _handlers(self) -> dict[type[Message], Any]:
        return {
            Hello: self._on_hello,
            Submit: self._on_submit,
            Cancel: self._on_cancel,
            Fetch: self._on_fetch,
            Ack: self._on_ack,
            Ping: self._on_ping,
            Echo: self._on_echo,
            Status: self._on_status,
        }

    def _on_hello(self, identity: bytes, message: Hello, payloads: dict[str, memoryview]) -> None:
        self._send(identity, self.welcome(message.request_id))

    def welcome(self, request_id: str) -> Welcome:
        limits = self.config.limits
        return Welcome(
            request_id=request_id,
            server_version=SERVER_VERSION,
            device=self.device,
            presets=[self.config.preset],
            default_preset=self.config.preset,
            limits={
                **limits.to_dict(),
                "max_output_frames": self.pipeline.max_frames,
                "max_windowed_frames": MAX_WINDOWED_FRAMES,
                "size_multiple": 8,
                "max_queue": self.config.max_queue,
                "max_queued_bytes": self.config.max_queued_bytes,
                "condition_types": [] if self.pipeline.controlnet_kind is None else [self.pipeline.controlnet_kind],
                # What a job that leaves them out gets: the size its model learned at, and the config that suits it.
                "native_size": dict(NATIVE_SIZES.get(self.config.preset, {})),
                "default_config": default_config(self.config.preset),
            },
            heartbeat_interval=self.config.heartbeat_interval,
        )

    def _on_submit(self, identity: bytes, message: Submit, payloads: dict[str, memoryview]) -> None:
        preset = self.config.preset if message.preset is None else message.preset
        if preset != self.config.preset:
            raise ProtocolError(
                codes.INVALID_FIELD,
                f"preset {preset!r} is not loaded; this server runs {self.config.preset!r}",
                "preset",
            )
        if len(self.queue) >= self.config.max_queue:
            self._send(
                identity,
                Error(
                    codes.QUEUE_FULL,
                    f"The queue holds {len(self.queue)} jobs, the limit is {self.config.max_queue}.",
                    hint="Try again when some jobs have finished.",
                    request_id=message.request_id,
                ),
            )
            return
        params = _params_from_request(message.params, preset)
        self.pipeline.check_inputs(params)
        frame_count = message.reference.shape[0]
        if frame_count < params.num_frames:
            raise ProtocolError(
                codes.INVALID_FIELD,
                f"the reference has {frame_count} frames but num_frames is {params.num_frames}",
                "reference",
            )
        check_reference_fps(message.reference_fps)
        check_reference_sampling(message.reference_sampling, frame_count)
        self._check_result_size(params)
        condition = condition_from_submit(message, payloads.get("condition"))
        if condition is not None:
            # Every check but the size first: resizing images that are refused anyway could take gigabytes.
            self.pipeline.check_condition_inputs(params, condition, check_size=False)
            condition = fit_condition(condition, params)
            self.pipeline.check_condition_inputs(params, condition)
        # A view of the received zmq frame, kept alive by the job: a long reference is never held twice.
        reference = np.frombuffer(payloads["reference"], dtype=np.uint8).reshape(message.reference.shape)
        if self._queue_too_full_for(identity, message.request_id, job_bytes(reference, condition)):
            return
        self._accepted += 1
        job = Job(
            identity,
            params,
            reference,
            message.reference_fps,
            preset,
            sequence=self._accepted,
            condition=condition,
            client=self._current_client,
            reference_sampling=message.reference_sampling,
        )
        self.jobs[job.job_id] = job
        places_before = {id(queued): index for index, queued in enumerate(self.queue.order())}
        self.queue.push(job)
        order = self.queue.order()  # computed once: each position would compute it again
        running = self.worker.running
        position = order.index(job) + running  # as `_position`
        log.info("job %s queued at position %d", job.job_id, position)
        self._send(identity, Accepted(message.request_id, job.job_id, position))
        # A client's first job goes ahead of other clients' later ones (fair order): those jobs hear their new place.
        for index, queued in enumerate(order):
            if queued is not job and places_before[id(queued)] != index:
                self._send(queued.identity, Queued(queued.job_id, index + running))

    def _check_result_size(self, params: MotionCloneParams) -> None:
        """Refuse a job whose result would not fit into one message: it would run to the end for nothing."""
        limit = self.config.limits.max_message_bytes - self.config.limits.max_header_bytes
        frame_bytes = params.height * params.width * 3
        if params.num_frames * frame_bytes > limit:
            raise ProtocolError(
                codes.TOO_LARGE,
                f"num_frames {params.num_frames} at {params.width}x{params.height} makes a result of "
                f"{params.num_frames * frame_bytes} bytes; the server sends at most {limit} in one message: at this "
                f"size at most {limit // frame_bytes} frames",
                "num_frames",
            )

    def _queue_too_full_for(self, identity: bytes, request_id: str, new_bytes: int) -> bool:
        """Refuse (and say so) a job whose frames would take the waiting jobs' frames past `max_queued_bytes`: up to
        `max_queue` long references would otherwise fill the server's memory. An empty queue takes any job."""
        queued = sum(job_bytes(job.reference, job.condition) for job in self.queue)
        limit = self.config.max_queued_bytes
        if not self.queue or queued + new_bytes <= limit:
            return False
        mib = 1 << 20
        self._send(
            identity,
            Error(
                codes.QUEUE_FULL,
                f"The waiting jobs hold {queued / mib:.1f} MiB of frames and this one {new_bytes / mib:.1f} MiB more; "
                f"the limit is {limit / mib:.1f} MiB (max_queued_bytes, motionclone serve --max-queued-mb).",
                hint="Try again when some jobs have finished.",
                field="reference",
                request_id=request_id,
            ),
        )
        return True

    def _on_cancel(self, identity: bytes, message: Cancel, payloads: dict[str, memoryview]) -> None:
        job = self.jobs.get(message.job_id)
        if job is not None and job.state == stages.DONE:  # finished, its result being stored: it comes all the same
            self._send(identity, JobStatus(message.request_id, job.job_id, stages.DONE))
            return
        if job is None or job.state not in stages.ACTIVE_STATES:
            self._send_unknown_job(identity, message.request_id, message.job_id)
            return
        if job.state == stages.QUEUED and self.queue.remove(job):
            job.state = stages.CANCELLED
            self._forget(job)
            self._send(job.identity, Cancelled(job.job_id, "cancelled while queued"))
            self._send_queue_positions()
            return
        job.cancel_requested.set()  # the worker stops before its next step and reports Cancelled

    def _on_fetch(self, identity: bytes, message: Fetch, payloads: dict[str, memoryview]) -> None:
        job = self.jobs.get(message.job_id)
        if job is not None:  # queued, running, or done and its result being stored: the result comes as the job's
            if job.identity != identity:  # the connection that followed it would wait for messages that never come
                self._send(job.identity, taken_over(job.job_id))
            job.identity = identity  # progress and the result now go to this connection
            self._send(identity, JobStatus(message.request_id, job.job_id, job.state, self._position(job)))
            return
        if self.sends_in_flight.full(
            identity, message.job_id, also=self.result_loads.pending(identity, message.job_id)
        ):
            # The results sent before have not left yet: this connection gets them, and no more copies are loaded.
            self._send(identity, JobStatus(message.request_id, message.job_id, stages.DONE))
            return
        if not self.results.has(message.job_id):
            self._send_unknown_job(identity, message.request_id, message.job_id)
            return
        self.result_loads.start(identity, message.request_id, message.job_id)  # sent by `_send_loaded_results`

    def _send_loaded_results(self) -> None:
        """Send the results that `fetch` requests have had read, in the order they came."""
        for load in self.result_loads.take_finished():
            try:
                self._send_loaded(load)
            except Exception as error:  # a bug, or memory running out: that fetch fails, the server keeps serving
                log.exception("job %s: its stored result could not be read or sent", load.job_id)
                failed = f"The stored result could not be read or sent ({type(error).__name__}: {error})."
                with contextlib.suppress(Exception):
                    self._send(
                        load.identity,
                        Error(codes.JOB_FAILED, failed, request_id=load.request_id, job_id=load.job_id),
                    )

    def _send_loaded(self, load: ResultLoad) -> None:
        try:
            stored = load.future.result()
        except DamagedResult as error:
            log.error("%s", error)
            hint = "Generate again; the server's disk may be failing, its log has the details."
            self._send(
                load.identity,
                Error(codes.JOB_FAILED, f"{error}.", hint=hint, request_id=load.request_id, job_id=load.job_id),
            )
            return
        if stored is None:  # acknowledged or expired while it was read
            self._send_unknown_job(load.identity, load.request_id, load.job_id)
            return
        self._send_result(load.identity, stored.job_id, stored.frames, stored.fps, stored.metadata)

    def _on_ack(self, identity: bytes, message: Ack, payloads: dict[str, memoryview]) -> None:
        if not self.results.delete(message.job_id):
            self._send_unknown_job(identity, message.request_id, message.job_id)
            return
        self._send(identity, JobStatus(message.request_id, message.job_id, stages.DONE))

    def _on_ping(self, identity: bytes, message: Ping, payloads: dict[str, memoryview]) -> None:
        self._send(identity, Pong(message.request_id))

    def _on_echo(self, identity: bytes, message: Echo, payloads: dict[str, memoryview]) -> None:
        data = payloads.get("data")
        if data is None or data.nbytes < TRACKED_ECHO_BYTES:  # small echoes may be pipelined freely
            self._send(identity, message, data)
            return
        if self.sends_in_flight.full(identity, "echo"):
            self._send(
                identity,
                Error(
                    codes.QUEUE_FULL,
                    f"Two echoes of {TRACKED_ECHO_BYTES} bytes or more are still on their way to this connection.",
                    hint="Read them before sending the next large echo.",
                    field="data",
                    request_id=message.request_id,
                ),
            )
            return
        self._send_tracked(identity, "echo", message, data)

    def _on_status(self, identity: bytes, message: Status, payloads: dict[str, memoryview]) -> None:
        self._send(
            identity,
            ServerStatus(
                message.request_id,
                queued=len(self.queue),
                running=self.worker.running,
                completed=self._completed,
                uptime=round(time.monotonic() - self._started_at, 3),
                workers=self.worker.describe(),
            ),
        )

    # ---- the worker ----------------------------------------------------------------------------------------------
    def _start_next_job(self) -> None:
        started = False
        while self.worker.has_free_slot and not self._stop.is_set():
            job = self.queue.pop()
            if job is None:
                break
            job.state = stages.RUNNING
            job.started_at = time.monotonic()
            self.worker.submit(job)
            started = True
        if started:
            self._send_queue_positions()

    def _send_worker_events(self) -> None:
        while True:
            try:
                event = self.worker_events.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply_worker_event(event)
            except Exception as error:  # a bug, or memory running out while a result is stored: keep serving
                log.exception("job %s: could not pass on its %r event", event.job.job_id, event.kind)
                if event.kind in ("done", "cancelled", "failed"):  # the job ends here: its client must hear of it
                    self._end_job_with_error(event.job, error)

    def _end_job_with_error(self, job: Job, error: Exception) -> None:
        job.state = stages.FAILED
        message = f"The job finished, but the server could not pass on its outcome ({type(error).__name__}: {error})."
        if self.results.has(job.job_id):  # stored before the send failed
            hint = f"Its result is stored: fetch job {job.job_id} to get it."
        else:
            hint = "Generate again; if it happens again, the server's log has the details."
        try:
            self._send(job.identity, Error(codes.JOB_FAILED, message, job_id=job.job_id, hint=hint))
        except Exception:
            log.exception("job %s: could not send its failure either", job.job_id)
        self._forget(job)

    def _apply_worker_event(self, event: Any) -> None:
        """Pass a worker's event on to the job's client, and record what it changes."""
        job, data = event.job, event.data
        if event.kind == "progress":
            self._send(job.identity, Progress(job.job_id, **data))
        elif event.kind == "preview":
            png = data["png"]
            preview = Progress(
                job.job_id,
                "denoise",
                data["step"],
                job.params.num_inference_steps,
                time.monotonic() - (job.started_at or job.submitted_at),
                preview=ArraySpec((len(png),)),
            )
            self._send(job.identity, preview, png)
        elif event.kind == "done":
            job.state = stages.DONE
            self._completed += 1
            data["metadata"]["job"] = {**self._job_record(job), "completed": self._completed}
            if job.reference_sampling is not None:
                record_client_sampling(data["metadata"], job.reference_sampling)
            # On disk first, then sent (`_send_saved_results`): if the client is gone, the result waits for a Fetch,
            # also across restarts. The job is kept meanwhile, so that a fetch redirects the result.
            self.result_saves.start(job, data["frames"], data["fps"], data["metadata"])
        elif event.kind == "cancelled":
            job.state = stages.CANCELLED
            self._send(job.identity, Cancelled(job.job_id, data["reason"]))
            self._forget(job)
        elif event.kind == "failed":
            job.state = stages.FAILED
            self._send(job.identity, Error(job_id=job.job_id, **data))
            self._forget(job)

    def _send_saved_results(self) -> None:
        """Send the results of finished jobs that have been stored, in the order the jobs finished."""
        for save in self.result_saves.take_finished_or_overdue(SAVE_DEADLINE_S):
            self._send_saved_or_fail(save)

    def _send_saved_or_fail(self, save: ResultSave) -> None:
        try:
            self._send_saved(save)
        except Exception as error:  # a bug, or memory running out: that job fails, the server keeps serving
            log.exception("job %s: could not store or send its result", save.job.job_id)
            self._end_job_with_error(save.job, error)

    def _send_saved(self, save: ResultSave) -> None:
        job = save.job
        if not save.future.done():  # a disk that hangs, or a shutdown that could not wait longer for it
            log.error("job %s: its result is still being stored; it is sent, perhaps not kept", job.job_id)
        elif isinstance(save.future.exception(), OSError):  # a full disk: the connected client still gets the frames
            error = save.future.exception()
            log.error("job %s: its result could not be stored (%s); it is sent, not kept", job.job_id, error)
        elif save.future.exception() is not None:
            raise save.future.exception()
        self._send_result(job.identity, job.job_id, save.frames, save.fps, save.metadata)
        self._forget(job)

    def _job_record(self, job: Job) -> dict[str, Any]:
        """Server-side facts about a job, added to its result metadata."""
        started = job.started_at or job.submitted_at
        return {
            "job_id": job.job_id,
            "sequence": job.sequence,
            "preset": job.preset,
            "reference_fps": job.reference_fps,
            "queued_s": round(started - job.submitted_at, 4),
            "run_s": round(time.monotonic() - started, 4),
            "server_version": SERVER_VERSION,
        }

    def _forget(self, job: Job) -> None:
        self.jobs.pop(job.job_id, None)

    def _position(self, job: Job) -> int | None:
        """Jobs ahead of `job`, the running ones included; None once it runs."""
        position = self.queue.position(job)
        return None if position is None else position + self.worker.running

    def _send_queue_positions(self) -> None:
        for job in self.queue:
            self._send(job.identity, Queued(job.job_id, self._position(job)))

    # ---- sending -------------------------------------------------------------------------------------------------
    def _send_result(self, identity: bytes, job_id: str, frames: np.ndarray, fps: float, metadata: dict) -> None:
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        self._send_tracked(identity, job_id, Result(job_id, ArraySpec(frames.shape), float(fps), metadata), frames.data)

    def _send_tracked(self, identity: bytes, what: str, message: Message, payload: Any) -> None:
        """Send a large message, counted in `sends_in_flight` as `what` (its job id, or "echo") until it has left."""
        tracker = self._send(identity, message, payload, track=True)
        if tracker is not None:
            self.sends_in_flight.add(identity, what, tracker)

    def _send_unknown_job(self, identity: bytes, request_id: str, job_id: str) -> None:
        self._send(
            identity,
            Error(
                codes.UNKNOWN_JOB,
                f"No job {job_id!r} on this server.",
                hint="Its result may have been acknowledged already or expired after the retention time.",
                field="job_id",
                request_id=request_id,
                job_id=job_id,
            ),
        )

    def _send(
        self, identity: bytes, message: Message, payload: Any = None, track: bool = False
    ) -> zmq.MessageTracker | None:
        """Send `message` to `identity`; with `track`, return the tracker that says when it has left."""
        try:
            return self.socket.send_multipart([identity, *encode(message, payload)], copy=False, track=track)
        except zmq.ZMQError as error:  # the peer is gone; results stay on disk for a later Fetch
            log.warning("could not send %s: %s", message.TYPE, error)
            return None


def client_key(frames: list[zmq.Frame]) -> bytes:
    """Who sent `frames`, for the queue's fairness: the CurveZMQ client key (the "User-Id" the authenticator set),
    else the connection's routing id.

    The Hello's client name is not used: every Blender or CLI instance sends the same one, so it would merge clients.
    """
    if len(frames) > 1:
        try:
            return frames[1].get("User-Id").encode()
        except (zmq.ZMQError, AttributeError):  # no ZAP user id on this connection (no keys)
            pass
    return frames[0].bytes


def serve(
    config: ServerConfig, ready: Callable[[Server], None] | None = None, listener: Listener | None = None
) -> None:
    """Run a server in this thread until SIGINT, SIGTERM or the end of `config.parent_pid`.

    Args:
        config: what to serve and how.
        ready: called with the server once it listens (after the state file is written).
        listener: a socket already bound by `open_listener(config)`, so the caller could announce the endpoint before
            the model loads; None binds here. Either way the server closes it when it stops.
    """
    server = Server(config, listener=listener)
    previous = {sig: signal.signal(sig, lambda *_: server.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_ready(server: Server) -> None:
        if config.state_file is not None:
            record = state_record(
                server.endpoint, SERVER_VERSION, config.preset, server.device, config.results_dir, config.parent_pid
            )
            write_state_file(config.state_file, record)
        if ready is not None:
            ready(server)

    try:
        server.run(ready=on_ready)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if config.state_file is not None:
            remove_state_file(config.state_file, os.getpid())
