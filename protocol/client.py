"""MotionClone protocol client: DEALER sockets on a background thread, events out through a queue. No bpy, no torch.

Blender's UI thread (or a script, or the CLI) calls the non-blocking `submit`, `cancel`, `fetch` and `ack`, and drains
`poll_events()` from a timer. The socket lives only on the client's I/O thread, because zmq sockets are not
thread-safe; commands reach that thread through a `queue.Queue`. Scripts may use the blocking helpers
`wait_connected`, `run_job` and `fetch_result` instead (`blocking.py`): they read the same event queue, so use them
or `poll_events`, not both. The I/O thread's side lives in `connection.py`, events and commands in `events.py`.

Connection life (the zguide's lazy pirate):

    start -> new socket, Hello -> Welcome: Event("connected", message=Welcome)
    a Ping every heartbeat_interval, on the job socket and on a heartbeat socket of its own (whose Pong does not wait
        behind a large reference or result on a slow link); any message from the server counts as a sign of life
    nothing heard for dead_after (or nothing on the job socket for 10 x dead_after, at least 60 s, or while a large
        reference or result may be on its way what it takes at 256 KiB/s: connection.MIN_LINK_BYTES_PER_S) ->
        Event("disconnected") once, close the socket with linger=0, wait a back-off that
        doubles from heartbeat_interval up to max_backoff, then a new socket and Hello again
    no Welcome within dead_after of an attempt, and none since the last one -> Event("unreachable") once, then the
        same back-off and retries (a client that never reached its server hears of it too, not only a lost one)
    Welcome again -> Event("connected"), then a Fetch for every job still followed (accepted, or asked for with
        `fetch`, and not yet finished) so that its progress and result come to the new connection

Submits that were sent but not accepted when a connection died are failed with an "error" event whose code is
`BACKEND_UNAVAILABLE`; they are never resent, so a job never runs twice. Submits and Acks made while no connection is
confirmed wait for the next Welcome; Submits still waiting when a connection attempt fails are failed the same way.

Events: see `events.py`. Pong only refreshes liveness.
"""

import math
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .blocking import BlockingCalls
from .codec import Buffer, Limits, encode
from .connection import POLL_INTERVAL, Connection, Settings, Shared
from .endpoints import endpoint_problem
from .errors import BACKEND_UNAVAILABLE, BackendUnavailable, ProtocolError
from .events import EVENT_KINDS, Command, Event, echo_bytes, new_id
from .keys import curve_client_keys
from .messages import Ack, ArraySpec, Cancel, Echo, Error, Fetch, Status, Submit, Welcome

__all__ = ["DEFAULT_LIMITS", "EVENT_KINDS", "POLL_INTERVAL", "Client", "Condition", "Event"]

# What a client accepts from a server unless told otherwise (the codec's defaults).
DEFAULT_LIMITS = Limits()

# Blocking waits sleep in slices this long so that they notice a closed client.
_WAIT_SLICE = 0.1


@dataclass(frozen=True)
class Condition:
    """SparseCtrl condition images for a job: keyframes ("rgb") or line drawings ("scribble").

    Attributes:
        kind: "rgb" or "scribble".
        images: uint8 (count, height, width, 3), one image per entry of `frames`, any size (the server resizes them
            to the job's size the way it resizes the reference).
        frames: the output frames the images stand on, strictly increasing (default: the first frame).
    """

    kind: str
    images: np.ndarray
    frames: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"`condition.kind` must be a name such as 'rgb' or 'scribble', got {self.kind!r}")
        object.__setattr__(self, "images", _check_frames(self.images, "condition.images"))
        frames = tuple(self.frames)
        if not frames or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in frames):
            raise ValueError(f"`condition.frames` must be frame numbers >= 0, got {self.frames!r}")
        if len(frames) != len(self.images):
            raise ValueError(f"`condition` has {len(self.images)} images for {len(frames)} frames {list(frames)}")
        object.__setattr__(self, "frames", frames)


class Client(BlockingCalls):
    """A connection to a MotionClone backend, kept alive on a background thread.

    Example:
        with Client("tcp://127.0.0.1:5555") as client:
            client.wait_connected(timeout=10.0)
            event = client.run_job(frames, {"prompt": "a fox running"}, on_event=print)
            video = event.frames()
            client.ack(event.job_id)
    """

    def __init__(
        self,
        endpoint: str,
        *,
        server_public_key: bytes | None = None,
        client_secret_key: bytes | None = None,
        client_public_key: bytes | None = None,
        client_name: str = "",
        heartbeat_interval: float = 1.0,
        dead_after: float = 3.0,
        max_backoff: float = 8.0,
        limits: Limits = DEFAULT_LIMITS,
        context: zmq.Context | None = None,
    ) -> None:
        """Set up a client; nothing connects until `start()`.

        Args:
            endpoint: the server's ZeroMQ endpoint, e.g. "tcp://127.0.0.1:5555".
            server_public_key: the server's CurveZMQ public key (Z85, 40 bytes; `keys.load_public_key`). Set it to
                encrypt and authenticate the connection; None (default) connects in plain text.
            client_secret_key: this client's CurveZMQ secret key. None with a server key: a fresh key pair is made,
                which only a server that allows any client accepts.
            client_public_key: this client's CurveZMQ public key; derived from the secret key when None.
            client_name: sent in Hello, for the server's logs.
            heartbeat_interval: seconds between Pings; also the first reconnect back-off.
            dead_after: seconds without any message from the server before the connection counts as dead. Must be
                more than heartbeat_interval. One message may take longer to arrive: the heartbeat has a connection of
                its own, and the job connection is given 10 x dead_after (at least 60 s) without a message, or, while
                a large reference or result may be on its way, what it takes at 256 KiB/s.
            max_backoff: the longest wait between reconnect attempts, in seconds.
            limits: what this client accepts from the server (sizes checked before anything is allocated).
            context: the zmq context to use; None (default) makes one, which `close()` terminates.

        Raises:
            ValueError: an argument is out of range; the message names it.
        """
        problem = endpoint_problem(endpoint)
        if problem is not None:
            raise ValueError(f"`endpoint` {problem}")
        for name, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("dead_after", dead_after),
            ("max_backoff", max_backoff),
        ):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"`{name}` must be a positive number of seconds, got {value!r}")
        if dead_after <= heartbeat_interval:
            raise ValueError(
                f"`dead_after` ({dead_after}) must be more than `heartbeat_interval` ({heartbeat_interval}), or one "
                "late Pong would count as a dead server"
            )
        if max_backoff < heartbeat_interval:
            raise ValueError(
                f"`max_backoff` ({max_backoff}) must be at least `heartbeat_interval` ({heartbeat_interval})"
            )
        self._endpoint = endpoint
        self._limits = limits
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._shared = Shared()
        self._connection = Connection(
            Settings(
                endpoint=endpoint,
                curve=curve_client_keys(server_public_key, client_secret_key, client_public_key),
                client_name=client_name,
                heartbeat_interval=float(heartbeat_interval),
                dead_after=float(dead_after),
                max_backoff=float(max_backoff),
                limits=limits,
            ),
            self._shared,
            self._context,
        )
        # Caller side only (under the shared lock): the thread, and whether close() was called.
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> "Client":
        """Start the I/O thread, which connects and sends Hello. Calling it again does nothing.

        Returns:
            The client itself, for `client = Client(...).start()`.

        Raises:
            RuntimeError: the client was closed.
        """
        with self._shared.lock:
            if self._closed:
                raise RuntimeError("this client is closed; make a new Client")
            if self._thread is None:
                self._thread = threading.Thread(target=self._connection.run, name="motionclone-client", daemon=True)
                self._thread.start()
        return self

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Keep the I/O thread idle for the block: it finishes its current wake-up (at most POLL_INTERVAL) and then
        waits, running no Python, until the block ends. Nothing is sent or received meanwhile, and the heartbeat
        deadlines move on by the time it was quiet. For short work that must not share the interpreter with another
        thread: Blender 4.2 has crashed rendering while this thread ran."""
        with self._shared.lock:
            self._shared.quiet_waiters += 1
        try:
            self._shared.quiet.acquire()
        finally:
            with self._shared.lock:
                self._shared.quiet_waiters -= 1
        try:
            yield
        finally:
            self._shared.quiet.release()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the I/O thread, close the sockets (a connected one gets a moment to send what was queued last, such as
        an Ack), and terminate the context if this client made it.

        Safe to call more than once, and from any thread but the client's own. A connected client emits a last
        "disconnected" event; submits not yet accepted get "error" events.

        Args:
            timeout: how long to wait for the I/O thread, in seconds. It notices the stop within POLL_INTERVAL.
        """
        with self._shared.lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._shared.stop.set()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                # term() would block until the thread closed its sockets: the thread terminates the context itself
                # once it has (it may be held quiet by this very caller).
                with self._shared.lock:
                    if not self._shared.exited:
                        self._shared.term_context_on_exit = self._own_context
                        return
        if self._own_context:
            self._context.term()

    def __enter__(self) -> "Client":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- state ---------------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The server endpoint this client connects to."""
        return self._endpoint

    @property
    def connected(self) -> bool:
        """True between a Welcome and the next lost connection."""
        return self._shared.is_connected()

    @property
    def server_info(self) -> Welcome | None:
        """The Welcome of the current connection; None while not connected."""
        with self._shared.lock:
            return self._shared.server_info

    @property
    def active_jobs(self) -> frozenset[str]:
        """Job ids this client follows: accepted (or fetched) and not yet finished."""
        with self._shared.lock:
            return frozenset(self._shared.active_jobs)

    # ---- requests (any thread, never block) ---------------------------------------------------------------------
    def submit(
        self,
        frames: np.ndarray,
        params: dict[str, Any],
        fps: float = 8.0,
        preset: str | None = None,
        condition: Condition | None = None,
        reference_sampling: dict[str, Any] | None = None,
    ) -> str:
        """Queue a job. Answered by an "accepted" event (with the job id) or an "error" event, both with the request id.

        The frames are sent as they are, without a copy when they are already C-contiguous: do not change the array
        after this call.

        Args:
            frames: the reference video, uint8 of shape (frames, height, width, 3).
            params: MotionClone parameters by name (docs/configuration.md); values must be msgpack-able.
            fps: the reference clip's frame rate.
            preset: a model preset the server loaded; None for the server's default.
            condition: SparseCtrl condition images for image- or sketch-to-video (sent as they are, like `frames`);
                the server must offer their kind (`server_info.limits["condition_types"]`).
            reference_sampling: when `frames` were taken from a longer clip: {"frame_sampling": rule, "frame_step":
                N, "indices": [the index of each frame sent in that clip]}, recorded in the result's metadata.

        Returns:
            The request id.

        Raises:
            ValueError: an argument is malformed; the message names it.
            RuntimeError: the client is closed.
        """
        frames = _check_frames(frames)
        if reference_sampling is not None and not isinstance(reference_sampling, dict):
            raise ValueError(f"`reference_sampling` must be a dict or None, got {type(reference_sampling).__name__}")
        if condition is not None and not isinstance(condition, Condition):
            raise ValueError(f"`condition` must be a Condition or None, got {type(condition).__name__}")
        if not isinstance(params, dict) or not all(isinstance(key, str) for key in params):
            raise ValueError(f"`params` must be a dict with string keys, got {type(params).__name__}")
        if not isinstance(fps, int | float) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"`fps` must be a positive number, got {fps!r}")
        if preset is not None and (not isinstance(preset, str) or not preset):
            raise ValueError(f"`preset` must be a preset name or None, got {preset!r}")
        message = Submit(
            request_id=new_id(),
            params=dict(params),
            reference=ArraySpec(tuple(int(size) for size in frames.shape)),
            reference_fps=float(fps),
            preset=preset,
            condition=None if condition is None else ArraySpec(condition.images.shape),
            condition_frames=None if condition is None else list(condition.frames),
            condition_type=None if condition is None else condition.kind,
            reference_sampling=None if reference_sampling is None else dict(reference_sampling),
        )
        # Encode here, not on the I/O thread, so that unpackable params raise in the caller's thread.
        try:
            parts = encode(message, frames, None if condition is None else condition.images)
        except (TypeError, ValueError, OverflowError, ProtocolError) as error:
            raise ValueError(f"`params` must hold numbers, strings, lists and maps only: {error}") from error
        self._check_header_size(parts[0], "params")
        self._check_size(parts, f"a reference of shape {list(frames.shape)}", "frames")
        self._enqueue(Command(message, parts))
        return message.request_id

    def cancel(self, job_id: str) -> str:
        """Ask the server to stop a job; a "cancelled" event follows. Repeated after a reconnect until answered.

        Args:
            job_id: the job id from the "accepted" event.

        Returns:
            The request id.
        """
        return self._enqueue(Command(Cancel(request_id=new_id(), job_id=_check_job_id(job_id))))

    def fetch(self, job_id: str) -> str:
        """Ask for a job by id: a finished job's "result" comes again; a running one is re-attached to this client
        (a "job_status" event, then its progress), and so is one whose result the server is still storing (a
        "job_status" event with state "done", then the "result"). The job is followed from now on, across reconnects.
        Without a connection the Fetch goes out on the next one, under a new request id: match its replies by job id.

        Args:
            job_id: the job id.

        Returns:
            The request id.
        """
        return self._enqueue(Command(Fetch(request_id=new_id(), job_id=_check_job_id(job_id))))

    def ack(self, job_id: str) -> str:
        """Tell the server the result is stored, so it may delete it. A "job_status" event answers.

        Args:
            job_id: the job id.

        Returns:
            The request id.
        """
        return self._enqueue(Command(Ack(request_id=new_id(), job_id=_check_job_id(job_id))))

    def status(self) -> str:
        """Ask how busy the server is: a "server_status" event answers (queued and running jobs, workers). Only a
        connected client sends it; without a connection it is dropped, and nothing answers it.

        Returns:
            The request id.
        """
        return self._enqueue(Command(Status(request_id=new_id())))

    def echo(self, data: bytes | memoryview | np.ndarray) -> str:
        """Send bytes that the server sends straight back: an "echo" event with the same request id and the bytes as
        its payload. For "Test connection" and for measuring the link (`measure_round_trip` waits for the answer).

        The bytes go out as they are, without a copy: do not change `data` after this call. Only a connected client
        sends an Echo; without a connection it is dropped, and nothing answers it.

        Args:
            data: the bytes to send, as one 1-D uint8 part (an array is sent as its raw C-order bytes). Empty data
                sends an Echo without a part, the smallest message the server answers.

        Returns:
            The request id.

        Raises:
            ValueError: `data` is not a contiguous buffer, or makes a message larger than this client's limit or the
                connected server's `max_message_bytes`.
            RuntimeError: the client is closed.
        """
        view = echo_bytes(data)
        spec = ArraySpec((view.nbytes,)) if view.nbytes else None
        message = Echo(request_id=new_id(), data=spec)
        parts = encode(message, view if spec is not None else None)
        self._check_size(parts, f"an Echo of {view.nbytes} bytes", "data")
        return self._enqueue(Command(message, parts))

    def max_message_bytes(self) -> int:
        """The largest message this client sends: its own limit, or the connected server's `max_message_bytes` from
        the Welcome when that is lower (libzmq drops an oversized part on arrival with no answer at all)."""
        limit = self._limits.max_message_bytes
        info = self.server_info
        if info is not None and isinstance(info.limits.get("max_message_bytes"), int):
            limit = min(limit, info.limits["max_message_bytes"])
        return limit

    def _check_header_size(self, header: Buffer, name: str) -> None:
        """Refuse a header over the connected server's `max_header_bytes` (or this client's own): the server could
        not read the request id of one, so no answer would name the request."""
        limit = self._limits.max_header_bytes
        info = self.server_info
        if info is not None and isinstance(info.limits.get("max_header_bytes"), int):
            limit = min(limit, info.limits["max_header_bytes"])
        size = memoryview(header).nbytes
        if size > limit:
            raise ValueError(f"`{name}`: the request's header is {size} bytes; the limit is {limit}")

    def _check_size(self, parts: list[Buffer], what: str, name: str) -> None:
        """Refuse a message over `max_message_bytes()`."""
        limit = self.max_message_bytes()
        size = sum(memoryview(part).nbytes for part in parts)
        if size > limit:
            raise ValueError(f"`{name}`: {what} makes a {size}-byte message; the limit is {limit}")

    # ---- events --------------------------------------------------------------------------------------------------
    def poll_events(self, max_events: int | None = None) -> list[Event]:
        """Take the events that have arrived, without waiting (what Blender's timer calls).

        Args:
            max_events: take at most this many; None takes all.

        Returns:
            The events, oldest first; an empty list when none arrived.
        """
        events: list[Event] = []
        while max_events is None or len(events) < max_events:
            try:
                events.append(self._shared.events.get_nowait())
            except queue.Empty:
                break
        return events

    def next_event(self, timeout: float | None = None) -> Event | None:
        """Wait for the next event.

        Args:
            timeout: seconds to wait; None waits until an event comes or the client is closed.

        Returns:
            The event, or None after `timeout` or once the client is closed and every event has been taken.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            wait = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            try:
                return self._shared.events.get(timeout=max(0.0, wait))
            except queue.Empty:
                if self._finished() and self._shared.events.empty():
                    return None
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    # ---- internals shared with caller threads --------------------------------------------------------------------
    def _enqueue(self, command: Command) -> str:
        # Checked and queued under the lock: the I/O thread's last look at the queue comes after `_closed` is set.
        with self._shared.lock:
            if self._closed:
                raise RuntimeError("this client is closed; make a new Client")
            self._shared.commands.put(command)
        return command.message.request_id

    def _check_started(self) -> None:
        with self._shared.lock:
            if self._thread is None and not self._closed:
                raise RuntimeError("call start() first (or use the client in a `with` block)")

    def _wait_event(self, deadline: float | None) -> Event | None:
        """The next event, or None once `deadline` (time.monotonic(); None: no limit) has passed.

        Raises:
            BackendUnavailable: the client is closed and every event has been taken, so none can come.
        """
        event = self.next_event(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if event is None and self._finished():
            raise BackendUnavailable(f"the client for {self._endpoint} has stopped (closed, or its I/O thread ended)")
        return event

    def _finished(self) -> bool:
        """True once no more events can come: the I/O thread has ended (or was never started and never will be)."""
        with self._shared.lock:
            thread, closed = self._thread, self._closed
        return closed if thread is None else not thread.is_alive()

    def _refuses_connection(self, event: Event) -> bool:
        """Whether an error event means this client cannot connect (the Hello was refused, or connect() failed)."""
        with self._shared.lock:
            hello_id = self._shared.hello_request_id
        if event.request_id is not None:
            return event.request_id == hello_id
        return event.job_id is None and isinstance(event.message, Error) and event.message.code == BACKEND_UNAVAILABLE


def _check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Frames as a C-contiguous uint8 (F, H, W, 3) array; a copy only when they are not contiguous."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        kind = f"dtype {frames.dtype}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"`{name}` must be a uint8 numpy array, got {kind}")
    if frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        raise ValueError(f"`{name}` must have shape (frames, height, width, 3), got {frames.shape}")
    return np.ascontiguousarray(frames)


def _check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"`job_id` must be a non-empty string, got {job_id!r}")
    return job_id
