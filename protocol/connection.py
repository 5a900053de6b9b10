"""The connection of a `Client`, owned by its I/O thread: the socket, heartbeats, reconnects and what waits to be sent.

Nothing here is called from a caller's thread. What both sides see lives in `Shared`: the command and event queues,
the stop flag, and the connection facts and followed jobs, guarded by its lock. See `client.py` for the life cycle.
"""

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import stages
from .codec import Buffer, Limits, decode, encode
from .errors import BACKEND_UNAVAILABLE, BAD_MESSAGE, CLIENT_ERROR, INVALID_FIELD, ProtocolError
from .events import Command, Event, new_id
from .messages import (
    Accepted,
    Ack,
    Cancel,
    Cancelled,
    Error,
    Fetch,
    Hello,
    JobStatus,
    Message,
    Ping,
    Pong,
    Result,
    Status,
    Submit,
    Welcome,
)

# The I/O thread waits this long for the socket, then drains the command queue, so a command waits at most this
# long. 20 ms is below what a user notices and costs no measurable CPU; an inproc PAIR wake-up socket would save the
# wait but adds a second socket, its own shutdown order, and nothing a user would notice.
POLL_INTERVAL = 0.02
# How long the thread pauses between wake-ups while a caller waits to make it quiet, so that the caller gets the lock.
QUIET_YIELD = 0.001
# On close, queued messages get this long to leave a connected socket.
SHUTDOWN_LINGER_MS = 500

# While the heartbeat's connection is answered, a job connection that broke without a word (no FIN, no RST) must still
# end. Two watches: the kernel ends it when its TCP data stays unacknowledged this long (at least; ZMQ_TCP_MAXRT, which
# is TCP_USER_TIMEOUT on Linux and TCP_MAXRT on Windows, and nothing on macOS; a slow but live link acknowledges data
# as it arrives), and the client ends it when nothing came on it for JOB_SILENCE_FACTOR x dead_after, at least
# JOB_SILENCE_MIN_S: longer than any one message takes on a usable link (60 MB at 1 MB/s), shorter than a user waits.
MIN_UNACKNOWLEDGED_S = 20.0
JOB_SILENCE_MIN_S = 60.0
JOB_SILENCE_FACTOR = 10
# While a job is followed or a submit waits for its answer, a large message may be on its way on the job connection,
# and ZeroMQ hands over whole messages only: nothing is heard there until all of it has come (a 192 MiB result takes
# minutes on a slow link). The silence allowed then is what the largest of them takes at this speed: a submit's own
# bytes, a job's result from the size it asked for, or the server's largest message when that is unknown (a job
# fetched by id: 512 MiB, 34 minutes). A broken connection is still found by the kernel first, where it can (above).
MIN_LINK_BYTES_PER_S = 256 * 1024
# The heartbeat's connection receives only Pongs.
HEARTBEAT_MAX_MESSAGE_BYTES = 65536

# Messages read per wake-up before commands get their turn (a flood of progress must not starve a Cancel).
_MAX_RECEIVE_BATCH = 100

# Messages only a client sends. Any other type the codec knows is passed on as an event named after its TYPE.
_CLIENT_MESSAGES = (Hello, Submit, Cancel, Fetch, Ack, Ping, Status)


def expected_result_bytes(submit: Submit) -> int | None:
    """The bytes of the frames a submitted job's result will hold (uint8 RGB), when its params give the size."""
    sizes = [submit.params.get(name) for name in ("num_frames", "height", "width")]
    if not all(type(size) is int and size > 0 for size in sizes):
        return None  # the preset's own size, unknown here
    num_frames, height, width = sizes
    return num_frames * height * width * 3


@dataclass
class Shared:
    """What the caller threads and the I/O thread both touch. The queues are thread-safe; the rest is guarded by
    `lock`."""

    commands: "queue.Queue[Command]" = field(default_factory=queue.Queue)
    events: "queue.Queue[Event]" = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Held by the I/O thread for each wake-up; a caller that holds it keeps the thread waiting, running no Python.
    quiet: threading.Lock = field(default_factory=threading.Lock)
    # Callers waiting for `quiet`: the thread gives way to them between wake-ups (a lock is not fair, and the thread
    # takes it again at once after each wake-up).
    quiet_waiters: int = 0
    connected: bool = False
    server_info: Welcome | None = None
    active_jobs: set[str] = field(default_factory=set)
    hello_request_id: str | None = None
    # `Client.close` gave up waiting for the thread (held quiet, say): the thread terminates the client's own context
    # on its way out, which `close` could not do while the thread's sockets were open.
    exited: bool = False
    term_context_on_exit: bool = False

    def is_connected(self) -> bool:
        with self.lock:
            return self.connected


@dataclass(frozen=True)
class Settings:
    """How to reach the server and when to give up on it (checked by `Client`)."""

    endpoint: str
    curve: tuple[bytes, bytes, bytes] | None
    client_name: str
    heartbeat_interval: float
    dead_after: float
    max_backoff: float
    limits: Limits


class Connection:
    """The I/O thread's side of a client: `run()` is the thread's body."""

    def __init__(self, settings: Settings, shared: Shared, context: zmq.Context) -> None:
        self.shared = shared
        self._context = context
        self._endpoint = settings.endpoint
        self._curve = settings.curve
        self._client_name = settings.client_name
        self._heartbeat_interval = settings.heartbeat_interval
        self._dead_after = settings.dead_after
        self._max_backoff = settings.max_backoff
        self._limits = settings.limits
        self._socket: zmq.Socket | None = None
        # Pings and their Pongs only, on a connection of their own: on the job connection a Pong waits behind any
        # large message on its way (a reference going up, a result coming down), which on a slow link takes longer
        # than dead_after, so the server's liveness is heard here.
        self._heartbeat: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None  # the socket's ZMQ_EVENT_DISCONNECTED events
        self._poller = zmq.Poller()
        self._last_heard = 0.0  # anything from the server, on either connection
        self._last_heard_on_job = 0.0
        self._attempt_started = 0.0  # when this connection attempt sent its hello
        self._next_ping = 0.0
        self._reconnect_at = 0.0
        self._backoff = self._heartbeat_interval
        self._outbox: list[Command] = []
        # Submits sent and not yet answered, by request id: the bytes they sent and their result's (None: unknown).
        self._pending_submits: dict[str, tuple[int, int | None]] = {}
        # The bytes of the result each followed job will send (None: unknown), for the silence limit.
        self._result_bytes: dict[str, int | None] = {}
        self._cancel_requested: set[str] = set()
        # Cancels and Acks sent, by request id -> job id: their replies do not end a job.
        self._side_requests: dict[str, str] = {}
        self._closing = False  # the thread is on its way out: Submits are no longer sent
        self._unreachable_told = False  # "unreachable" was emitted since the last Welcome

    def run(self) -> None:
        """The I/O thread: connect, then poll, dispatch, send commands and heartbeats until stopped."""
        try:
            # The first socket opens in the loop too (no socket, reconnect time 0), so its errors are handled alike.
            while not self.shared.stop.is_set():
                try:
                    if self.shared.quiet_waiters:
                        time.sleep(QUIET_YIELD)
                    waiting_since = time.monotonic()
                    with self.shared.quiet:
                        if self.shared.stop.is_set():  # closed while it was kept quiet: no other round
                            break
                        self._resume_after(time.monotonic() - waiting_since)
                        self._run_once()
                except Exception as error:  # the thread must outlive its own bugs, or callers would wait forever
                    self._emit_error(CLIENT_ERROR, f"the client's I/O thread failed ({type(error).__name__}: {error})")
                    self._drop_connection("the client's I/O thread failed")
        finally:
            self._shut_down()
            with self.shared.lock:
                self.shared.exited = True
                term_context = self.shared.term_context_on_exit
            if term_context:
                self._context.term()

    def _resume_after(self, quiet_for: float) -> None:
        """After the thread was kept quiet (`Client.quiet`): that time was not the server's silence, so the heartbeat
        deadlines move on by it."""
        if quiet_for > POLL_INTERVAL:
            self._last_heard += quiet_for
            self._last_heard_on_job += quiet_for
            self._attempt_started += quiet_for
            self._next_ping += quiet_for

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
        ready = dict(self._poller.poll(int(POLL_INTERVAL * 1000)))
        if self._monitor in ready and self._lost_connection():
            # Whole messages that came before the connection went are still there to read: a job's "accepted"
            # among them, and without it the job would count as never accepted (and be submitted twice).
            while self._socket is not None and self._socket.poll(0, zmq.POLLIN):
                self._receive()
            self._drop_connection("the connection to the backend was closed")
            return
        if self._socket in ready:
            self._receive()
        if self._heartbeat in ready:
            self._receive_heartbeats()
        self._take_commands()
        self._keep_alive()

    def _lost_connection(self) -> bool:
        """Whether the socket's TCP connection went away. ZeroMQ would connect it again by itself, but under a routing
        id the server never welcomed (after a restart, a new server answers pings on it while no job's messages reach
        it), so every lost connection is a new socket and a new hello."""
        assert self._monitor is not None
        lost = False
        while self._monitor.poll(0):
            lost |= recv_monitor_message(self._monitor)["event"] == zmq.EVENT_DISCONNECTED
        return lost

    def _open_socket(self) -> None:
        """New DEALER sockets (the job connection, with its monitor, and the heartbeat's) and a Hello: the start of
        every connection attempt."""
        socket = heartbeat = monitor = None
        try:
            socket = self._new_dealer(self._limits.max_message_bytes)
            heartbeat = self._new_dealer(HEARTBEAT_MAX_MESSAGE_BYTES)
            # The kernel's limit on unacknowledged data: a few dead times, and never below MIN_UNACKNOWLEDGED_S.
            socket.setsockopt(zmq.TCP_MAXRT, int(1000 * max(MIN_UNACKNOWLEDGED_S, 4 * self._dead_after)))
            # ZeroMQ keeps trying a refused connect every 100 ms; a connection it had and lost ends this socket.
            monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            socket.connect(self._endpoint)
            heartbeat.connect(self._endpoint)
        except zmq.ZMQError as error:
            if monitor is not None:
                socket.disable_monitor()
                monitor.close(linger=0)
            for opened in (socket, heartbeat):
                if opened is not None:
                    opened.close(linger=0)
            self._emit_error(BACKEND_UNAVAILABLE, f"cannot connect to {self._endpoint!r}: {error}")
            self._drop_connection(f"cannot connect to {self._endpoint}")
            return
        self._socket, self._heartbeat, self._monitor = socket, heartbeat, monitor
        self._poller = zmq.Poller()
        for polled in (socket, heartbeat, monitor):
            self._poller.register(polled, zmq.POLLIN)
        now = time.monotonic()
        # The attempt gets dead_after to be answered, like any live connection, and to be welcomed.
        self._last_heard = self._last_heard_on_job = self._attempt_started = now
        self._next_ping = now + self._heartbeat_interval
        hello = Hello(request_id=new_id(), client=self._client_name)
        with self.shared.lock:
            self.shared.hello_request_id = hello.request_id
        self._send(hello)

    def _new_dealer(self, max_message_bytes: int) -> zmq.Socket:
        socket = self._context.socket(zmq.DEALER)
        try:
            socket.linger = 0
            # For an IPv6 address only: with it on, a host name resolves to its IPv6 address first (localhost to ::1),
            # which a server listening on IPv4 never answers.
            socket.ipv6 = "[" in self._endpoint
            socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            if self._curve is not None:
                socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = self._curve
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        return socket

    def _drop_connection(self, reason: str) -> None:
        """Lazy pirate: the socket is confused, so close it, fail what cannot be resent, and reconnect later."""
        self._close_socket()
        self._fail_unaccepted_submits(reason)
        self._reconnect_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def _shut_down(self) -> None:
        """The I/O thread's way out: send what callers queued last (say an Ack right before close) but a Submit, close
        the socket, and tell anyone still waiting."""
        self._closing = True
        if self._socket is not None and self.shared.is_connected():
            self._take_commands()
            self._close_socket(linger_ms=SHUTDOWN_LINGER_MS)
        self._close_socket()
        self._take_commands()
        self._fail_unaccepted_submits("the client was closed")

    def _close_socket(self, linger_ms: int = 0) -> None:
        """Close the socket (linger 0 unless given); a connection that had its Welcome ends with one "disconnected"
        event."""
        with self.shared.lock:
            was_connected = self.shared.connected
            self.shared.connected = False
            self.shared.server_info = None
        attempted = self._socket is not None
        self._side_requests.clear()  # their replies would come on this connection: a new one sends its cancels anew
        if self._socket is not None:
            self._socket.disable_monitor()
            self._socket.close(linger=linger_ms)
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        if self._heartbeat is not None:
            self._heartbeat.close(linger=0)
            self._heartbeat = None
        if was_connected:
            self._emit(Event("disconnected"))
        elif attempted and not self._unreachable_told and not self.shared.stop.is_set():
            self._unreachable_told = True
            self._emit(Event("unreachable"))

    def _fail_unaccepted_submits(self, reason: str) -> None:
        # Sent ones are not resent: the server may have queued the job already, and a resend would run it twice.
        # Waiting ones fail too, so that a caller learns that no backend is there instead of waiting on.
        sent = (
            "it was sent but is not sent again, so that it cannot run twice",
            "The backend may have queued it without this client learning its job id: look at its queue "
            "(`motionclone status`) before you submit it again.",
        )
        never_sent = ("it was never sent", "Submit it again once the backend is connected.")
        failed = dict.fromkeys(sorted(self._pending_submits), sent)
        for command in self._outbox:
            if isinstance(command.message, Submit):
                failed[command.message.request_id] = never_sent
        self._pending_submits.clear()
        self._outbox = [command for command in self._outbox if not isinstance(command.message, Submit)]
        for request_id, (what, hint) in failed.items():
            self._emit_error(
                BACKEND_UNAVAILABLE,
                f"{reason} before the backend at {self._endpoint} accepted the job; {what}",
                hint=hint,
                request_id=request_id,
            )

    def _keep_alive(self) -> None:
        now = time.monotonic()
        job_silence_limit = self._job_silence_limit()
        if now - self._last_heard > self._dead_after:
            self._drop_connection(f"no answer from the backend for {self._dead_after:g} s")
        elif not self.shared.is_connected() and now - self._attempt_started > self._dead_after:
            # Answered but not welcomed (its hello refused, or a welcome this client cannot read): pongs alone
            # would keep such an attempt open for good, with its submits waiting.
            self._drop_connection(f"no welcome from the backend within {self._dead_after:g} s")
        elif now - self._last_heard_on_job > job_silence_limit:
            self._drop_connection(f"nothing came on the job connection for {job_silence_limit:g} s")
        elif now >= self._next_ping:
            # Both connections are pinged: the heartbeat's Pong comes back at once, and traffic on the job
            # connection lets the kernel find out when it is broken (MIN_UNACKNOWLEDGED_S).
            self._send(Ping(request_id=new_id()))
            if self._heartbeat is not None:
                with contextlib.suppress(zmq.Again):
                    self._heartbeat.send_multipart(encode(Ping(request_id=new_id())), flags=zmq.NOBLOCK)
            self._next_ping = now + self._heartbeat_interval

    def _job_silence_limit(self) -> float:
        """How long the job connection may stay silent (see MIN_LINK_BYTES_PER_S)."""
        limit = max(JOB_SILENCE_MIN_S, JOB_SILENCE_FACTOR * self._dead_after)
        with self.shared.lock:
            followed = list(self.shared.active_jobs)
            info = self.shared.server_info
        largest_possible = self._limits.max_message_bytes
        if info is not None and isinstance(info.limits.get("max_message_bytes"), int):
            largest_possible = min(largest_possible, info.limits["max_message_bytes"])
        on_their_way = [sent for sent, _ in self._pending_submits.values()]
        on_their_way += [self._result_bytes.get(job_id) or largest_possible for job_id in followed]
        return max([limit] + [size / MIN_LINK_BYTES_PER_S for size in on_their_way])

    def _take_commands(self) -> None:
        while True:
            try:
                command = self.shared.commands.get_nowait()
            except queue.Empty:
                return
            self._handle_command(command)

    def _handle_command(self, command: Command) -> None:
        message = command.message
        # Fetch and Cancel are remembered by job id and sent again on every new connection, so they are not held.
        if isinstance(message, Fetch):
            with self.shared.lock:
                self.shared.active_jobs.add(message.job_id)
        elif isinstance(message, Cancel):
            self._cancel_requested.add(message.job_id)
        with self.shared.lock:
            connected = self.shared.connected
        if isinstance(message, Submit) and self._closing:
            # Its job would run with no one told its id: it fails as never sent, and can be submitted again.
            self._outbox.append(command)
        elif connected:
            self._send_command(command)
        elif isinstance(message, Submit | Ack):
            self._outbox.append(command)

    def _send_command(self, command: Command) -> None:
        parts = command.parts if command.parts is not None else encode(command.message)
        if isinstance(command.message, Submit):
            sent = sum(memoryview(part).nbytes for part in parts)
            self._pending_submits[command.message.request_id] = (sent, expected_result_bytes(command.message))
        elif isinstance(command.message, Cancel | Ack):
            self._side_requests[command.message.request_id] = command.message.job_id
        if self._send_parts(parts):
            return
        # Whoever waits for the answer learns that none will come (a Fetch or Cancel goes out again on the next
        # connection all the same).
        what = "the job" if isinstance(command.message, Submit) else f"the {command.message.TYPE}"
        self._pending_submits.pop(command.message.request_id, None)
        self._side_requests.pop(command.message.request_id, None)
        job_id = None
        if isinstance(command.message, Fetch):  # nothing comes for it now: not followed until fetched again
            job_id = command.message.job_id
            self._unfollow(job_id)
        self._emit_error(
            BACKEND_UNAVAILABLE,
            f"the send queue to {self._endpoint} is full; {what} was not sent",
            hint="Try again in a moment; if it keeps happening, the connection to the backend is too slow.",
            request_id=command.message.request_id,
            job_id=job_id,
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

    def _receive_heartbeats(self) -> None:
        """Whatever arrives on the heartbeat connection (Pongs) shows that the server is alive, and nothing more."""
        assert self._heartbeat is not None
        with contextlib.suppress(zmq.Again):
            for _ in range(_MAX_RECEIVE_BATCH):
                self._heartbeat.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                self._last_heard = time.monotonic()

    def _receive(self) -> None:
        for _ in range(_MAX_RECEIVE_BATCH):
            if self._socket is None:
                return
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            # Anything from the server, even a message we cannot read, shows it is alive.
            self._last_heard = self._last_heard_on_job = time.monotonic()
            try:
                message, payloads = decode([frame.buffer for frame in frames], self._limits)
            except ProtocolError as error:
                # Its request or its job, when the header could be read: whoever waits for the answer or the job's
                # end gets this instead. A job whose last message cannot be read ends here: fetched again after a
                # reconnect, the same message would come again.
                self._pending_submits.pop(error.request_id, None)
                answers_cancel_or_ack = self._side_requests.pop(error.request_id, None) is not None
                if error.job_id is not None and not answers_cancel_or_ack:
                    self._unfollow(error.job_id)
                self._emit_error(
                    error.code,
                    f"the backend sent a message this client cannot read: {error.message}",
                    hint="The backend may be newer than this client: update the client (or the add-on)."
                    if error.code == INVALID_FIELD
                    else "",
                    field=error.field,
                    request_id=error.request_id,
                    job_id=error.job_id,
                )
                continue
            # One copy out of the zmq frame, so the frame's memory goes back to zmq now.
            # Server messages carry at most one raw part. A result's frames stay in the zmq frame they arrived in
            # (a 256-frame result is 200 MB: never two copies of it); small parts are copied out so that their
            # frame's memory goes back to zmq now.
            payload = next(iter(payloads.values()), None)
            if payload is not None and not isinstance(message, Result):
                payload = bytes(payload)
            self._dispatch(message, payload)

    def _dispatch(self, message: Message, payload: bytes | memoryview | None) -> None:
        """Update connection and job state for one server message, then pass it on as an event."""
        if isinstance(message, Pong):
            return
        if isinstance(message, Welcome):
            self._on_welcome(message)
            return
        if isinstance(message, Accepted):
            _, result_bytes = self._pending_submits.pop(message.request_id, (0, None))
            self._result_bytes[message.job_id] = result_bytes
            with self.shared.lock:
                self.shared.active_jobs.add(message.job_id)
        elif isinstance(message, Result | Cancelled):
            self._unfollow(message.job_id)
        elif isinstance(message, Error):
            if message.request_id is not None:
                self._pending_submits.pop(message.request_id, None)
            if self._side_requests.pop(message.request_id, None) is not None:
                # It answers a Cancel or an Ack: that request found nothing to act on, the job's own end still comes
                # (a result being stored, say); a cancel answered so is not repeated.
                self._cancel_requested.discard(message.job_id)
            elif message.job_id is not None:
                self._unfollow(message.job_id)
        elif isinstance(message, JobStatus):
            if self._side_requests.pop(message.request_id, None) is not None:
                self._cancel_requested.discard(message.job_id)
            if message.state in (stages.FAILED, stages.CANCELLED):  # finished without a Result
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
        with self.shared.lock:
            self.shared.connected = True
            self.shared.server_info = message
            followed = sorted(self.shared.active_jobs)
        self._backoff = self._heartbeat_interval
        self._unreachable_told = False
        self._emit(Event("connected", message=message, request_id=message.request_id))
        # Re-attach followed jobs to this connection, repeat unanswered cancels, then send what waited.
        for job_id in followed:
            self._send(Fetch(request_id=new_id(), job_id=job_id))
        for job_id in sorted(self._cancel_requested):
            self._send_command(Command(Cancel(request_id=new_id(), job_id=job_id)))
        waiting, self._outbox = self._outbox, []
        for command in waiting:
            self._send_command(command)

    def _unfollow(self, job_id: str) -> None:
        with self.shared.lock:
            self.shared.active_jobs.discard(job_id)
        self._cancel_requested.discard(job_id)
        self._result_bytes.pop(job_id, None)
        # A cancel has no direct reply when it works (the job ends with "cancelled"): forget its request here.
        self._side_requests = {request: job for request, job in self._side_requests.items() if job != job_id}

    def _emit(self, event: Event) -> None:
        self.shared.events.put(event)

    def _emit_error(
        self,
        code: str,
        text: str,
        hint: str = "",
        field: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        message = Error(code=code, message=text, hint=hint, field=field, request_id=request_id, job_id=job_id)
        self._emit(Event("error", message=message, request_id=request_id, job_id=job_id))
