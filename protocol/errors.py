"""Protocol errors and the error codes that travel in `Error` messages. Standard library only; no bpy, no torch.

ProtocolError                 a message could not be encoded or decoded; `code` and `field` say why
BackendUnavailable            the client has no live connection to a server (none yet, or heartbeats stopped)
JobFailed                     a job ended with an `Error` message; carries code, message and hint
JobCancelledError             a job ended with `Cancelled`
"""

# Error codes, as sent in `Error.code`. Clients may match on them; the message text is for people.
BAD_MESSAGE = "bad_message"  # not msgpack, not a map, too many parts, bytes that do not match a declared shape
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_TYPE = "unknown_type"
INVALID_FIELD = "invalid_field"  # missing, unknown or wrongly typed header field
TOO_LARGE = "too_large"  # header, message, frame count or resolution over a limit
INVALID_PARAMETER = "invalid_parameter"  # a MotionClone parameter out of range (the engine's validation)
UNKNOWN_JOB = "unknown_job"  # no such job id, or its result has expired
QUEUE_FULL = "queue_full"
JOB_FAILED = "job_failed"  # an exception inside the job; the hint says what to change
OUT_OF_MEMORY = "out_of_memory"
SHUTTING_DOWN = "shutting_down"
TAKEN_OVER = "taken_over"  # another connection fetched the job: its messages go there from now on
# Raised on the client's side only, in its own error events:
BACKEND_UNAVAILABLE = "backend_unavailable"  # the request never reached a live server (or its answer never came)
CLIENT_ERROR = "client_error"  # an unexpected exception inside the client's I/O thread; it reconnects and carries on

ERROR_CODES = (
    BAD_MESSAGE,
    UNSUPPORTED_VERSION,
    UNKNOWN_TYPE,
    INVALID_FIELD,
    TOO_LARGE,
    INVALID_PARAMETER,
    UNKNOWN_JOB,
    QUEUE_FULL,
    JOB_FAILED,
    OUT_OF_MEMORY,
    SHUTTING_DOWN,
    TAKEN_OVER,
    BACKEND_UNAVAILABLE,
    CLIENT_ERROR,
)


class ProtocolError(Exception):
    """A message broke the protocol. `field` names the offending header field when there is one."""

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message
        self.request_id = request_id  # the offending message's, when it could be read
        self.job_id = job_id  # likewise: a client that cannot read a job's message ends that job with the error


class BackendUnavailable(Exception):
    """No live connection to the backend server. `job_id` names the job that was running, when there was one."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(Exception):
    """A job ended with an error message from the server."""

    def __init__(self, code: str, message: str, hint: str = "", field: str | None = None) -> None:
        super().__init__(f"{message} {hint}".strip())
        self.code = code
        self.message = message
        self.hint = hint
        self.field = field


class JobCancelledError(Exception):
    """A job was cancelled before it finished."""
