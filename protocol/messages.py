"""MotionClone protocol v1: one frozen dataclass per message. Standard library only; no bpy, no torch.

Wire layout (ZeroMQ multipart; the server's ROUTER adds and strips the routing id):

    part 0      msgpack map: the header, {"v": 1, "type": <type>, <the message's fields>}
    part 1..n   raw bytes, one part per header field that declares one, in this order:
                  Submit.reference  -> the reference frames, C-contiguous uint8 (F, H, W, 3)
                  Submit.condition  -> (optional, after the reference) SparseCtrl condition images, uint8 (K, H, W, 3)
                  Result.frames     -> part 1: the result frames, C-contiguous uint8 (F, H, W, 3)
                  Progress.preview  -> part 1: a PNG image
                  Echo.data         -> part 1: any bytes (1-D uint8), sent back unchanged

An `ArraySpec` ({"shape": [...], "dtype": "uint8"}) declares a raw part; the byte count must match exactly. Optional
fields that are None are left out of the header, so a message that uses no new field reads the same to older peers.
Field names and types below are the schema: `codec.decode` checks every one and rejects unknown fields.
Client -> server: Hello, Submit, Cancel, Fetch, Ack, Ping, Echo, Status. Server -> client: Welcome, Accepted, Queued,
Progress, Result, Cancelled, JobStatus, Error, Pong, Echo, ServerStatus.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar

PROTOCOL_VERSION = 1

# Job states reported in JobStatus.
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of a raw binary part."""

    shape: tuple[int, ...]
    dtype: str = "uint8"

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * DTYPE_SIZES[self.dtype]


DTYPE_SIZES = {"uint8": 1}


@dataclass(frozen=True)
class Message:
    """Base of all messages. `TYPE` is the wire name; `BINARY_FIELDS` names the header fields that may declare a raw
    part, in the order their parts follow the header."""

    TYPE: ClassVar[str] = ""
    BINARY_FIELDS: ClassVar[tuple[str, ...]] = ()


# ---- client -> server ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello(Message):
    """First message of a connection. Answered with Welcome, or Error(unsupported_version)."""

    TYPE: ClassVar[str] = "hello"
    request_id: str
    client: str = ""


@dataclass(frozen=True)
class Submit(Message):
    """Queue a job. `params` are MotionClone parameters by name (see docs/configuration.md); part 1 holds the frames.

    `reference_fps` is the reference clip's frame rate; `preset` must be one the server loaded (None: its default).
    Image- and sketch-to-video: `condition` declares a second part with the SparseCtrl condition images, one per entry
    of `condition_frames` (the frames they stand on, default [0]); `condition_type` is "rgb" or "scribble" and must
    be one of the Welcome's `limits["condition_types"]`. `reference_sampling`, when the client took `reference` from
    a longer clip of its own, says how ({"frame_sampling": rule, "frame_step": N, "indices": [one per frame sent]}):
    the result's metadata then records that, so that the result can be compared with the client's clip.
    """

    TYPE: ClassVar[str] = "submit"
    BINARY_FIELDS: ClassVar[tuple[str, ...]] = ("reference", "condition")
    request_id: str
    params: dict[str, Any]
    reference: ArraySpec
    reference_fps: float = 8.0
    preset: str | None = None
    condition: ArraySpec | None = None
    condition_frames: list[int] | None = None
    condition_type: str | None = None
    reference_sampling: dict[str, Any] | None = None


@dataclass(frozen=True)
class Cancel(Message):
    """Stop a queued or running job. Answered with Cancelled (or Error(unknown_job))."""

    TYPE: ClassVar[str] = "cancel"
    request_id: str
    job_id: str


@dataclass(frozen=True)
class Fetch(Message):
    """Ask for a job by id: a finished job's Result is sent again; a queued or running job, or one whose result is
    still being written to disk, is re-attached to this connection (its progress and result come here from now on)
    and JobStatus is the reply (state "done" for the last, its Result following)."""

    TYPE: ClassVar[str] = "fetch"
    request_id: str
    job_id: str


@dataclass(frozen=True)
class Ack(Message):
    """The client has stored the result: the server may delete it. Answered with JobStatus."""

    TYPE: ClassVar[str] = "ack"
    request_id: str
    job_id: str


@dataclass(frozen=True)
class Echo(Message):
    """Diagnostics: the server sends the same bytes straight back (as Echo). Measures the link's round trip and
    throughput, for example from "Test connection"."""

    TYPE: ClassVar[str] = "echo"
    BINARY_FIELDS: ClassVar[tuple[str, ...]] = ("data",)
    request_id: str
    data: ArraySpec | None = None


@dataclass(frozen=True)
class Ping(Message):
    """Heartbeat; answered with Pong."""

    TYPE: ClassVar[str] = "ping"
    request_id: str


@dataclass(frozen=True)
class Status(Message):
    """Ask how busy the server is now. Answered with ServerStatus."""

    TYPE: ClassVar[str] = "status"
    request_id: str


# ---- server -> client ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Welcome(Message):
    """Reply to Hello: what this server is and what it accepts. `limits` is documented in docs/protocol.md."""

    TYPE: ClassVar[str] = "welcome"
    request_id: str
    server_version: str
    device: str
    presets: list[str]
    default_preset: str
    limits: dict[str, Any]
    heartbeat_interval: float


@dataclass(frozen=True)
class Accepted(Message):
    """Reply to Submit: the job id (keep it to fetch the result later) and its place in the queue (0 = running next)."""

    TYPE: ClassVar[str] = "accepted"
    request_id: str
    job_id: str
    queue_position: int


@dataclass(frozen=True)
class Queued(Message):
    """The job moved up in the queue."""

    TYPE: ClassVar[str] = "queued"
    job_id: str
    queue_position: int


@dataclass(frozen=True)
class Progress(Message):
    """A job advanced. Stages: prepare, extract, denoise, decode. With `preview`, part 1 is a small PNG."""

    TYPE: ClassVar[str] = "progress"
    BINARY_FIELDS: ClassVar[tuple[str, ...]] = ("preview",)
    job_id: str
    stage: str
    step: int
    total: int
    elapsed: float
    eta: float | None = None
    preview: ArraySpec | None = None


@dataclass(frozen=True)
class Result(Message):
    """A finished job. Part 1 holds the frames; `metadata` is the engine's (seed, parameters, timings ...)."""

    TYPE: ClassVar[str] = "result"
    BINARY_FIELDS: ClassVar[tuple[str, ...]] = ("frames",)
    job_id: str
    frames: ArraySpec
    fps: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cancelled(Message):
    """A job stopped on request."""

    TYPE: ClassVar[str] = "cancelled"
    job_id: str
    reason: str = ""


@dataclass(frozen=True)
class JobStatus(Message):
    """Where a job stands: one of JOB_STATES, and its queue position while queued."""

    TYPE: ClassVar[str] = "job_status"
    request_id: str
    job_id: str
    state: str
    queue_position: int | None = None


@dataclass(frozen=True)
class Error(Message):
    """A request or a job failed. `code` is one of errors.ERROR_CODES, `field` names the offending field, `hint`
    says what to do next. `request_id` and `job_id` tie it to what failed, when known."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    hint: str = ""
    field: str | None = None
    request_id: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class ServerStatus(Message):
    """Reply to Status: the queue and the workers right now.

    `queued` counts the jobs waiting (not the running ones), `running` the jobs being generated, `completed` the jobs
    that produced a result since the server started; `workers` holds one map per worker: {"name", "device",
    "state"} with state "idle" or "busy". Job ids are never listed: knowing one is what lets a client fetch a result.
    """

    TYPE: ClassVar[str] = "server_status"
    request_id: str
    queued: int
    running: int
    completed: int
    uptime: float
    workers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Pong(Message):
    """Reply to Ping."""

    TYPE: ClassVar[str] = "pong"
    request_id: str


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Submit,
        Cancel,
        Fetch,
        Ack,
        Ping,
        Echo,
        Status,
        Welcome,
        Accepted,
        Queued,
        Progress,
        Result,
        Cancelled,
        JobStatus,
        Error,
        Pong,
        ServerStatus,
    )
}
