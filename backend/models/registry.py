"""Model presets by name. No bpy."""

from collections.abc import Callable
from typing import Any

import torch

from ..errors import ParameterError
from .bundle import ModelBundle
from .sd15 import SD15Sources, load_sd15_bundle
from .tiny import build_tiny_bundle


def _tiny(device: str, dtype: torch.dtype | None, options: dict[str, Any]) -> ModelBundle:
    return build_tiny_bundle(seed=int(options.get("seed", 0)), device=device, dtype=dtype or torch.float32)


def _sd15(device: str, dtype: torch.dtype | None, options: dict[str, Any]) -> ModelBundle:
    return load_sd15_bundle(SD15Sources(**options), device=device, dtype=dtype)


PRESETS: dict[str, Callable[[str, torch.dtype | None, dict[str, Any]], ModelBundle]] = {
    "tiny": _tiny,
    "sd15-animatediff-v3": _sd15,
}


def load_preset(name: str, device: str = "cpu", dtype: torch.dtype | None = None, **options: Any) -> ModelBundle:
    """Build or load the components of preset `name`.

    Args:
        name (`str`): one of `PRESETS` ("tiny", "sd15-animatediff-v3").
        device (`str`, defaults to "cpu"): target device.
        dtype (`torch.dtype`, *optional*): model dtype; each preset has its own default.
        **options: preset options: `seed` for tiny; the fields of `SD15Sources` for sd15-animatediff-v3.
    """
    if name not in PRESETS:
        raise ParameterError("preset", f"must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name](device, dtype, options)
