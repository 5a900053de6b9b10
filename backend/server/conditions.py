"""SparseCtrl conditions from a Submit: checked like the reference, resized to the job's size. No bpy."""

import numpy as np

from ...protocol import errors as codes
from ...protocol.errors import ProtocolError
from ...protocol.messages import Submit
from ..engine import MotionCloneParams
from ..engine.sparsectrl import CONDITION_KINDS, SparseCondition
from ..video_io import resize_frames


def condition_from_submit(message: Submit, payload: memoryview | None) -> SparseCondition | None:
    """The condition a Submit carries, at the size it was sent; None for text-to-video.

    Raises `ProtocolError(invalid_field)` naming the field when the condition fields do not fit together.
    """
    if message.condition is None:
        for name in ("condition_frames", "condition_type"):
            if getattr(message, name) is not None:
                raise ProtocolError(codes.INVALID_FIELD, f"{name} was sent without condition images", name)
        return None
    assert payload is not None  # decode() guarantees a declared part is present
    shape = message.condition.shape
    if message.condition_type not in CONDITION_KINDS:
        raise ProtocolError(
            codes.INVALID_FIELD,
            f"condition_type must be one of {', '.join(CONDITION_KINDS)} with condition images, "
            f"got {message.condition_type!r}",
            "condition_type",
        )
    frames = tuple(message.condition_frames) if message.condition_frames is not None else (0,)
    if shape[0] != len(frames):
        raise ProtocolError(
            codes.INVALID_FIELD,
            f"condition holds {shape[0]} images for {len(frames)} condition_frames {list(frames)}",
            "condition",
        )
    images = np.frombuffer(payload, dtype=np.uint8).reshape(shape).copy()
    return SparseCondition(message.condition_type, images, frames)


def fit_condition(condition: SparseCondition, params: MotionCloneParams) -> SparseCondition:
    """The condition resized to the generation's size (images may come at any size, like the reference)."""
    if condition.images.shape[1:3] == (params.height, params.width):
        return condition
    # The reference's resize mode, so a keyframe rendered like the reference lines up with it; resampled as the
    # official code resamples its condition images.
    images = resize_frames(condition.images, params.height, params.width, params.resize_mode, sampling="image")
    return SparseCondition(condition.kind, images, condition.frames)
