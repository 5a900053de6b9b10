"""MotionClone protocol client: one DEALER socket on a background thread, events out through a queue. No bpy, no torch.

Blender's UI thread (or a script, or the CLI) calls the non-blocking `submit`, `cancel`, `fetch` and `ack`, and drains
`poll_events()` from a timer. The socket lives only on the client's I/O thread, because zmq sockets are not
thread-safe; commands reach that thread through a `queue.Queue`. Scripts may use the blocking helpers
`wait_connected`, `run_job` and `fetch_result` instead: they read the same event queue, so use them or
`poll_events`, not both.

Connection life (the zguide's lazy pirate):

    start -> new socket, Hello -> Welcome: Event("connected", message=Welcome)
    a Ping every heartbeat_interval; any message from the server counts as a sign of life
    nothing heard for dead_after -> Event("disconnected") once, close the socket with linger=0, wait a back-off that
        doubles from heartbeat_interval up to max_backoff, then a new socket and Hello again
    no Welcome within dead_after of an attempt, and none since the last one -> Event("unreachable") once, then the
        same back-off and retries (a client that never reached its server hears of it too, not only a lost one)
    Welcome again -> Event("connected"), then a Fetch for every job still followed (accepted, or asked for with
        `fetch`, and not yet finished) so that its progress and result come to the new connection

Submits that were sent but not accepted when a connection died are failed with an "error" event whose code is
`BACKEND_UNAVAILABLE`; they are never resent, so a job never runs twice. Submits and Acks made while no connection is
confirmed wait for the next Welcome; Submits still waiting when a connection attempt fails are failed the same way.

Events (`Event.kind`): "connected" (carries the Welcome; there is no separate "welcome" event), "disconnected",
"unreachable", and
one per server message: "accepted", "queued", "progress", "result", "cancelled", "job_status", "error" (a server
message type added to the schema later comes through under its own TYPE name). Pong only refreshes liveness.
"""

import math
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .codec import Buffer, Limits, decode, encode
from .errors import (
    BACKEND_UNAVAILABLE,
    BAD_MESSAGE,
    CLIENT_ERROR,
    JOB_FAILED,
    BackendUnavailable,
    JobCancelledError,
    JobFailed,
    ProtocolError,
)
from .keys import curve_client_keys
from .messages import (
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
    Result,
    Submit,
    Welcome,
)

# Codes of the Error messages the client makes itself; a server never sends them.

EVENT_KINDS = (
    "connected",
    "disconnected",
    "accepted",
    "queued",
    "progress",
    "result",
    "cancelled",
    "job_status",
    "error",
)

# What a client accepts from a server unless told otherwise (the codec's defaults).
DEFAULT_LIMITS = Limits()

# The I/O thread waits this long for the socket, then drains the command queue, so a command waits at most this
# long. 20 ms is below what a user notices and costs no measurable CPU; an inproc PAIR wake-up socket would save the
# wait but adds a second socket, its own shutdown order, and nothing a user would notice.
POLL_INTERVAL = 0.02
# On close, queued messages get this long to leave a connected socket.
SHUTDOWN_LINGER_MS = 500

# Blocking waits sleep in slices this long so that they notice a closed client.
_WAIT_SLICE = 0.1

# Messages read per wake-up before commands get their turn (a flood of progress must not starve a Cancel).
_MAX_RECEIVE_BATCH = 100

# Messages only a client sends. Any other type the codec knows is passed on as an event named after its TYPE.
_CLIENT_MESSAGES = (Hello, Submit, Cancel, Fetch, Ack, Ping)

# JobStatus states after which a job is finished without a Result.
_ENDED_STATES = ("failed", "cancelled")


@dataclass(frozen=True)
class Event:
    """Something that happened on the connection, as seen by the caller.

    Attributes:
        kind: one of EVENT_KINDS.
        message: the server's message (for "connected": the Welcome; for "disconnected": None).
        payload: the raw part, copied out of the zmq frame: a Result's frames, or a Progress preview's PNG bytes.
        job_id: the job this event belongs to, when known.
        request_id: the request this event answers, when it answers one.
    """

    kind: str
    message: Message | None = None
    payload: bytes | None = None
    job_id: str | None = None
    request_id: str | None = None

    def frames(self) -> np.ndarray:
        """The result frames of a "result" event.

        Returns:
            A read-only uint8 array of the Result's declared shape (F, H, W, 3), viewing `payload` without a copy.
            Call `.copy()` for a writable array.

        Raises:
            ValueError: this is not a "result" event.
        """
        if not isinstance(self.message, Result) or self.payload is None:
            raise ValueError(f"`frames()` needs a result event, this is a {self.kind!r} event")
        spec = self.message.frames
        return np.frombuffer(self.payload, dtype=np.dtype(spec.dtype)).reshape(spec.shape)


@dataclass(frozen=True)
class _Command:
    """A request from a caller's thread to the I/O thread. `parts` are the encoded frames, when already encoded."""

    message: Message
    parts: list[Buffer] | None = None


class Client:
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
                more than heartbeat_interval.
            max_backoff: the longest wait between reconnect attempts, in seconds.
            limits: what this client accepts from the server (sizes checked before anything is allocated).
            context: the zmq context to use; None (default) makes one, which `close()` terminates.

        Raises:
            ValueError: an argument is out of range; the message names it.
        """
        if not isinstance(endpoint, str) or "://" not in endpoint:
            raise ValueError(f"`endpoint` must look like 'tcp://HOST:PORT', got {endpoint!r}")
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
        self._curve = curve_client_keys(server_public_key, client_secret_key, client_public_key)
        self._client_name = client_name
        self._heartbeat_interval = float(heartbeat_interval)
        self._dead_after = float(dead_after)
        self._max_backoff = float(max_backoff)
        self._limits = limits
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context

        # Shared between threads: the queues are thread-safe; the rest is guarded by _lock.
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._events: queue.Queue[Event] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._connected = False
        self._server_info: Welcome | None = None
        self._active_jobs: set[str] = set()
        self._hello_request_id: str | None = None

        # Owned by the I/O thread alone.
        self._socket: zmq.Socket | None = None
        self._last_heard = 0.0
        self._next_ping = 0.0
        self._reconnect_at = 0.0
        self._backoff = self._heartbeat_interval
        self._outbox: list[_Command] = []
        self._pending_submits: set[str] = set()
        self._cancel_requested: set[str] = set()
        self._unreachable_told = False  # "unreachable" was emitted since the last Welcome

    # ---- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> "Client":
        """Start the I/O thread, which connects and sends Hello. Calling it again does nothing.

        Returns:
            The client itself, for `client = Client(...).start()`.

        Raises:
            RuntimeError: the client was closed.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("this client is closed; make a new Client")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="motionclone-client", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stop the I/O thread, close the socket (linger=0), and terminate the context if this client made it.

        Safe to call more than once, and from any thread but the client's own. A connected client emits a last
        "disconnected" event; submits not yet accepted get "error" events.

        Args:
            timeout: how long to wait for the I/O thread, in seconds. It notices the stop within POLL_INTERVAL.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                # term() would block until the thread closed its socket; the thread does that on its own way out.
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
        with self._lock:
            return self._connected

    @property
    def server_info(self) -> Welcome | None:
        """The Welcome of the current connection; None while not connected."""
        with self._lock:
            return self._server_info

    @property
    def active_jobs(self) -> frozenset[str]:
        """Job ids this client follows: accepted (or fetched) and not yet finished."""
        with self._lock:
            return frozenset(self._active_jobs)

    # ---- requests (any thread, never block) ---------------------------------------------------------------------
    def submit(self, frames: np.ndarray, params: dict[str, Any], fps: float = 8.0, preset: str | None = None) -> str:
        """Queue a job. Answered by an "accepted" event (with the job id) or an "error" event, both with the request id.

        The frames are sent as they are, without a copy when they are already C-contiguous: do not change the array
        after this call.

        Args:
            frames: the reference video, uint8 of shape (frames, height, width, 3).
            params: MotionClone parameters by name (docs/configuration.md); values must be msgpack-able.
            fps: the reference clip's frame rate.
            preset: a model preset the server loaded; None for the server's default.

        Returns:
            The request id.

        Raises:
            ValueError: an argument is malformed; the message names it.
            RuntimeError: the client is closed.
        """
        frames = _check_frames(frames)
        if not isinstance(params, dict) or not all(isinstance(key, str) for key in params):
            raise ValueError(f"`params` must be a dict with string keys, got {type(params).__name__}")
        if not isinstance(fps, int | float) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"`fps` must be a positive number, got {fps!r}")
        if preset is not None and (not isinstance(preset, str) or not preset):
            raise ValueError(f"`preset` must be a preset name or None, got {preset!r}")
        message = Submit(
            request_id=_new_id(),
            params=dict(params),
            reference=ArraySpec(tuple(int(size) for size in frames.shape)),
            reference_fps=float(fps),
            preset=preset,
        )
        # Encode here, not on the I/O thread, so that unpackable params raise in the caller's thread.
        try:
            parts = encode(message, frames)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"`params` must hold numbers, strings, lists and maps only: {error}") from error
        self._check_size(parts, f"a reference of shape {list(frames.shape)}", "frames")
        self._enqueue(_Command(message, parts))
        return message.request_id

    def cancel(self, job_id: str) -> str:
        """Ask the server to stop a job; a "cancelled" event follows. Repeated after a reconnect until answered.

        Args:
            job_id: the job id from the "accepted" event.

        Returns:
            The request id.
        """
        return self._enqueue(_Command(Cancel(request_id=_new_id(), job_id=_check_job_id(job_id))))

    def fetch(self, job_id: str) -> str:
        """Ask for a job by id: a finished job's "result" comes again; a running one is re-attached to this client
        (a "job_status" event, then its progress). The job is followed from now on, across reconnects. Without a
        connection the Fetch goes out on the next one, under a new request id: match its replies by job id.

        Args:
            job_id: the job id.

        Returns:
            The request id.
        """
        return self._enqueue(_Command(Fetch(request_id=_new_id(), job_id=_check_job_id(job_id))))

    def ack(self, job_id: str) -> str:
        """Tell the server the result is stored, so it may delete it. A "job_status" event answers.

        Args:
            job_id: the job id.

        Returns:
            The request id.
        """
        return self._enqueue(_Command(Ack(request_id=_new_id(), job_id=_check_job_id(job_id))))

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
        view = _echo_bytes(data)
        spec = ArraySpec((view.nbytes,)) if view.nbytes else None
        message = Echo(request_id=_new_id(), data=spec)
        parts = encode(message, view if spec is not None else None)
        self._check_size(parts, f"an Echo of {view.nbytes} bytes", "data")
        return self._enqueue(_Command(message, parts))

    def _check_size(self, parts: list[Buffer], what: str, name: str) -> None:
        """Refuse a message over this client's or the server's `max_message_bytes`: libzmq would drop an oversized
        part on arrival with no answer at all."""
        limit = self._limits.max_message_bytes
        info = self.server_info
        if info is not None and isinstance(info.limits.get("max_message_bytes"), int):
            limit = min(limit, info.limits["max_message_bytes"])
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
                events.append(self._events.get_nowait())
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
                return self._events.get(timeout=max(0.0, wait))
            except queue.Empty:
                if self._finished() and self._events.empty():
                    return None
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    # ---- blocking helpers for scripts and the CLI ---------------------------------------------------------------
    def wait_connected(self, timeout: float) -> Welcome:
        """Wait until the server has answered Hello. Takes (and drops) the events that arrive meanwhile.

        Args:
            timeout: seconds to wait.

        Returns:
            The server's Welcome.

        Raises:
            BackendUnavailable: no Welcome within `timeout`, the server refused the Hello, or the client is closed.
        """
        self._check_started()
        info = self.server_info
        if info is not None:
            return info
        deadline = time.monotonic() + timeout
        while True:
            event = self._wait_event(deadline)
            if event is None:
                raise BackendUnavailable(
                    f"no MotionClone backend answered at {self._endpoint} within {timeout:g} s. Check that "
                    "`motionclone serve` is running and reachable there, that the endpoint (host and port) is right, "
                    "and, with CurveZMQ, that the server public key is the server's current one."
                )
            if event.kind == "connected" and isinstance(event.message, Welcome):
                return event.message
            if event.kind == "error" and isinstance(event.message, Error) and self._refuses_connection(event):
                raise BackendUnavailable(
                    f"the backend at {self._endpoint} refused the connection: {event.message.message} "
                    f"{event.message.hint}".strip()
                )

    def run_job(
        self,
        frames: np.ndarray,
        params: dict[str, Any],
        fps: float = 8.0,
        preset: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        timeout: float | None = None,
    ) -> Event:
        """Submit a job and wait for its result. Takes (and drops) events of other jobs that arrive meanwhile.

        Args:
            frames, params, fps, preset: as for `submit`.
            on_event: called on this thread with every event of this job or request ("accepted", "queued",
                "progress", ... and the "result" last).
            timeout: seconds to wait for the result; None waits as long as the connection lives.

        Returns:
            The "result" event (`event.frames()` is the video; call `ack(event.job_id)` once it is stored).

        Raises:
            JobFailed: the server answered with an error for this job (code, message, hint, field).
            JobCancelledError: the job was cancelled.
            BackendUnavailable: no connection, or the connection died while the job ran; the message gives the job id,
                which `fetch_result` takes once the server is back.
            TimeoutError: no result within `timeout`; the job keeps running on the server.
            ValueError: as for `submit`.
        """
        self._check_started()
        request_id = self.submit(frames, params, fps=fps, preset=preset)
        job_id: str | None = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self._wait_event(deadline)
            if event is None:
                job = f"job {job_id}" if job_id else f"request {request_id} (not accepted yet)"
                raise TimeoutError(
                    f"{job} did not finish within {timeout:g} s; it keeps running on the server: cancel or fetch it "
                    "by job id"
                )
            # A "disconnected" queued after the Accepted happened while the job ran; before it, the request's own
            # "error" event reports the lost submit.
            if event.kind == "disconnected" and job_id is not None:
                raise BackendUnavailable(
                    f"lost the connection to {self._endpoint} while job {job_id} was running. If the server is still "
                    "up, the job goes on there and its result waits for a fetch by job id; a server that stopped or "
                    "restarted has dropped it (only finished results are kept).",
                    job_id,
                )
            if event.request_id != request_id and (job_id is None or event.job_id != job_id):
                continue
            if event.kind == "accepted":
                job_id = event.job_id
            if on_event is not None:
                on_event(event)
            if _job_outcome(event, job_id):
                return event

    def fetch_result(self, job_id: str, timeout: float | None) -> Event:
        """Fetch a job's result by id, waiting while it still runs ("job_status" replies mean keep waiting).

        Args:
            job_id: the job id (from "accepted", or from an earlier BackendUnavailable message).
            timeout: seconds to wait; None waits as long as the connection lives.

        Returns:
            The "result" event.

        Raises:
            JobFailed: the job failed, or the server does not know it (code "unknown_job": expired or never existed).
            JobCancelledError: the job was cancelled.
            BackendUnavailable: the connection died after the server answered the Fetch, or the client is closed.
            TimeoutError: no result within `timeout`.
        """
        self._check_started()
        request_id = self.fetch(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        # Until the server answers, a lost connection only delays the Fetch: it is sent again on the next Welcome.
        answered = False
        while True:
            event = self._wait_event(deadline)
            if event is None:
                raise TimeoutError(f"job {job_id} had no result within {timeout:g} s")
            if event.kind == "disconnected" and answered:
                raise BackendUnavailable(
                    f"lost the connection to {self._endpoint} while fetching job {job_id}; fetch it again later"
                )
            if event.request_id != request_id and event.job_id != job_id:
                continue
            answered = True
            if _job_outcome(event, job_id):
                return event

    def measure_round_trip(self, data: bytes | memoryview | np.ndarray, timeout: float) -> float:
        """Send `data` with `echo` and wait for it to come back. Takes (and drops) the events that arrive meanwhile.

        Waits for a connection first (within the same `timeout`). The time includes the client's own hand-over to its
        I/O thread, which takes up to POLL_INTERVAL, so it is what a caller of this client sees, not the bare network.

        Args:
            data: as for `echo`.
            timeout: seconds to wait for the connection and the answer together.

        Returns:
            Seconds from the send until the answer was taken from the event queue.

        Raises:
            BackendUnavailable: no connection within `timeout`, the connection died while waiting, or the client is
                closed.
            JobFailed: the server answered with an error (e.g. code "too_large"; field and hint as sent).
            ProtocolError: the bytes that came back differ from those sent.
            TimeoutError: no answer within `timeout`.
            ValueError: as for `echo`.
        """
        self._check_started()
        deadline = time.monotonic() + timeout
        self.wait_connected(timeout)
        sent = _echo_bytes(data)
        started = time.perf_counter()
        request_id = self.echo(sent)
        while True:
            event = self._wait_event(deadline)
            if event is None:
                raise TimeoutError(f"no echo from {self._endpoint} within {timeout:g} s")
            if event.kind == "disconnected":
                raise BackendUnavailable(f"lost the connection to {self._endpoint} while waiting for an echo")
            if event.request_id != request_id:
                continue
            elapsed = time.perf_counter() - started
            message = event.message
            if event.kind == "error" and isinstance(message, Error):
                if message.code == BACKEND_UNAVAILABLE:
                    raise BackendUnavailable(f"{message.message}. {message.hint}".strip())
                raise JobFailed(message.code, message.message, message.hint, message.field)
            if event.kind != "echo":
                continue
            if (event.payload or b"") != sent:
                received = len(event.payload or b"")
                raise ProtocolError(
                    BAD_MESSAGE, f"the echo of {sent.nbytes} bytes came back changed ({received} bytes)", "data"
                )
            return elapsed

    # ---- internals shared with caller threads --------------------------------------------------------------------
    def _enqueue(self, command: _Command) -> str:
        # Checked and queued under the lock: the I/O thread's last look at the queue comes after `_closed` is set.
        with self._lock:
            if self._closed:
                raise RuntimeError("this client is closed; make a new Client")
            self._commands.put(command)
        return command.message.request_id

    def _check_started(self) -> None:
        with self._lock:
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
        with self._lock:
            thread, closed = self._thread, self._closed
        return closed if thread is None else not thread.is_alive()

    def _refuses_connection(self, event: Event) -> bool:
        """Whether an error event means this client cannot connect (the Hello was refused, or connect() failed)."""
        with self._lock:
            hello_id = self._hello_request_id
        if event.request_id is not None:
            return event.request_id == hello_id
        return event.job_id is None and isinstance(event.message, Error) and event.message.code == BACKEND_UNAVAILABLE

    # ---- the I/O thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        """The I/O thread: connect, then poll, dispatch, send commands and heartbeats until stopped."""
        try:
            # The first socket opens in the loop too (no socket, reconnect time 0), so its errors are handled alike.
            while not self._stop.is_set():
                try:
                    self._run_once()
                except Exception as error:  # the thread must outlive its own bugs, or callers would wait forever
                    self._emit_error(CLIENT_ERROR, f"the client's I/O thread failed ({type(error).__name__}: {error})")
                    self._drop_connection("the client's I/O thread failed")
        finally:
            self._shut_down()

    def _run_once(self) -> None:
        if self._socket is None:
            # Backing off between connection attempts: keep taking commands, then try again when it is time.
            self._take_commands()
            wait = self._reconnect_at - time.monotonic()
            if wait > 0:
                time.sleep(min(POLL_INTERVAL, wait))
            else:
                self._open_socket()
            return
        if self._socket.poll(int(POLL_INTERVAL * 1000), zmq.POLLIN):
            self._receive()
        self._take_commands()
        self._keep_alive()

    def _open_socket(self) -> None:
        """A new DEALER socket and a Hello: the start of every connection attempt."""
        socket = self._context.socket(zmq.DEALER)
        try:
            socket.linger = 0
            socket.setsockopt(zmq.MAXMSGSIZE, self._limits.max_message_bytes)
            if self._curve is not None:
                socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = self._curve
            socket.connect(self._endpoint)
        except zmq.ZMQError as error:
            socket.close(linger=0)
            self._emit_error(BACKEND_UNAVAILABLE, f"cannot connect to {self._endpoint!r}: {error}")
            self._drop_connection(f"cannot connect to {self._endpoint}")
            return
        self._socket = socket
        now = time.monotonic()
        # The attempt gets dead_after to be answered, like any live connection.
        self._last_heard = now
        self._next_ping = now + self._heartbeat_interval
        hello = Hello(request_id=_new_id(), client=self._client_name)
        with self._lock:
            self._hello_request_id = hello.request_id
        self._send(hello)

    def _drop_connection(self, reason: str) -> None:
        """Lazy pirate: the socket is confused, so close it, fail what cannot be resent, and reconnect later."""
        self._close_socket()
        self._fail_unaccepted_submits(reason)
        self._reconnect_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def _shut_down(self) -> None:
        """The I/O thread's way out: send what callers queued last (say an Ack right before close), close the socket,
        and tell anyone still waiting."""
        if self._socket is not None and self.connected:
            self._take_commands()
            self._close_socket(linger_ms=SHUTDOWN_LINGER_MS)
        self._close_socket()
        self._take_commands()
        self._fail_unaccepted_submits("the client was closed")

    def _close_socket(self, linger_ms: int = 0) -> None:
        """Close the socket (linger 0 unless given); a connection that had its Welcome ends with one "disconnected"
        event."""
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._server_info = None
        attempted = self._socket is not None
        if self._socket is not None:
            self._socket.close(linger=linger_ms)
            self._socket = None
        if was_connected:
            self._emit(Event("disconnected"))
        elif attempted and not self._unreachable_told and not self._stop.is_set():
            self._unreachable_told = True
            self._emit(Event("unreachable"))

    def _fail_unaccepted_submits(self, reason: str) -> None:
        # Not resent: the server may have queued the job already, and a resend would run it twice.
        request_ids = sorted(self._pending_submits)
        request_ids += [command.message.request_id for command in self._outbox if isinstance(command.message, Submit)]
        self._pending_submits.clear()
        self._outbox = [command for command in self._outbox if not isinstance(command.message, Submit)]
        for request_id in request_ids:
            self._emit_error(
                BACKEND_UNAVAILABLE,
                f"{reason} before the backend at {self._endpoint} accepted the job; it was not resent (so that it "
                "cannot run twice)",
                hint="Submit it again once the backend is connected.",
                request_id=request_id,
            )

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if now - self._last_heard > self._dead_after:
            self._drop_connection(f"no answer from the backend for {self._dead_after:g} s")
        elif now >= self._next_ping:
            self._send(Ping(request_id=_new_id()))
            self._next_ping = now + self._heartbeat_interval

    def _take_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            self._handle_command(command)

    def _handle_command(self, command: _Command) -> None:
        message = command.message
        # Fetch and Cancel are remembered by job id and sent again on every new connection, so they are not held.
        if isinstance(message, Fetch):
            with self._lock:
                self._active_jobs.add(message.job_id)
        elif isinstance(message, Cancel):
            self._cancel_requested.add(message.job_id)
        with self._lock:
            connected = self._connected
        if connected:
            self._send_command(command)
        elif isinstance(message, Submit | Ack):
            self._outbox.append(command)

    def _send_command(self, command: _Command) -> None:
        if isinstance(command.message, Submit):
            self._pending_submits.add(command.message.request_id)
        parts = command.parts if command.parts is not None else encode(command.message)
        if not self._send_parts(parts) and isinstance(command.message, Submit):
            self._pending_submits.discard(command.message.request_id)
            self._emit_error(
                BACKEND_UNAVAILABLE,
                f"the send queue to {self._endpoint} is full; the job was not sent",
                request_id=command.message.request_id,
            )

    def _send(self, message: Message) -> None:
        self._send_parts(encode(message))

    def _send_parts(self, parts: list[Buffer]) -> bool:
        """Send without blocking (copy=False: large parts go out zero-copy). False when the send queue is full."""
        if self._socket is None:
            return False
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def _receive(self) -> None:
        for _ in range(_MAX_RECEIVE_BATCH):
            if self._socket is None:
                return
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            # Anything from the server, even a message we cannot read, shows it is alive.
            self._last_heard = time.monotonic()
            try:
                message, payload = decode([frame.buffer for frame in frames], self._limits)
            except ProtocolError as error:
                self._emit_error(
                    error.code,
                    f"the backend sent a message this client cannot read: {error.message}",
                    field=error.field,
                )
                continue
            # One copy out of the zmq frame, so the frame's memory goes back to zmq now.
            self._dispatch(message, None if payload is None else bytes(payload))

    def _dispatch(self, message: Message, payload: bytes | None) -> None:
        """Update connection and job state for one server message, then pass it on as an event."""
        if isinstance(message, Pong):
            return
        if isinstance(message, Welcome):
            self._on_welcome(message)
            return
        if isinstance(message, Accepted):
            self._pending_submits.discard(message.request_id)
            with self._lock:
                self._active_jobs.add(message.job_id)
        elif isinstance(message, Result | Cancelled):
            self._unfollow(message.job_id)
        elif isinstance(message, Error):
            if message.request_id is not None:
                self._pending_submits.discard(message.request_id)
            if message.job_id is not None:
                self._unfollow(message.job_id)
        elif isinstance(message, JobStatus):
            if message.state in _ENDED_STATES:
                self._unfollow(message.job_id)
        elif isinstance(message, _CLIENT_MESSAGES):
            self._emit_error(BAD_MESSAGE, f"the backend sent a {message.TYPE!r} message, which only clients send")
            return
        self._emit(
            Event(
                kind=message.TYPE,
                message=message,
                payload=payload,
                job_id=getattr(message, "job_id", None),
                request_id=getattr(message, "request_id", None),
            )
        )

    def _on_welcome(self, message: Welcome) -> None:
        with self._lock:
            self._connected = True
            self._server_info = message
            followed = sorted(self._active_jobs)
        self._backoff = self._heartbeat_interval
        self._unreachable_told = False
        self._emit(Event("connected", message=message, request_id=message.request_id))
        # Re-attach followed jobs to this connection, repeat unanswered cancels, then send what waited.
        for job_id in followed:
            self._send(Fetch(request_id=_new_id(), job_id=job_id))
        for job_id in sorted(self._cancel_requested):
            self._send(Cancel(request_id=_new_id(), job_id=job_id))
        waiting, self._outbox = self._outbox, []
        for command in waiting:
            self._send_command(command)

    def _unfollow(self, job_id: str) -> None:
        with self._lock:
            self._active_jobs.discard(job_id)
        self._cancel_requested.discard(job_id)

    def _emit(self, event: Event) -> None:
        self._events.put(event)

    def _emit_error(
        self,
        code: str,
        text: str,
        hint: str = "",
        field: str | None = None,
        request_id: str | None = None,
    ) -> None:
        message = Error(code=code, message=text, hint=hint, field=field, request_id=request_id)
        self._emit(Event("error", message=message, request_id=request_id))


def _job_outcome(event: Event, job_id: str | None) -> bool:
    """True for the event that finishes a job successfully ("result"); raises for the ones that end it otherwise."""
    message = event.message
    if event.kind == "result":
        return True
    if event.kind == "error" and isinstance(message, Error):
        if message.code == BACKEND_UNAVAILABLE:
            raise BackendUnavailable(f"{message.message}. {message.hint}".strip())
        raise JobFailed(message.code, message.message, message.hint, message.field)
    if event.kind == "cancelled" and isinstance(message, Cancelled):
        reason = f": {message.reason}" if message.reason else ""
        raise JobCancelledError(f"job {message.job_id} was cancelled{reason}")
    if event.kind == "job_status" and isinstance(message, JobStatus):
        if message.state == "failed":
            raise JobFailed(
                JOB_FAILED, f"job {job_id} failed on the server", "Submit it again, or check the server log."
            )
        if message.state == "cancelled":
            raise JobCancelledError(f"job {job_id} was cancelled")
    return False


def _check_frames(frames: np.ndarray) -> np.ndarray:
    """The reference frames as a C-contiguous uint8 (F, H, W, 3) array; a copy only when they are not contiguous."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        kind = f"dtype {frames.dtype}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"`frames` must be a uint8 numpy array, got {kind}")
    if frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        raise ValueError(f"`frames` must have shape (frames, height, width, 3), got {frames.shape}")
    return np.ascontiguousarray(frames)


def _echo_bytes(data: bytes | memoryview | np.ndarray) -> memoryview:
    """The bytes of `data` as a flat uint8 view, without a copy (an array that is not C-contiguous is copied)."""
    try:
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        view = memoryview(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`data` must be bytes, a memoryview or a numpy array: {error}") from error
    if not view.c_contiguous:
        raise ValueError("`data` must be a contiguous buffer; copy it with bytes(data) first")
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"`job_id` must be a non-empty string, got {job_id!r}")
    return job_id


def _new_id() -> str:
    return uuid.uuid4().hex
