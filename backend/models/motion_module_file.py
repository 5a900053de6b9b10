"""AnimateDiff's own motion-module files (`v3_sd15_mm.ckpt`, the file the official MotionClone code loads) as a
diffusers `MotionAdapter`. No bpy.

The official file holds the motion modules under their original names (`down_blocks.0.motion_modules.0.
temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight`, ...). diffusers' converter renames them to
its layout; the adapter's shape (channels per block, modules per block, a mid block or none, the longest clip) is read
from the tensors themselves, and the rest is what every AnimateDiff SD-1.5 module uses (8 heads, 32 norm groups).
Offline: no config is fetched from the hub, and the file is read without unpickling objects.
"""

import re
from pathlib import Path

import torch
from diffusers import MotionAdapter

from ..errors import ModelNotFoundError
from .bundle import quiet_dtype_casts
from .weights_file import read_state_dict

MOTION_ADAPTER_FLAG = "--motion-adapter"
HEADS = 8
NORM_GROUPS = 32
DEFAULT_MAX_FRAMES = 32
WEIGHT_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
_HINT = (
    "Pass AnimateDiff's motion module file (v3_sd15_mm.ckpt) or the adapter in diffusers layout (a folder with "
    "config.json and diffusion_pytorch_model.safetensors)."
)


def load_motion_module_file(path: Path, dtype: torch.dtype) -> MotionAdapter:
    """The `MotionAdapter` of an official AnimateDiff motion-module file.

    Raises:
        `ModelNotFoundError`: the file is missing or unreadable, or holds no AnimateDiff SD-1.5 motion modules.
    """
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    weights = read_state_dict(path, f"`{MOTION_ADAPTER_FLAG}` file", _HINT)
    if not any(".motion_modules." in key and ".temporal_transformer." in key for key in weights):
        raise ModelNotFoundError(
            f"The `{MOTION_ADAPTER_FLAG}` file '{path}' holds no AnimateDiff motion modules "
            f"(motion_modules.*.temporal_transformer.*). {_HINT}"
        )
    try:
        config = adapter_config(weights)
    except ValueError as error:
        raise ModelNotFoundError(f"The `{MOTION_ADAPTER_FLAG}` file '{path}': {error}. {_HINT}") from error
    adapter = MotionAdapter(**config)
    converted = convert_animatediff_checkpoint_to_diffusers(weights)
    missing, unexpected = adapter.load_state_dict(converted, strict=False)
    # The positional encodings are fixed sinusoids that the adapter computes itself (the file's copies are dropped).
    missing = [key for key in missing if not key.endswith(".pos_embed.pe")]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise ModelNotFoundError(
            f"The `{MOTION_ADAPTER_FLAG}` file '{path}' does not fit an AnimateDiff SD-1.5 motion adapter "
            f"({len(missing)} weights missing, {len(unexpected)} unexpected, first: {first}). {_HINT}"
        )
    with quiet_dtype_casts():
        return adapter.to(dtype=dtype).eval()


def adapter_config(weights: dict[str, torch.Tensor]) -> dict[str, object]:
    """MotionAdapter arguments read from an official file's tensors; ValueError when a down block is missing."""
    block_out_channels = []
    for block in range(4):
        proj_in = weights.get(f"down_blocks.{block}.motion_modules.0.temporal_transformer.proj_in.weight")
        if proj_in is None:
            raise ValueError(f"its motion modules lack down block {block}'s first module")
        block_out_channels.append(int(proj_in.shape[0]))
    modules = {int(m[1]) for key in weights if (m := re.match(r"down_blocks\.0\.motion_modules\.(\d+)\.", key))}
    layers = {
        int(m[1])
        for key in weights
        if (m := re.match(r"down_blocks\.0\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.(\d+)\.", key))
    }
    encodings = [tensor for key, tensor in weights.items() if key.endswith(".pos_encoder.pe")]
    return {
        "block_out_channels": tuple(block_out_channels),
        "motion_layers_per_block": len(modules),
        "motion_transformer_layers_per_block": len(layers),
        "motion_num_attention_heads": HEADS,
        "motion_norm_num_groups": NORM_GROUPS,
        "motion_max_seq_length": int(encodings[0].shape[1]) if encodings else DEFAULT_MAX_FRAMES,
        "use_motion_mid_block": any(key.startswith("mid_block.") for key in weights),
    }
