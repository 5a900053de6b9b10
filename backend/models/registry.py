"""Model presets by name. No bpy."""

from collections.abc import Callable
from typing import Any

import torch

from ..errors import ParameterError
from .blocks import NATIVE_SIZE as BLOCKS_NATIVE_SIZE
from .blocks import load_blocks_bundle
from .bundle import ModelBundle
from .lora import apply_loras
from .presets import default_preset as default_preset  # re-exported: the CLI and tests ask the registry
from .sd15 import SD15Sources, load_sd15_bundle
from .sparsectrl import SPARSECTRL_FLAG, check_kind
from .tiny import build_tiny_bundle

# Options every preset takes: LoRAs fused once the preset's models are loaded.
LORA_OPTIONS = ("motion_lora", "loras")


def _tiny(device: str, dtype: torch.dtype | None, options: dict[str, Any]) -> ModelBundle:
    if options.get("sparsectrl") is not None:
        check_kind(options["sparsectrl"])
    return build_tiny_bundle(
        seed=int(options.get("seed", 0)),
        device=device,
        dtype=dtype or torch.float32,
        sparsectrl=options.get("sparsectrl"),
    )


def _blocks(device: str, dtype: torch.dtype | None, options: dict[str, Any]) -> ModelBundle:
    if options.get("sparsectrl") is not None or options.get("sparsectrl_model") is not None:
        raise ParameterError(
            SPARSECTRL_FLAG,
            "is not available with the blocks preset: it was trained without SparseCtrl. Use "
            "`--preset sd15-animatediff-v3` (real SparseCtrl weights) or `--preset tiny` (a random one)",
        )
    return load_blocks_bundle(device=device, dtype=dtype, folder=options.get("folder"))


def _sd15(device: str, dtype: torch.dtype | None, options: dict[str, Any]) -> ModelBundle:
    return load_sd15_bundle(SD15Sources(**options), device=device, dtype=dtype)


PRESETS: dict[str, Callable[[str, torch.dtype | None, dict[str, Any]], ModelBundle]] = {
    "blocks": _blocks,
    "tiny": _tiny,
    "sd15-animatediff-v3": _sd15,
}

# The size each preset generates when the job leaves num_frames, height or width out: what its weights learned.
NATIVE_SIZES: dict[str, dict[str, int]] = {
    "blocks": BLOCKS_NATIVE_SIZE,
    "tiny": {"num_frames": 16, "height": 64, "width": 64},
    "sd15-animatediff-v3": {"num_frames": 16, "height": 512, "width": 512},
}


def load_preset(name: str, device: str = "cpu", dtype: torch.dtype | None = None, **options: Any) -> ModelBundle:
    """Build or load the components of preset `name`.

    Args:
        name (`str`): one of `PRESETS` ("blocks", "tiny", "sd15-animatediff-v3").
        device (`str`, defaults to "cpu"): target device.
        dtype (`torch.dtype`, *optional*): model dtype; each preset has its own default.
        **options: preset options: `folder` (another trained model folder) for blocks; `seed` and `sparsectrl`
            ("rgb" or "scribble", a random SparseCtrl) for tiny; the fields of `SD15Sources` for
            sd15-animatediff-v3. Every preset also takes `motion_lora` (the AnimateDiff v3 domain adapter) and
            `loras` (image-model LoRAs), each a `LoraSpec` or "PATH[:SCALE]" text, fused by `apply_loras`.
    """
    if name not in PRESETS:
        raise ParameterError("preset", f"must be one of {sorted(PRESETS)}, got {name!r}")
    lora_options = {key: options.pop(key) for key in LORA_OPTIONS if key in options}
    bundle = PRESETS[name](device, dtype, options)
    return apply_loras(bundle, lora_options.get("motion_lora"), lora_options.get("loras") or ())
