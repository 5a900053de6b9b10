"""SparseCtrl weights for SD-1.5: a diffusers folder or hub id, or the official single file. No bpy.

The kind is the user's choice, since neither a hub id nor a file name says it reliably:

- `rgb`: keyframes as VAE latents; `v3_sd15_sparsectrl_rgb.ckpt` or `guoyww/animatediff-sparsectrl-rgb`
  (`conditioning_channels=4`, one 3x3 conv as the condition embedding).
- `scribble`: line drawings as pixels; `v3_sd15_sparsectrl_scribble.ckpt` or `guoyww/animatediff-sparsectrl-scribble`
  (`conditioning_channels=3`, a conv tower (16, 32, 96, 256) as the condition embedding).

Both concatenate the mask to the condition, zero the noisy sample before `conv_in` (diffusers' SparseControlNetModel
always does: the official `set_noisy_sample_input_to_zero`), have one temporal self-attention per motion module and
no mid motion module. The official single file uses diffusers' names except inside the motion modules, which
`convert_official_sparsectrl` renames.
"""

from pathlib import Path
from typing import Any

import torch
from diffusers import SparseControlNetModel

from ..engine.sparsectrl import CONDITION_KINDS
from ..errors import ModelNotFoundError, ParameterError
from .weights_file import error_summary, read_state_dict

SPARSECTRL_FLAG = "--sparsectrl"
SPARSECTRL_MODEL_FLAG = "--sparsectrl-model"
DEFAULT_SPARSECTRL_MODELS = {
    "rgb": "guoyww/animatediff-sparsectrl-rgb",
    "scribble": "guoyww/animatediff-sparsectrl-scribble",
}
OFFICIAL_FILE_NAMES = {"rgb": "v3_sd15_sparsectrl_rgb.ckpt", "scribble": "v3_sd15_sparsectrl_scribble.ckpt"}
SINGLE_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")

# Official motion-module names -> diffusers' (AnimateDiffTransformer3D / BasicTransformerBlock), applied in order:
# the positional encoding sits in the first attention block officially and on the transformer block in diffusers.
MOTION_MODULE_RENAMES = (
    (".temporal_transformer.", "."),
    (".attention_blocks.0.pos_encoder.", ".pos_embed."),
    (".attention_blocks.0.", ".attn1."),
    (".norms.0.", ".norm1."),
    (".ff_norm.", ".norm3."),
)
# The sinusoidal table is rebuilt from the config, as the official loader drops it (`pos_encoder.pe`).
POSITIONAL_TABLE_SUFFIX = "pos_embed.pe"
# The condition embedding's first weight tells the two kinds apart.
KIND_MARKER_KEYS = {"rgb": "controlnet_cond_embedding.weight", "scribble": "controlnet_cond_embedding.conv_in.weight"}


def check_kind(kind: str) -> None:
    """Raise `ParameterError` naming `--sparsectrl` unless `kind` is one of `CONDITION_KINDS`."""
    if kind not in CONDITION_KINDS:
        raise ParameterError(SPARSECTRL_FLAG, f"must be one of {', '.join(CONDITION_KINDS)}, got {kind!r}")


def sparsectrl_config(kind: str) -> dict[str, Any]:
    """The SparseControlNetModel config of the official SD-1.5 SparseCtrl of `kind` ("rgb" or "scribble")."""
    check_kind(kind)
    config: dict[str, Any] = {
        "in_channels": 4,
        "down_block_types": ("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",),
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
        "motion_max_seq_length": 32,
        "motion_num_attention_heads": 8,
        "concat_conditioning_mask": True,
    }
    if kind == "rgb":
        return {**config, "conditioning_channels": 4, "use_simplified_condition_embedding": True}
    return {
        **config,
        "conditioning_channels": 3,
        "use_simplified_condition_embedding": False,
        "conditioning_embedding_out_channels": (16, 32, 96, 256),
    }


def sparsectrl_hint(kind: str) -> str:
    """How to get the SparseCtrl weights of `kind` onto this machine."""
    return (
        f"Download them with `hf download {DEFAULT_SPARSECTRL_MODELS[kind]} --local-dir DIR` on a "
        f"machine with internet access and pass DIR with {SPARSECTRL_MODEL_FLAG}, or pass the official single file "
        f"{OFFICIAL_FILE_NAMES[kind]} (from https://huggingface.co/guoyww/animatediff)."
    )


def load_sparsectrl(
    kind: str,
    source: str | None = None,
    dtype: torch.dtype = torch.float32,
    local_files_only: bool = False,
    config: dict[str, Any] | None = None,
) -> SparseControlNetModel:
    """Load the SparseCtrl model of `kind` from `source`.

    Args:
        kind (`str`): "rgb" or "scribble".
        source (`str`, *optional*): a diffusers folder or hub id (`SparseControlNetModel.from_pretrained`), or an
            official single file (`.ckpt`, `.safetensors`); defaults to the hub id of `kind`.
        dtype (`torch.dtype`, defaults to float32): model dtype.
        local_files_only (`bool`, defaults to False): never contact the hub.
        config (`dict`, *optional*): the model config of a single file; defaults to `sparsectrl_config(kind)`.

    Raises:
        `ModelNotFoundError`: the source is missing or unreadable (the message says how to get it).
        `ParameterError`: the weights are of the other kind, or not SparseCtrl weights at all.
    """
    check_kind(kind)
    source = source or DEFAULT_SPARSECTRL_MODELS[kind]
    path = Path(source)
    if path.is_file():
        controlnet = load_sparsectrl_single_file(path, kind, config)
    elif source.endswith(SINGLE_FILE_SUFFIXES):
        raise ModelNotFoundError(f"The SparseCtrl {kind} file '{source}' does not exist. {sparsectrl_hint(kind)}")
    else:
        try:
            controlnet = SparseControlNetModel.from_pretrained(source, local_files_only=local_files_only)
        except (OSError, ValueError) as error:
            raise ModelNotFoundError(
                f"Cannot load the SparseCtrl {kind} model from '{source}' ({error_summary(error)}). "
                f"{sparsectrl_hint(kind)}"
            ) from error
        check_config_kind(controlnet, kind, source)
    return controlnet.to(dtype=dtype).eval()


def check_config_kind(controlnet: SparseControlNetModel, kind: str, source: str) -> None:
    """Raise `ParameterError` when the model's condition embedding is that of the other kind."""
    simplified = bool(controlnet.config.use_simplified_condition_embedding)
    found = "rgb" if simplified else "scribble"
    if found != kind:
        raise ParameterError(
            SPARSECTRL_FLAG, f"is {kind!r} but the SparseCtrl model '{source}' is a {found} model; pass the other"
        )


def load_sparsectrl_single_file(
    path: str | Path, kind: str, config: dict[str, Any] | None = None
) -> SparseControlNetModel:
    """A SparseControlNetModel from an official single file (`v3_sd15_sparsectrl_{rgb,scribble}.ckpt` layout).

    Every weight of the model must come from the file, and every tensor of the file must find its place, except the
    sinusoidal positional tables, which the model rebuilds from `config`.
    """
    state_dict = read_state_dict(path, f"SparseCtrl {kind} file", sparsectrl_hint(kind))
    converted = convert_official_sparsectrl(state_dict)
    check_file_kind(converted, kind, path)
    with torch.random.fork_rng(devices=[]):
        # The random initialisation is overwritten below; keep it off the global RNG.
        controlnet = SparseControlNetModel.from_config(config or sparsectrl_config(kind))
    try:
        missing, unexpected = controlnet.load_state_dict(converted, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape: weights for another model size
        first_line = str(error).splitlines()[1] if len(str(error).splitlines()) > 1 else str(error)
        raise ParameterError(
            SPARSECTRL_MODEL_FLAG, f"'{path}' does not fit the SD-1.5 SparseCtrl {kind} model: {first_line.strip()}"
        ) from error
    missing = [key for key in missing if not key.endswith(POSITIONAL_TABLE_SUFFIX)]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ParameterError(
            SPARSECTRL_MODEL_FLAG,
            f"'{path}' is not a SparseCtrl {kind} checkpoint in the official layout: {len(missing)} weights missing, "
            f"{len(unexpected)} unknown (for example {example!r})",
        )
    return controlnet


def check_file_kind(state_dict: dict[str, torch.Tensor], kind: str, path: str | Path) -> None:
    """Raise `ParameterError` when the file's condition embedding is that of the other kind."""
    for other, marker in KIND_MARKER_KEYS.items():
        if other != kind and marker in state_dict and KIND_MARKER_KEYS[kind] not in state_dict:
            raise ParameterError(
                SPARSECTRL_FLAG, f"is {kind!r} but '{path}' holds a {other} SparseCtrl model; pass the other"
            )


def convert_official_sparsectrl(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official SparseCtrl state dict under diffusers' SparseControlNetModel names, without positional tables."""
    converted = {}
    for key, tensor in state_dict.items():
        if ".motion_modules." in key:
            for official, diffusers_name in MOTION_MODULE_RENAMES:
                key = key.replace(official, diffusers_name)
        if not key.endswith(POSITIONAL_TABLE_SUFFIX):
            converted[key] = tensor
    return converted
