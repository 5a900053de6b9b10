"""What a `Client` hands to its caller (`Event`) and to its I/O thread (`Command`). No zmq.

Events (`Event.kind`): "connected" (carries the Welcome; there is no separate "welcome" event), "disconnected",
"unreachable", and one per server message: "accepted", "queued", "progress", "result", "cancelled", "job_status",
"error", "server_status" (a server message type added to the schema later comes through under its own TYPE name).
"""

import uuid
from dataclasses import dataclass

import numpy as np

from .codec import Buffer
from .messages import Message, Result

EVENT_KINDS = (
    "connected",
    "disconnected",
    "unreachable",
    "accepted",
    "queued",
    "progress",
    "result",
    "cancelled",
    "job_status",
    "error",
    "server_status",
)


@dataclass(frozen=True)
class Event:
    """Something that happened on the connection, as seen by the caller.

    Attributes:
        kind: one of EVENT_KINDS.
        message: the server's message (for "connected": the Welcome; for "disconnected": None).
        payload: the raw part: a Result's frames (a read-only view of the received zmq frame, never copied), or a
            Progress preview's PNG bytes (copied out).
        job_id: the job this event belongs to, when known.
        request_id: the request this event answers, when it answers one.
    """

    kind: str
    message: Message | None = None
    payload: bytes | memoryview | None = None
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
class Command:
    """A request from a caller's thread to the I/O thread. `parts` are the encoded frames, when already encoded."""

    message: Message
    parts: list[Buffer] | None = None


def new_id() -> str:
    """A fresh request id: 32 lowercase hex characters."""
    return uuid.uuid4().hex


def echo_bytes(data: bytes | memoryview | np.ndarray) -> memoryview:
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
