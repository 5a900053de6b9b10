"""The blocking calls of a `Client`, for scripts, tests and the CLI (the add-on never blocks; it polls events).

Each waits on the client's event queue and takes, and drops, the events of other requests that arrive meanwhile, so
use them from one thread and not together with `poll_events`.
"""

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import stages
from .errors import (
    BACKEND_UNAVAILABLE,
    BAD_MESSAGE,
    JOB_FAILED,
    BackendUnavailable,
    JobCancelledError,
    JobFailed,
    ProtocolError,
)
from .events import Event, echo_bytes
from .messages import Cancelled, Error, JobStatus, ServerStatus, Welcome


class BlockingCalls:
    """Mixed into `Client`: waits built on its non-blocking requests and its event queue."""

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
        condition: Any = None,
        reference_sampling: dict[str, Any] | None = None,
    ) -> Event:
        """Submit a job and wait for its result. Takes (and drops) events of other jobs that arrive meanwhile.

        Args:
            frames, params, fps, preset, condition, reference_sampling: as for `submit`.
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
        request_id = self.submit(
            frames, params, fps=fps, preset=preset, condition=condition, reference_sampling=reference_sampling
        )
        job_id: str | None = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self._wait_event(deadline)
            if event is None:
                if job_id is None:
                    raise TimeoutError(
                        f"request {request_id} got no answer within {timeout:g} s, neither accepted nor refused; the "
                        "server may not have it: check it with `motionclone status` before you submit it again"
                    )
                raise TimeoutError(
                    f"job {job_id} did not finish within {timeout:g} s; it keeps running on the server: cancel or "
                    "fetch it by job id"
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

    def server_status(self, timeout: float) -> ServerStatus:
        """Ask how busy the server is and wait for the answer (connecting first, within the same `timeout`). Takes
        (and drops) the events that arrive meanwhile.

        Raises:
            BackendUnavailable: no connection within `timeout`, or it died while waiting.
            JobFailed: the server answered with an error (a server older than the "status" message: "unknown_type").
            TimeoutError: no answer within `timeout`.
        """
        self._check_started()
        deadline = time.monotonic() + timeout
        self.wait_connected(timeout)
        request_id = self.status()
        while True:
            event = self._wait_event(deadline)
            if event is None:
                raise TimeoutError(f"no status from {self._endpoint} within {timeout:g} s")
            if event.kind == "disconnected":
                raise BackendUnavailable(f"lost the connection to {self._endpoint} while waiting for its status")
            if event.request_id != request_id:
                continue
            if isinstance(event.message, ServerStatus):
                return event.message
            if isinstance(event.message, Error):
                message = event.message
                if message.code == BACKEND_UNAVAILABLE:  # the request was not sent (a full send queue)
                    raise BackendUnavailable(f"{message.message}. {message.hint}".strip())
                raise JobFailed(message.code, message.message, message.hint, message.field)

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
        sent = echo_bytes(data)
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
        if message.state == stages.FAILED:
            raise JobFailed(
                JOB_FAILED, f"job {job_id} failed on the server", "Submit it again, or check the server log."
            )
        if message.state == stages.CANCELLED:
            raise JobCancelledError(f"job {job_id} was cancelled")
    return False
