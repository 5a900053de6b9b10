"""Model presets: each builds or loads the same `ModelBundle` of diffusers/transformers components. No bpy.

The names below load lazily (PEP 562), so that `models.presets` (standard library only) can be imported without
torch and diffusers, for `motionclone info`.
"""

from importlib import import_module
from typing import Any

__all__ = ["PRESETS", "ModelBundle", "load_preset"]

# Public name -> the submodule that defines it; imported on first access.
_LAZY = {"ModelBundle": ".bundle", "PRESETS": ".registry", "load_preset": ".registry"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)
