"""Exceptions raised by the backend. No bpy.

MotionCloneError                 base of everything the backend raises on purpose
├── ModelNotFoundError           a weight file, folder or hub id cannot be found (offline or missing)
├── VideoInputError              a reference video is unreadable, empty or too short
├── ParameterError (ValueError)  a parameter is outside its allowed range; names the parameter
├── ResultFolderInUse            an output folder already holds a result that was not to be replaced
└── JobCancelled                 the caller's cancel check asked the engine to stop

VideoInputWarning (UserWarning)  a reference was read, but may not be what the user meant (a video cut short)
"""


class MotionCloneError(Exception):
    """Base class of the backend's own errors."""


class ModelNotFoundError(MotionCloneError):
    """A model file, folder or hub id could not be found or loaded."""


class VideoInputError(MotionCloneError):
    """A reference video could not be read, or holds too few frames."""


class VideoInputWarning(UserWarning):
    """A reference was read but looks damaged: shown to the user as a warning, the job goes on."""


class ParameterError(MotionCloneError, ValueError):
    """A parameter is invalid. `name` is the parameter, so a server can point at the field."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"`{name}` {message}")
        self.name = name
        self.detail = message


class ResultFolderInUse(MotionCloneError, FileExistsError):
    """An output folder already holds a result (frames, video, metadata), and replacing it was not asked for."""


class ResultNotStored(MotionCloneError):
    """A result that arrived could not be written; the server keeps it for a later fetch."""


class JobCancelled(MotionCloneError):
    """The cancel check returned True; the engine stopped between two steps."""


def out_of_memory_summary(error: BaseException) -> str:
    """ "The GPU ran out of memory: " and the first line of torch's message (the rest is allocator advice)."""
    return f"The GPU ran out of memory: {(str(error).splitlines() or ['no details'])[0]}"
