"""Model presets: each builds or loads the same `ModelBundle` of diffusers/transformers components. No bpy."""

from .bundle import ModelBundle
from .registry import PRESETS, load_preset

__all__ = ["PRESETS", "ModelBundle", "load_preset"]
