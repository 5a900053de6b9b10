"""Tests for the protocol client and the CurveZMQ key helpers, against a fake server on real loopback sockets.

No bpy, no torch. The fake server is a ROUTER on its own thread that speaks the codec and steers each job by
`params["mode"]`: "ok" (accepted, progress, result), "reject" (error for the request), "fail" (accepted, progress,
error for the job), "hang" (accepted, progress, then nothing), "silent" (no answer at all), "garbage" (an unreadable
message first, then like "ok"). Results are the reference frames inverted (255 - x), so they prove a round trip.
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from motionclone.protocol import connection, endpoints, keys
from motionclone.protocol.client import Client, Event
from motionclone.protocol.codec import Limits, decode, encode
from motionclone.protocol.errors import (
    BACKEND_UNAVAILABLE,
    INVALID_PARAMETER,
    OUT_OF_MEMORY,
    UNKNOWN_JOB,
    UNSUPPORTED_VERSION,
    BackendUnavailable,
    JobCancelledError,
    JobFailed,
)
from motionclone.protocol.messages import (
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
    Result,
    Submit,
    Welcome,
)

from .slow_link import SlowLink

HEARTBEAT = 0.2
DEAD_AFTER = 1.0
PREVIEW_PNG = b"\x89PNG\r\n\x1a\n-preview"


class FakeServer:
    """A minimal protocol server on a thread. `received` lists every message it decoded, in order."""

    def __init__(
        self,
        port: int | None = None,
        *,
        results: dict[str, np.ndarray] | None = None,
        curve_keys: tuple[bytes, bytes] | None = None,
        context: zmq.Context | None = None,
        limits: Limits | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.limits = limits or Limits()  # what its Welcome announces
        self._own_context = context is None
        self.context = zmq.Context() if context is None else context
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.linger = 0
        if curve_keys is not None:
            self.socket.curve_server = True
            self.socket.curve_publickey, self.socket.curve_secretkey = curve_keys
        self.host = host
        self.socket.ipv6 = ":" in host
        if port is None:
            self.port = self.socket.bind_to_random_port(f"tcp://{host}")
        else:
            self.port = port
            self.socket.bind(f"tcp://{host}:{port}")
        self.results = dict(results or {})
        self.received: list[Message] = []
        self._jobs = 0
        self._running: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-server", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop answering and close the socket; idempotent."""
        self._stop.set()
        self._thread.join(5.0)
        if self._own_context and not self.context.closed:
            self.context.term()

    def received_of(self, kind: type[Message]) -> list[Message]:
        return [message for message in list(self.received) if isinstance(message, kind)]

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if self.socket.poll(20, zmq.POLLIN):
                    identity, *frames = self.socket.recv_multipart()
                    message, payloads = decode(frames, Limits())
                    payload = next(iter(payloads.values()), None)  # the reference, or an Echo's bytes
                    self.received.append(message)
                    self._answer(identity, message, payload)
        finally:
            self.socket.close(linger=0)

    def _send(self, identity: bytes, message: Message, payload: bytes | None = None) -> None:
        self.socket.send_multipart([identity, *encode(message, payload)])

    def _answer(self, identity: bytes, message: Message, payload: memoryview | None) -> None:
        if isinstance(message, Hello):
            welcome = Welcome(
                request_id=message.request_id,
                server_version="fake-1",
                device="cpu",
                presets=["tiny"],
                default_preset="tiny",
                limits=self.limits.to_dict(),
                heartbeat_interval=HEARTBEAT,
            )
            self._send(identity, welcome)
        elif isinstance(message, Ping):
            self._send(identity, Pong(request_id=message.request_id))
        elif isinstance(message, Submit):
            self._answer_submit(identity, message, payload)
        elif isinstance(message, Cancel):
            self._running.discard(message.job_id)
            self._send(identity, Cancelled(job_id=message.job_id, reason="requested"))
        elif isinstance(message, Fetch):
            self._answer_fetch(identity, message)
        elif isinstance(message, Ack):
            self._send(identity, JobStatus(request_id=message.request_id, job_id=message.job_id, state="done"))
        elif isinstance(message, Echo):
            self._send(identity, message, None if payload is None else bytes(payload))

    def _answer_submit(self, identity: bytes, message: Submit, payload: memoryview | None) -> None:
        mode = message.params.get("mode", "ok")
        if mode == "silent":
            return
        if mode == "unreadable-answer":  # a newer server's accepted, with a field this client does not know
            header = {"v": 1, "type": "accepted", "request_id": message.request_id, "job_id": "j", "queue_position": 0}
            self.socket.send_multipart([identity, msgpack.packb({**header, "estimated_start": 3.0})])
            return
        if mode == "reject":
            error = Error(
                code=INVALID_PARAMETER,
                message="`guidance_scale` must be at most 20, got 99",
                hint="Lower it.",
                field="guidance_scale",
                request_id=message.request_id,
            )
            self._send(identity, error)
            return
        self._jobs += 1
        job_id = f"job-{self.port}-{self._jobs}"
        self._send(identity, Accepted(request_id=message.request_id, job_id=job_id, queue_position=0))
        if mode == "garbage":
            self.socket.send_multipart([identity, b"\xc1 not msgpack"])
        progress = Progress(
            job_id=job_id, stage="denoise", step=1, total=2, elapsed=0.1, preview=ArraySpec((len(PREVIEW_PNG),))
        )
        self._send(identity, progress, PREVIEW_PNG)
        if mode == "hang":
            self._running.add(job_id)
        elif mode == "fail":
            error = Error(code=OUT_OF_MEMORY, message="CUDA out of memory", hint="Use fewer frames.", job_id=job_id)
            self._send(identity, error)
        else:
            reference = np.frombuffer(payload, np.uint8).reshape(message.reference.shape)
            self._send_result(identity, job_id, 255 - reference)

    def _answer_fetch(self, identity: bytes, message: Fetch) -> None:
        if message.job_id in self.results:
            self._send_result(identity, message.job_id, self.results[message.job_id])
        elif message.job_id in self._running:
            status = JobStatus(request_id=message.request_id, job_id=message.job_id, state="running")
            self._send(identity, status)
        else:
            error = Error(
                code=UNKNOWN_JOB,
                message=f"no job {message.job_id}",
                request_id=message.request_id,
                job_id=message.job_id,
            )
            self._send(identity, error)

    def _send_result(self, identity: bytes, job_id: str, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(frames)
        result = Result(job_id=job_id, frames=ArraySpec(frames.shape), fps=8.0, metadata={"seed": 7})
        self._send(identity, result, frames.tobytes())


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(endpoint: str, **options: object) -> Client:
        options = {"heartbeat_interval": HEARTBEAT, "dead_after": DEAD_AFTER, "max_backoff": 0.4, **options}
        client = Client(endpoint, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def make_frames(shape: tuple[int, ...] = (8, 64, 64, 3), seed: int = 0) -> np.ndarray:
    # 8 x 64 x 64 x 3 = 96 KiB: above pyzmq's copy threshold, so the zero-copy send path is exercised.
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def wait_for_event(client: Client, kind: str, timeout: float = 3.0) -> tuple[Event, list[Event]]:
    """Read events until one of `kind` arrives; returns it and every event read before it."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.next_event(deadline - time.monotonic())
        if event is None:
            continue
        if event.kind == kind:
            return event, seen
        seen.append(event)
    raise AssertionError(f"no {kind!r} event within {timeout} s; saw {[event.kind for event in seen]}")


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def free_port() -> int:
    """A loopback port that nothing listens on."""
    with zmq.Context() as context, context.socket(zmq.ROUTER) as socket:
        socket.linger = 0
        return socket.bind_to_random_port("tcp://127.0.0.1")


# ---- connecting -----------------------------------------------------------------------------------------------------
def test_connect_emits_connected_with_the_welcome(server: FakeServer, make_client: Callable[..., Client]) -> None:
    client = make_client(server.endpoint, client_name="blender-test").start()

    event, _ = wait_for_event(client, "connected")

    assert isinstance(event.message, Welcome)
    assert event.message.device == "cpu"
    assert client.connected
    assert client.server_info == event.message
    assert client.wait_connected(timeout=1.0) == event.message
    (hello,) = server.received_of(Hello)
    assert hello.client == "blender-test"
    assert event.request_id == hello.request_id


def test_a_server_that_never_answers_gives_one_unreachable_event(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(f"tcp://127.0.0.1:{free_port()}").start()
    started = time.monotonic()
    event, _ = wait_for_event(client, "unreachable")
    assert event.kind == "unreachable" and time.monotonic() - started < DEAD_AFTER + 1.0
    time.sleep(3 * DEAD_AFTER)  # more failed attempts: still the one event
    assert [e.kind for e in client.poll_events()].count("unreachable") == 0
    # A server that answers, then a connection that dies: "disconnected", not "unreachable".
    reachable = make_client(server.endpoint).start()
    wait_for_event(reachable, "connected")
    reachable.close()
    assert "unreachable" not in [e.kind for e in reachable.poll_events()]


def test_a_client_reaches_a_server_on_ipv6_loopback(make_client: Callable[..., Client]) -> None:
    server = FakeServer(host="[::1]")
    try:
        client = make_client(server.endpoint).start()
        assert client.wait_connected(3.0).server_version == "fake-1"
    finally:
        server.stop()


def test_endpoints_a_client_cannot_connect_to_are_refused_naming_the_form(make_client: Callable[..., Client]) -> None:
    refused = ("localhost:5555", "tcp://localhost", "tcp://gpu-box:99999", "tcp://[::1:5555", "tcp://*:5555")
    for endpoint in (*refused, "tcp://artist@gpu-box:5555", "tcp://artist:secret@gpu-box:5555"):
        with pytest.raises(ValueError, match=r"`endpoint` must look like 'tcp://HOST:PORT' \(IPv6"):
            Client(endpoint)
    for endpoint in ("tcp://gpu-box:5555", "tcp://[::1]:5555", "ipc:///tmp/motionclone.sock"):
        make_client(endpoint)  # accepted
    assert endpoints.is_loopback_endpoint("tcp://[::1]:5555")
    assert endpoints.is_loopback_endpoint("tcp://[::ffff:127.0.0.1]:5555")  # IPv4 loopback as IPv6 names it
    assert not endpoints.is_loopback_endpoint("tcp://[::1:5555")  # not an address: the bind names the problem


def test_wait_connected_raises_when_no_server_exists(make_client: Callable[..., Client]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    client = make_client(endpoint).start()

    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as raised:
        client.wait_connected(timeout=0.8)

    assert time.monotonic() - started < 1.3
    assert endpoint in str(raised.value)
    assert "motionclone serve" in str(raised.value)
    assert not client.connected


def test_a_submit_waiting_for_a_backend_that_never_answers_fails_saying_it_was_never_sent(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(f"tcp://127.0.0.1:{free_port()}").start()
    request_id = client.submit(make_frames(), {"mode": "ok"})
    error, _ = wait_for_event(client, "error", timeout=DEAD_AFTER + 2.0)
    assert error.request_id == request_id and error.message.code == BACKEND_UNAVAILABLE
    assert "it was never sent" in error.message.message and "resent" not in error.message.message


# ---- jobs -----------------------------------------------------------------------------------------------------------
def test_submit_streams_accepted_progress_result_with_identical_frames(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()
    # A non-contiguous view: the client must send its contents, made contiguous.
    frames = make_frames()[:, ::-1]

    request_id = client.submit(frames, {"prompt": "a fox"}, fps=12.0, preset="tiny")
    result, seen = wait_for_event(client, "result")

    assert [event.kind for event in seen] == ["connected", "accepted", "progress"]
    accepted, progress = seen[1], seen[2]
    assert accepted.request_id == request_id
    assert progress.job_id == accepted.job_id
    assert progress.payload == PREVIEW_PNG
    assert result.job_id == accepted.job_id
    output = result.frames()
    assert output.dtype == np.uint8
    assert output.shape == frames.shape
    np.testing.assert_array_equal(output, 255 - frames)
    (submit,) = server.received_of(Submit)
    assert submit.reference_fps == 12.0
    assert submit.preset == "tiny"
    assert submit.params == {"prompt": "a fox"}
    assert client.active_jobs == frozenset()


def test_run_job_returns_the_result_and_forwards_every_event(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()
    client.wait_connected(timeout=2.0)
    frames = make_frames(seed=1)
    forwarded: list[Event] = []

    result = client.run_job(frames, {"prompt": "a fox"}, on_event=forwarded.append, timeout=5.0)

    assert result.kind == "result"
    np.testing.assert_array_equal(result.frames(), 255 - frames)
    assert [event.kind for event in forwarded] == ["accepted", "progress", "result"]
    assert forwarded[-1] is result


def test_run_job_raises_job_failed_when_the_request_is_rejected(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()

    with pytest.raises(JobFailed) as raised:
        client.run_job(make_frames(), {"mode": "reject"}, timeout=5.0)

    assert raised.value.code == INVALID_PARAMETER
    assert raised.value.field == "guidance_scale"
    assert raised.value.hint == "Lower it."


def test_run_job_raises_job_failed_when_the_job_fails(server: FakeServer, make_client: Callable[..., Client]) -> None:
    client = make_client(server.endpoint).start()
    forwarded: list[Event] = []

    with pytest.raises(JobFailed) as raised:
        client.run_job(make_frames(), {"mode": "fail"}, on_event=forwarded.append, timeout=5.0)

    assert raised.value.code == OUT_OF_MEMORY
    assert [event.kind for event in forwarded] == ["accepted", "progress", "error"]
    assert client.active_jobs == frozenset()


def test_run_job_raises_job_cancelled_after_cancel(server: FakeServer, make_client: Callable[..., Client]) -> None:
    client = make_client(server.endpoint).start()

    def cancel_on_accept(event: Event) -> None:
        if event.kind == "accepted":
            client.cancel(event.job_id)

    with pytest.raises(JobCancelledError, match="requested"):
        client.run_job(make_frames(), {"mode": "hang"}, on_event=cancel_on_accept, timeout=5.0)

    assert len(server.received_of(Cancel)) == 1


def test_unreadable_message_becomes_an_error_event_and_the_client_carries_on(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()
    frames = make_frames(seed=2)

    client.submit(frames, {"mode": "garbage"})
    result, seen = wait_for_event(client, "result")

    errors = [event for event in seen if event.kind == "error"]
    assert len(errors) == 1
    assert isinstance(errors[0].message, Error)
    assert errors[0].message.code == "bad_message"
    np.testing.assert_array_equal(result.frames(), 255 - frames)


def test_an_answer_this_client_cannot_read_still_reaches_the_request_waiting_for_it(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()
    with pytest.raises(JobFailed) as failed:  # not a wait until the time-out (for ever without one)
        client.run_job(make_frames(), {"mode": "unreadable-answer"}, timeout=10.0)
    assert "cannot read" in str(failed.value) and "estimated_start" in str(failed.value)


def test_fetch_result_returns_a_stored_result_and_fails_for_unknown_jobs(make_client: Callable[..., Client]) -> None:
    stored = make_frames(seed=3)
    fake = FakeServer(results={"job-old": stored})
    try:
        client = make_client(fake.endpoint).start()

        result = client.fetch_result("job-old", timeout=3.0)
        with pytest.raises(JobFailed) as raised:
            client.fetch_result("job-missing", timeout=3.0)
    finally:
        fake.stop()

    np.testing.assert_array_equal(result.frames(), stored)
    assert raised.value.code == UNKNOWN_JOB


def test_poll_events_never_blocks(server: FakeServer, make_client: Callable[..., Client]) -> None:
    unreachable = make_client(f"tcp://127.0.0.1:{free_port()}").start()
    client = make_client(server.endpoint).start()
    wait_for_event(client, "connected")

    for each in (unreachable, client):
        started = time.monotonic()
        for _ in range(20):
            assert each.poll_events() == []
        assert time.monotonic() - started < 0.05


def test_submit_rejects_frames_that_are_not_uint8_video(make_client: Callable[..., Client]) -> None:
    client = make_client("tcp://127.0.0.1:1")

    with pytest.raises(ValueError, match="`frames`"):
        client.submit(np.zeros((2, 8, 8, 3), np.float32), {})
    with pytest.raises(ValueError, match="`frames`"):
        client.submit(np.zeros((2, 8, 8), np.uint8), {})
    with pytest.raises(ValueError, match="`params`"):
        client.submit(np.zeros((2, 8, 8, 3), np.uint8), {"prompt": object()})


def test_echo_sends_the_bytes_back_unchanged_and_measures_the_round_trip(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()
    client.wait_connected(timeout=2.0)
    data = make_frames(seed=6).tobytes()

    request_id = client.echo(data)
    echoed, _ = wait_for_event(client, "echo")
    empty_id = client.echo(b"")
    empty, _ = wait_for_event(client, "echo")
    seconds = client.measure_round_trip(make_frames(seed=7), timeout=3.0)

    assert echoed.request_id == request_id
    assert isinstance(echoed.message, Echo)
    assert echoed.payload == data
    assert empty.request_id == empty_id
    assert empty.payload is None
    assert 0.0 < seconds < 3.0
    sent = server.received_of(Echo)
    assert [echo.data for echo in sent] == [ArraySpec((len(data),)), None, ArraySpec((len(data),))]
    with pytest.raises(ValueError, match="`data`"):
        client.echo(memoryview(data)[::2])


# ---- slow links ---------------------------------------------------------------------------------------------------
def test_a_job_whose_reference_and_result_take_longer_than_the_dead_time_to_cross_a_slow_link_completes(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    # 2 MB each way at 1 MB/s: each transfer takes twice the client's dead time (1 s), so the answer to a Ping that
    # waited behind it would come too late; the heartbeat has a connection of its own.
    link = SlowLink(server.port, bytes_per_second=1_000_000)
    try:
        client = make_client(link.endpoint).start()
        client.wait_connected(timeout=3.0)
        frames = make_frames((10, 256, 256, 3))

        client.submit(frames, {"mode": "ok"})
        result, seen = wait_for_event(client, "result", timeout=10.0)
        still_connected = client.connected
    finally:
        link.close()

    assert [event.kind for event in seen] == ["accepted", "progress"]
    np.testing.assert_array_equal(result.frames(), 255 - frames)
    assert still_connected


class ServerDeafOnTheJobConnection(FakeServer):
    """Answers a Hello and then nothing more on that connection; Pings from other connections still get Pongs."""

    def __init__(self) -> None:
        self.welcomed: set[bytes] = set()
        super().__init__()

    def _answer(self, identity: bytes, message: Message, payload: memoryview | None) -> None:
        if isinstance(message, Hello):
            self.welcomed.add(identity)
        elif identity in self.welcomed:
            return
        super()._answer(identity, message, payload)


def test_a_job_connection_that_falls_silent_ends_although_the_heartbeat_is_answered(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "JOB_SILENCE_MIN_S", 2.5)
    monkeypatch.setattr(connection, "JOB_SILENCE_FACTOR", 1)
    server = ServerDeafOnTheJobConnection()
    try:
        client = make_client(server.endpoint).start()
        client.wait_connected(timeout=3.0)
        connected_at = time.monotonic()
        wait_for_event(client, "disconnected", timeout=6.0)
        silent_for = time.monotonic() - connected_at
    finally:
        server.stop()

    assert 2.0 < silent_for < 4.0  # not after dead_after (1 s): the heartbeat's Pings were answered meanwhile


def test_a_job_connection_silent_while_only_small_messages_can_come_ends_at_the_idle_limit(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit of 96 KiB waiting for its answer, with a result of 96 KiB to come: not minutes of allowance for a
    message as large as the server takes."""
    monkeypatch.setattr(connection, "JOB_SILENCE_MIN_S", 2.5)
    monkeypatch.setattr(connection, "JOB_SILENCE_FACTOR", 1)
    server = ServerDeafOnTheJobConnection()
    try:
        client = make_client(server.endpoint).start()
        client.wait_connected(timeout=3.0)
        connected_at = time.monotonic()
        client.submit(make_frames(), {"num_frames": 8, "height": 64, "width": 64})
        wait_for_event(client, "disconnected", timeout=6.0)
        assert 2.0 < time.monotonic() - connected_at < 4.0
    finally:
        server.stop()


def test_a_result_that_takes_longer_than_the_idle_silence_limit_on_a_slow_link_still_arrives(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is heard on the job connection while a large message comes: with a job followed, that silence may last
    as long as the largest message takes at MIN_LINK_BYTES_PER_S. Cut at the idle limit, the client fetched the
    result again and again, and each time it was cut at the same point."""
    monkeypatch.setattr(connection, "JOB_SILENCE_MIN_S", 1.5)
    monkeypatch.setattr(connection, "JOB_SILENCE_FACTOR", 1)
    monkeypatch.setattr(connection, "MIN_LINK_BYTES_PER_S", Limits().max_message_bytes / 8.0)  # 8 s for the largest
    stored = make_frames((16, 256, 256, 3))  # 3 MiB: 3 s at 1 MB/s
    server = FakeServer(results={"j1": stored})
    link = SlowLink(server.port, bytes_per_second=1_000_000)
    try:
        client = make_client(link.endpoint).start()
        client.wait_connected(3.0)
        result = client.fetch_result("j1", timeout=15.0)
        np.testing.assert_array_equal(result.frames(), stored)
        assert len(server.received_of(Fetch)) == 1
    finally:
        link.close()
        server.stop()


# ---- losing and regaining the server ---------------------------------------------------------------------------------
def test_dead_server_gives_disconnected_and_run_job_raises_naming_the_job(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()
    stopped_at: list[float] = []
    job_ids: list[str] = []

    def stop_server_mid_job(event: Event) -> None:
        if event.kind == "accepted":
            job_ids.append(event.job_id)
        if event.kind == "progress" and not stopped_at:
            server.stop()
            stopped_at.append(time.monotonic())

    with pytest.raises(BackendUnavailable) as raised:
        client.run_job(make_frames(), {"mode": "hang"}, on_event=stop_server_mid_job, timeout=10.0)

    assert time.monotonic() - stopped_at[0] < DEAD_AFTER + 1.0
    assert job_ids[0] in str(raised.value)
    assert not client.connected
    assert client.active_jobs == frozenset(job_ids)


class ServerThatRefusesHellos(FakeServer):
    """Answers pings but refuses every hello (say, a protocol version it does not speak)."""

    def _answer(self, identity: bytes, message: Message, payload: memoryview | None) -> None:
        if isinstance(message, Hello):
            refusal = Error(UNSUPPORTED_VERSION, "protocol version 1 is not supported", request_id=message.request_id)
            self._send(identity, refusal)
        else:
            super()._answer(identity, message, payload)


def test_an_attempt_whose_hello_is_refused_ends_unreachable_and_fails_its_submits(
    make_client: Callable[..., Client],
) -> None:
    """Its pongs alone kept it open for good, and a submit waited for ever."""
    server = ServerThatRefusesHellos()
    try:
        client = make_client(server.endpoint).start()
        request = client.submit(make_frames(), {})
        wait_for_event(client, "unreachable", timeout=DEAD_AFTER + 1.0)
        failed, _ = wait_for_event(client, "error")
        assert failed.request_id == request and failed.message.code == BACKEND_UNAVAILABLE
        assert server.received_of(Submit) == []  # never sent to a backend that did not welcome it
    finally:
        server.stop()


class ServerThatAcceptsAndGoes(FakeServer):
    """Accepts a submit when `go` is set, then closes its socket at once."""

    def __init__(self) -> None:
        self.go = threading.Event()
        super().__init__()

    def _answer_submit(self, identity: bytes, message: Submit, payload: memoryview | None) -> None:
        self.go.wait(5)
        self._send(identity, Accepted(request_id=message.request_id, job_id="job-gone", queue_position=0))
        time.sleep(0.1)  # on its way out of this socket before the socket closes
        self._stop.set()


def test_an_accepted_that_came_before_the_connection_went_is_still_read(make_client: Callable[..., Client]) -> None:
    """Blender keeps the client quiet while it renders: the answer and the lost connection can wait together."""
    server = ServerThatAcceptsAndGoes()
    try:
        client = make_client(server.endpoint).start()
        client.wait_connected(3.0)
        request = client.submit(make_frames(), {})
        wait_until(lambda: len(server.received_of(Submit)) == 1)
        with client.quiet():
            server.go.set()
            wait_until(lambda: server._stop.is_set())
            time.sleep(0.3)  # the connection is gone too
        accepted, before = wait_for_event(client, "accepted")
        assert (accepted.request_id, accepted.job_id) == (request, "job-gone")
        assert not [event for event in before if event.kind == "error" and event.request_id == request]
        wait_for_event(client, "disconnected", timeout=DEAD_AFTER + 1.0)
        assert client.active_jobs == frozenset({"job-gone"})  # followed once a backend answers again
    finally:
        server.stop()


@contextlib.contextmanager
def server_and_its_successor() -> Iterator[tuple[FakeServer, Callable[[dict[str, np.ndarray]], FakeServer]]]:
    """A fake server, and a function that starts another on its port (holding the given stored results) once the
    test has stopped the first; both are stopped at the end."""
    servers = [FakeServer()]

    def start_again(results: dict[str, np.ndarray]) -> FakeServer:
        servers.append(FakeServer(servers[0].port, results=results))
        return servers[-1]

    try:
        yield servers[0], start_again
    finally:
        for server in servers:
            server.stop()


def accepted_hanging_job(client: Client) -> Event:
    client.submit(make_frames(), {"mode": "hang"})
    return wait_for_event(client, "accepted")[0]


def test_reconnect_fetches_active_jobs_and_fails_unaccepted_submits(make_client: Callable[..., Client]) -> None:
    with server_and_its_successor() as (first, start_again):
        client = make_client(first.endpoint).start()
        accepted = accepted_hanging_job(client)
        lost_request = client.submit(make_frames(), {"mode": "silent"})
        wait_until(lambda: len(first.received_of(Submit)) == 2)

        first.stop()
        stopped_at = time.monotonic()
        wait_for_event(client, "disconnected", timeout=DEAD_AFTER + 1.0)
        assert time.monotonic() - stopped_at < DEAD_AFTER + 1.0
        error, _ = wait_for_event(client, "error")
        assert error.request_id == lost_request
        assert error.message.code == BACKEND_UNAVAILABLE

        stored = make_frames(seed=4)
        second = start_again({accepted.job_id: stored})
        wait_for_event(client, "connected", timeout=3.0)
        result, _ = wait_for_event(client, "result")

    assert [fetch.job_id for fetch in second.received_of(Fetch)] == [accepted.job_id]
    assert second.received_of(Submit) == []  # the lost submit is not sent twice
    assert result.job_id == accepted.job_id
    np.testing.assert_array_equal(result.frames(), stored)
    assert client.active_jobs == frozenset()


def test_a_client_started_before_its_server_connects_as_soon_as_the_server_is_up(
    make_client: Callable[..., Client],
) -> None:
    """`serve` and `submit` started together: the connect is tried again within a fraction of a second, not after the
    dead time (here 5 s) and a back-off."""
    port = free_port()
    client = make_client(f"tcp://127.0.0.1:{port}", dead_after=5.0).start()
    time.sleep(0.5)  # the first connect is refused
    server = FakeServer(port)
    try:
        started = time.monotonic()
        wait_for_event(client, "connected", timeout=5.0)
        assert time.monotonic() - started < 1.5
    finally:
        server.stop()


def test_a_server_restarted_within_the_dead_time_is_a_new_connection_that_fetches_the_jobs_again(
    make_client: Callable[..., Client],
) -> None:
    """The lost connection ends its socket: the client says hello to the new server and fetches its jobs, whose
    results would otherwise go to a routing id that server never welcomed (its pings are answered all the same)."""
    with server_and_its_successor() as (first, start_again):
        client = make_client(first.endpoint).start()
        accepted = accepted_hanging_job(client)
        first.stop()
        stored = make_frames(seed=5)
        second = start_again({accepted.job_id: stored})  # up again at once
        result, _ = wait_for_event(client, "result", timeout=DEAD_AFTER + 3.0)
    assert len(second.received_of(Hello)) == 1 and second.received_of(Fetch)[0].job_id == accepted.job_id
    np.testing.assert_array_equal(result.frames(), stored)


# ---- shutting down --------------------------------------------------------------------------------------------------
def _start_zero_copy_collector() -> None:
    # pyzmq starts one process-wide garbage-collector thread at the first zero-copy send; start it before counting.
    with zmq.Context() as context, context.socket(zmq.PAIR) as sender, context.socket(zmq.PAIR) as receiver:
        sender.linger = receiver.linger = 0
        receiver.bind("inproc://warm-up")
        sender.connect("inproc://warm-up")
        sender.send(memoryview(bytes(1 << 17)), copy=False)
        receiver.recv()


def test_close_is_idempotent_and_joins_the_thread(server: FakeServer) -> None:
    _start_zero_copy_collector()
    threads_before = threading.active_count()
    client = Client(server.endpoint, heartbeat_interval=HEARTBEAT, dead_after=DEAD_AFTER).start()
    client.wait_connected(timeout=2.0)
    client.run_job(make_frames(), {}, timeout=5.0)
    assert threading.active_count() == threads_before + 1

    client.close()
    client.close()

    assert threading.active_count() == threads_before
    assert "motionclone-client" not in [thread.name for thread in threading.enumerate()]
    assert not client.connected
    assert [event.kind for event in client.poll_events()] == ["disconnected"]
    assert client.next_event(timeout=None) is None  # a closed client never leaves a caller waiting
    with pytest.raises(RuntimeError, match="closed"):
        client.submit(make_frames(), {})
    Client(server.endpoint).close()  # never started: closes too


def test_a_client_closed_while_its_caller_keeps_it_quiet_still_ends_its_context(server: FakeServer) -> None:
    client = Client(server.endpoint, heartbeat_interval=HEARTBEAT, dead_after=DEAD_AFTER).start()
    client.wait_connected(timeout=2.0)
    with client.quiet():  # Blender disabling the add-on in the middle of a render, say
        client.close(timeout=0.2)  # gives up waiting for the thread, which waits for this block
        assert not client._context.closed
    wait_until(lambda: client._context.closed)  # the thread ended it on its way out: no zmq threads left behind
    client._thread.join(2.0)  # it closes the context as its last step
    assert "motionclone-client" not in [thread.name for thread in threading.enumerate()]


def test_close_fails_submits_the_server_never_accepted(server: FakeServer, make_client: Callable[..., Client]) -> None:
    client = make_client(server.endpoint).start()
    client.wait_connected(timeout=2.0)
    lost_request = client.submit(make_frames(), {"mode": "silent"})
    wait_until(lambda: len(server.received_of(Submit)) == 1)

    client.close()

    disconnected, error = client.poll_events()
    assert disconnected.kind == "disconnected"
    assert error.kind == "error"
    assert error.request_id == lost_request
    assert error.message.code == BACKEND_UNAVAILABLE


# ---- CurveZMQ -------------------------------------------------------------------------------------------------------
@pytest.fixture
def curve_server(tmp_path: Path) -> Iterator[FakeServer]:
    keys.write_server_keys(tmp_path)
    keys.write_client_keys(tmp_path, "artist")
    context = zmq.Context()
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(tmp_path / keys.CLIENTS_DIR))
    _, server_secret_path = keys.server_key_paths(tmp_path)
    fake = FakeServer(curve_keys=keys.load_key_pair(server_secret_path), context=context)
    yield fake
    fake.stop()
    authenticator.stop()
    context.term()


def test_curve_client_with_the_server_key_connects(
    curve_server: FakeServer, tmp_path: Path, make_client: Callable[..., Client]
) -> None:
    server_public_path, _ = keys.server_key_paths(tmp_path)
    _, client_secret_path = keys.client_key_paths(tmp_path, "artist")
    client_public, client_secret = keys.load_key_pair(client_secret_path)
    client = make_client(
        curve_server.endpoint,
        server_public_key=keys.load_public_key(server_public_path),
        client_secret_key=client_secret,
        client_public_key=client_public,
    ).start()

    welcome = client.wait_connected(timeout=2.0)
    result = client.run_job(make_frames(seed=5), {}, timeout=5.0)

    assert welcome.device == "cpu"
    np.testing.assert_array_equal(result.frames(), 255 - make_frames(seed=5))


def test_curve_client_without_the_server_key_never_connects(
    curve_server: FakeServer, tmp_path: Path, make_client: Callable[..., Client]
) -> None:
    server_public_path, _ = keys.server_key_paths(tmp_path)
    plain = make_client(curve_server.endpoint).start()
    # The right server key, but a client key the server's clients/ folder does not hold.
    stranger = make_client(curve_server.endpoint, server_public_key=keys.load_public_key(server_public_path)).start()

    for client in (plain, stranger):
        with pytest.raises(BackendUnavailable):
            client.wait_connected(timeout=0.6)
    assert curve_server.received == []


# ---- key files ------------------------------------------------------------------------------------------------------
def test_key_files_round_trip_and_follow_the_layout(tmp_path: Path) -> None:
    server_public_path, server_secret_path = keys.write_server_keys(tmp_path)
    client_public_path, client_secret_path = keys.write_client_keys(tmp_path, "artist")

    assert server_public_path == tmp_path / "server.key"
    assert server_secret_path == tmp_path / "server.key_secret"
    assert client_public_path == tmp_path / "clients" / "artist.key"
    assert client_secret_path == tmp_path / "clients" / "artist.key_secret"
    public, secret = keys.load_key_pair(server_secret_path)
    assert keys.load_public_key(server_public_path) == public
    assert zmq.curve_public(secret) == public
    assert server_secret_path.stat().st_mode & 0o077 == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clients", "server.key", "server.key_secret"]


def test_a_secret_key_is_written_where_other_users_cannot_read_it_even_for_a_moment(tmp_path, monkeypatch) -> None:
    """zmq writes the secret with the umask's rights (often 0644) before it can be made private."""
    written_in = []
    create = zmq.auth.create_certificates

    def watched(folder, name):
        written_in.append(Path(folder).stat().st_mode & 0o077)
        return create(folder, name)

    monkeypatch.setattr(zmq.auth, "create_certificates", watched)
    keys.write_server_keys(tmp_path)
    keys.write_client_keys(tmp_path, "artist")
    assert written_in == [0, 0]  # folders only their owner can enter


def test_key_loading_names_the_file_when_it_cannot_help(tmp_path: Path) -> None:
    public_path, _ = keys.write_server_keys(tmp_path)

    with pytest.raises(ValueError, match=r"server\.key'.*no secret key"):
        keys.load_key_pair(public_path)
    with pytest.raises(ValueError, match=r"missing\.key"):
        keys.load_public_key(tmp_path / "missing.key")
    with pytest.raises(FileExistsError):
        keys.write_server_keys(tmp_path)
    with pytest.raises(ValueError, match="`name`"):
        keys.write_client_keys(tmp_path, "../escape")


def test_client_rejects_malformed_curve_keys_up_front() -> None:
    public, secret = zmq.curve_keypair()

    with pytest.raises(ValueError, match="`server_public_key`"):
        Client("tcp://127.0.0.1:1", server_public_key=b" " * 40)
    with pytest.raises(ValueError, match="`server_public_key`"):
        Client("tcp://127.0.0.1:1", client_secret_key=secret)
    assert keys.curve_client_keys(public, secret) == (public, zmq.curve_public(secret), secret)
    assert keys.curve_client_keys(None) is None
    other_public, _ = zmq.curve_keypair()
    with pytest.raises(ValueError, match="`client_public_key` is not the public half of `client_secret_key`"):
        Client("tcp://127.0.0.1:1", server_public_key=public, client_secret_key=secret, client_public_key=other_public)


def test_quiet_holds_the_io_thread_and_the_connection_survives_it(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    """While a caller keeps the client quiet (the add-on does during each Blender render), its thread sends and reads
    nothing, not even heartbeats; afterwards the time it was quiet does not count as the server's silence."""
    client = make_client(server.endpoint).start()
    wait_for_event(client, "connected")
    with client.quiet():
        pings = len(server.received_of(Ping))
        client.submit(make_frames(), {"prompt": "a fox"})
        time.sleep(DEAD_AFTER * 2)  # twice as long as the client waits for an answer before it gives up
        assert server.received_of(Submit) == [] and len(server.received_of(Ping)) == pings
    _, seen = wait_for_event(client, "accepted")
    assert client.connected and "disconnected" not in [other.kind for other in seen]
    assert len(server.received_of(Submit)) == 1


def test_the_message_limit_is_the_clients_own_or_the_servers_when_that_is_lower(
    make_client: Callable[..., Client],
) -> None:
    strict = FakeServer(limits=Limits(max_message_bytes=50_000))
    try:
        client = make_client(strict.endpoint, limits=Limits(max_message_bytes=100_000))
        assert client.max_message_bytes() == 100_000  # not connected yet: its own
        client.start()
        wait_for_event(client, "connected")
        assert client.max_message_bytes() == 50_000  # the Welcome's, lower
        with pytest.raises(ValueError, match="the limit is 50000"):
            client.submit(make_frames((8, 64, 64, 3)), {"prompt": "a fox"})  # 98,304 bytes of frames
    finally:
        strict.stop()


# ---- replies that are not a job's end, messages that cannot be read, requests that could not be read -------------
class StoringServer(FakeServer):
    """Every job finishes at once and its result is still being written to disk: a fetch or a cancel of it is
    answered `job_status` `done`, or (`cancel_reply="unknown_job"`) a cancel with `unknown_job`, as a server answers a
    cancel that comes after the job's end."""

    cancel_reply = "job_status"

    def _answer_submit(self, identity: bytes, message: Submit, payload: memoryview | None) -> None:
        self._send(identity, Accepted(request_id=message.request_id, job_id="j1", queue_position=0))

    def _answer(self, identity: bytes, message: Message, payload: memoryview | None) -> None:
        if isinstance(message, Cancel) and self.cancel_reply == "unknown_job":
            error = Error(UNKNOWN_JOB, "No job", request_id=message.request_id, job_id=message.job_id)
            self._send(identity, error)
        elif isinstance(message, Cancel | Fetch):
            self._send(identity, JobStatus(request_id=message.request_id, job_id=message.job_id, state="done"))
        else:
            super()._answer(identity, message, payload)


@pytest.mark.parametrize("cancel_reply", ["job_status", "unknown_job"])
def test_the_reply_to_a_cancel_does_not_end_the_job_whose_result_is_still_to_come(
    make_client: Callable[..., Client], cancel_reply: str
) -> None:
    """After the reply, the job is still followed, and the answered cancel is done: a reconnect fetches the job
    again and does not cancel it again."""
    server = StoringServer()
    server.cancel_reply = cancel_reply
    try:
        client = make_client(server.endpoint).start()
        client.wait_connected(3.0)
        client.submit(make_frames(), {})
        wait_for_event(client, "accepted")
        client.cancel("j1")
        wait_for_event(client, "error" if cancel_reply == "unknown_job" else "job_status")
        time.sleep(0.1)  # the I/O thread is done with the reply
        assert client.active_jobs == frozenset({"j1"})
        port = server.port
        server.stop()  # a restart: the client connects again and fetches what it follows
        server = StoringServer(port)
        wait_until(lambda: server.received_of(Fetch) != [], timeout=10.0)
        assert [fetch.job_id for fetch in server.received_of(Fetch)] == ["j1"]
        assert server.received_of(Cancel) == []
    finally:
        server.stop()


class UnreadableCancelReplies(StoringServer):
    """Answers a cancel with an `unknown_job` error carrying a field this client does not know."""

    def _answer(self, identity: bytes, message: Message, payload: memoryview | None) -> None:
        if not isinstance(message, Cancel):
            super()._answer(identity, message, payload)
            return
        header = {"v": 1, "type": "error", "code": UNKNOWN_JOB, "message": "No job", "hint": "", "field": None}
        header |= {"request_id": message.request_id, "job_id": message.job_id, "retry_after_s": 1.0}
        self.socket.send_multipart([identity, msgpack.packb(header)])


def test_an_unreadable_reply_to_a_cancel_does_not_end_the_job_either(make_client: Callable[..., Client]) -> None:
    server = UnreadableCancelReplies()
    try:
        client = make_client(server.endpoint).start()
        client.wait_connected(3.0)
        client.submit(make_frames(), {})
        wait_for_event(client, "accepted")
        client.cancel("j1")
        error, _ = wait_for_event(client, "error")
        assert "cannot read" in error.message.message
        time.sleep(0.1)
        assert client.active_jobs == frozenset({"j1"})
    finally:
        server.stop()


class NewerServer(FakeServer):
    """Sends results with a field this client does not know."""

    def _send_result(self, identity: bytes, job_id: str, frames: np.ndarray) -> None:
        header = {
            "v": 1,
            "type": "result",
            "job_id": job_id,
            "frames": {"shape": list(frames.shape), "dtype": "uint8"},
            "fps": 8.0,
            "metadata": {},
            "duration_s": 1.0,
        }
        self.socket.send_multipart([identity, msgpack.packb(header), np.ascontiguousarray(frames).tobytes()])


def test_a_result_the_client_cannot_read_ends_its_job_with_an_error_naming_it(
    make_client: Callable[..., Client],
) -> None:
    """Not a wait until the time-out and a job fetched again on every reconnect, to be unreadable again."""
    server = NewerServer()
    try:
        client = make_client(server.endpoint).start()
        client.wait_connected(3.0)
        started = time.monotonic()
        with pytest.raises(JobFailed, match="cannot read") as failed:
            client.run_job(make_frames(), {}, timeout=10.0)
        assert time.monotonic() - started < 5.0 and "newer than this client" in failed.value.hint
        assert client.active_jobs == frozenset()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"prompt": b"a fox"}, "binary data travels as a part"),
        ({"lora": {1: 0.5}}, "keys must be strings"),
        ({"weights": list(range(5000))}, "5000 items, more than 4096"),
        ({"prompt": "a fox " * 12000}, "header is"),
    ],
)
def test_params_the_server_could_not_read_are_refused_in_the_callers_thread(
    server: FakeServer, make_client: Callable[..., Client], params: dict, why: str
) -> None:
    """The server answers a header it cannot read with an error that names no request: `run_job` waited forever."""
    client = make_client(server.endpoint).start()
    client.wait_connected(3.0)
    with pytest.raises(ValueError, match="`params`") as refused:
        client.submit(make_frames(), params)
    assert why in str(refused.value)
    assert server.received_of(Submit) == []


def test_a_submit_queued_when_the_client_closes_is_not_sent_and_fails_as_never_sent(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    """Sent on the way out, its job would run with no one told its id, while the error said to submit it again."""
    client = make_client(server.endpoint).start()
    client.wait_connected(3.0)
    closing = threading.Thread(target=client.close)
    with client.quiet():  # the I/O thread waits: the submit is still queued when the close begins
        request_id = client.submit(make_frames(), {"mode": "hang"})
        closing.start()
        wait_until(client._shared.stop.is_set)
    closing.join(5.0)
    time.sleep(0.3)
    assert server.received_of(Submit) == []
    [error] = [event for event in client.poll_events() if event.kind == "error"]
    assert error.request_id == request_id and "it was never sent" in error.message.message


def test_a_request_with_no_answer_is_not_said_to_be_running(
    server: FakeServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(server.endpoint).start()
    client.wait_connected(3.0)
    with pytest.raises(TimeoutError, match="neither accepted nor refused") as timed_out:
        client.run_job(make_frames(), {"mode": "silent"}, timeout=0.5)
    assert "keeps running" not in str(timed_out.value)


def test_a_fetch_the_full_send_queue_refused_fails_its_wait_instead_of_leaving_it_waiting(
    server: FakeServer, make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(server.endpoint).start()
    client.wait_connected(3.0)
    real_send = connection.Connection._send_parts

    def queue_full_for_fetches(self: connection.Connection, parts: list) -> bool:
        if decode(parts, Limits())[0].TYPE == "fetch":
            return False  # as zmq.Again at the high-water mark
        return real_send(self, parts)

    monkeypatch.setattr(connection.Connection, "_send_parts", queue_full_for_fetches)
    with pytest.raises(BackendUnavailable, match="the fetch was not sent"):
        client.fetch_result("j1", timeout=5.0)
    time.sleep(0.1)
    assert client.active_jobs == frozenset()  # nothing comes for it: not followed, with the long silence limit


def test_a_status_request_the_full_send_queue_refused_says_the_backend_is_unavailable(
    server: FakeServer, make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a JobFailed, which callers read as the server refusing the request."""
    client = make_client(server.endpoint).start()
    client.wait_connected(3.0)
    real_send = connection.Connection._send_parts

    def queue_full_for_status(self: connection.Connection, parts: list) -> bool:
        return False if decode(parts, Limits())[0].TYPE == "status" else real_send(self, parts)

    monkeypatch.setattr(connection.Connection, "_send_parts", queue_full_for_status)
    with pytest.raises(BackendUnavailable, match="the status was not sent"):
        client.server_status(timeout=5.0)
