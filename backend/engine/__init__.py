"""MotionClone engine: motion representation, guided sampling, parameters. No bpy."""

from .parameters import CONFIG_PRESETS, MotionCloneParams, validate_params
from .pipeline_motionclone import STAGES, MotionCloneOutput, MotionClonePipeline
from .representation import MotionRepresentation, RepresentationCache

__all__ = [
    "CONFIG_PRESETS",
    "STAGES",
    "MotionCloneOutput",
    "MotionCloneParams",
    "MotionClonePipeline",
    "MotionRepresentation",
    "RepresentationCache",
    "validate_params",
]
