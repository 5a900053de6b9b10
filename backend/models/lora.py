"""LoRAs fused into a bundle's weights when it is loaded: the AnimateDiff v3 domain adapter and user LoRAs. No bpy.

Two kinds, both fused into the weights (the models keep their plain modules, so the engine's hooks see no change):

- The motion LoRA (`--motion-lora`): the AnimateDiff v3 domain adapter that SparseCtrl is meant to be used with
 , as the official `v3_sd15_adapter.ckpt` or its diffusers copy `guoyww/animatediff-motion-lora-v1-5-3`.
  It is merged as the official `load_diffusers_lora` does: W += scale · up @ down on the UNet's spatial attention
  projections; `X.processor.to_q_lora.down.weight` belongs to module `X.to_q` (k, v likewise, `to_out` to
  `X.to_out.0`).
- User LoRAs (`--lora`, repeatable) for the image model, kohya or diffusers `.safetensors`: converted by diffusers'
  `StableDiffusionLoraLoaderMixin.lora_state_dict`, injected into the UNet and the text encoder through peft, fused
  at their scale, and the peft layers removed again.

A LoRA is given as `PATH[:SCALE]` (scale 1.0 when left out). Each applied LoRA is recorded in the bundle's
`description`, which reaches result.json and the motion-representation cache keys.
"""

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..errors import ParameterError
from .bundle import ModelBundle
from .manifest import file_sha256
from .weights_file import error_summary, read_state_dict

LORA_FLAG = "--lora"
MOTION_LORA_FLAG = "--motion-lora"
# What a downloaded diffusers LoRA folder holds: the motion-lora repo's file, or save_lora_weights' file.
FOLDER_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "pytorch_lora_weights.safetensors")

# One down (A) or up (B) matrix of a LoRA layer, in the layouts the domain adapter comes in: the official
# attention-processor keys, diffusers' `.lora.down` / `.lora_linear_layer.down`, and peft's `lora_A` / `lora_B`.
_PROCESSOR_KEY = re.compile(
    r"^(?P<module>.+?)\.(?:processor\.)?(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$"
)
_DIFFUSERS_KEY = re.compile(r"^(?P<module>.+?)\.(?:lora|lora_linear_layer)\.(?P<part>down|up)\.weight$")
_PEFT_KEY = re.compile(r"^(?P<module>.+?)\.lora_(?P<part>A|B)\.weight$")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to fuse.

    Attributes:
        path: a `.safetensors` file (or a torch `.ckpt`), or a folder holding one of `FOLDER_WEIGHT_NAMES`.
        scale: the factor of the fused update W += scale · ΔW; 0 leaves the weights as they are.
    """

    path: str
    scale: float = 1.0


def parse_lora_spec(text: str, flag: str = LORA_FLAG) -> LoraSpec:
    """The `LoraSpec` of `PATH[:SCALE]`; raises `ParameterError` naming `flag` when SCALE is not a finite number.

    A colon that belongs to the path (`C:\\loras\\x.safetensors`) is left in it: a scale never holds a slash.
    """
    path, separator, tail = text.rpartition(":")
    if not separator or not path or "/" in tail or "\\" in tail:
        return LoraSpec(text, 1.0)
    try:
        scale = float(tail)
    except ValueError as error:
        raise ParameterError(flag, f"expects PATH[:SCALE] with a number as SCALE, got {tail!r} in {text!r}") from error
    if not math.isfinite(scale):
        raise ParameterError(flag, f"expects a finite SCALE, got {tail!r} in {text!r}")
    return LoraSpec(path, scale)


def as_lora_spec(value: str | LoraSpec, flag: str) -> LoraSpec:
    """`value` as a `LoraSpec`: preset options may hold either the parsed spec or the `PATH[:SCALE]` text."""
    return value if isinstance(value, LoraSpec) else parse_lora_spec(str(value), flag)


def apply_loras(
    bundle: ModelBundle, motion_lora: str | LoraSpec | None = None, loras: Sequence[str | LoraSpec] = ()
) -> ModelBundle:
    """Fuse the motion LoRA and then the user LoRAs into `bundle`'s models and record them in its description.

    Args:
        bundle (`ModelBundle`): the loaded models; changed in place.
        motion_lora (`str` or `LoraSpec`, *optional*): the AnimateDiff v3 domain adapter, fused into the UNet.
        loras (`list` of `str` or `LoraSpec`, defaults to none): user LoRAs for the UNet and the text encoder.

    Returns:
        `bundle`.

    Raises:
        `ModelNotFoundError`: a file is missing or unreadable.
        `ParameterError`: a scale is not a number, or a LoRA's layers do not all match a module of the model.
    """
    if motion_lora is not None:
        spec = as_lora_spec(motion_lora, MOTION_LORA_FLAG)
        path = lora_file(spec)
        fuse_motion_lora(bundle.unet, read_lora_state_dict(path, MOTION_LORA_FLAG), spec.scale, spec.path)
        bundle.description["motion_lora"] = describe_lora(spec, path)
    specs = [as_lora_spec(value, LORA_FLAG) for value in loras]
    described = []
    for index, spec in enumerate(specs):
        path = lora_file(spec)
        weights, metadata = read_lora_state_dict(path, LORA_FLAG), read_lora_metadata(path)
        fuse_user_lora(bundle, weights, spec.scale, f"lora_{index}", LORA_FLAG, spec.path, metadata)
        described.append(describe_lora(spec, path))
    if described:
        bundle.description["loras"] = described
    return bundle


def lora_file(spec: LoraSpec) -> Path:
    """The weights file of `spec`: its path, or the first of `FOLDER_WEIGHT_NAMES` in the folder it names."""
    path = Path(spec.path)
    if not path.is_dir():
        return path
    found = [path / name for name in FOLDER_WEIGHT_NAMES if (path / name).is_file()]
    return found[0] if found else path / FOLDER_WEIGHT_NAMES[0]


def describe_lora(spec: LoraSpec, path: Path) -> dict[str, Any]:
    """Plain values for the bundle description: the name given, the scale and the weights file's SHA-256 (so a
    changed file under the same name gets new representation-cache keys)."""
    return {"file": Path(spec.path).name, "scale": spec.scale, "sha256": file_sha256(path)}


def read_lora_state_dict(path: Path, flag: str) -> dict[str, torch.Tensor]:
    """The tensors of the LoRA file `path`; `ModelNotFoundError` naming `flag` when it is missing or unreadable."""
    hint = f"Pass an existing LoRA .safetensors file (or a folder holding {' or '.join(FOLDER_WEIGHT_NAMES)})."
    return read_state_dict(path, f"`{flag}` file", hint)


def read_lora_metadata(path: Path) -> dict[str, Any] | None:
    """The adapter settings (rank, alpha per layer) that diffusers and peft write into a LoRA `.safetensors` header;
    None when there are none. Without them diffusers takes alpha = rank, and a LoRA trained with another alpha would
    be fused at the wrong strength (kohya files keep their alphas as tensors instead)."""
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY

    if path.suffix != ".safetensors":
        return None
    with safe_open(path, framework="pt") as weights:  # the file was read whole before: its header is sound
        raw = (weights.metadata() or {}).get(LORA_ADAPTER_METADATA_KEY)
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None  # not diffusers' metadata: read the LoRA as one without


def motion_lora_layers(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The LoRA layers of a domain-adapter state dict by UNet module path: {"down": A, "up": B[, "alpha": α]}.

    Keys may carry a `unet.` prefix. A key that fits no known layout is kept under its own name, so that it counts
    as a layer that matches no module.
    """
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        key = key.removeprefix("unet.")
        if key.endswith(".alpha"):
            module, _ = _module_and_part(key.removesuffix(".alpha"))
            layers.setdefault(module or key.removesuffix(".alpha"), {})["alpha"] = tensor
            continue
        module, part = _module_and_part(key)
        layers.setdefault(module or key, {})[part or "unknown"] = tensor
    return layers


def _module_and_part(key: str) -> tuple[str | None, str | None]:
    """(module path, "down" or "up") of one LoRA matrix key; (None, None) when the key fits no layout."""
    if match := _PROCESSOR_KEY.match(key):
        projection = "to_out.0" if match["proj"] == "to_out" else match["proj"]
        return f"{match['module']}.{projection}", match["part"]
    if match := _DIFFUSERS_KEY.match(key):
        return match["module"], match["part"]
    if match := _PEFT_KEY.match(key):
        return match["module"], "down" if match["part"] == "A" else "up"
    # An alpha's key is a module path, or a down key that the patterns above already resolved.
    return (key, None) if not key.endswith(".weight") else (None, None)


@torch.no_grad()
def fuse_motion_lora(
    unet: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    scale: float,
    path: str = "",
    flag: str = MOTION_LORA_FLAG,
) -> int:
    """W += scale · (α / rank) · up @ down for every layer of `state_dict` (α / rank is 1 without an alpha, as in
    the official code); returns how many layers were fused.

    The update is computed in float32 and added before casting back, so a float16 UNet loses no more than one
    rounding. Nothing is changed unless every layer matches a module with a weight of the right shape.
    """
    layers = motion_lora_layers(state_dict)
    modules = dict(unet.named_modules())
    updates: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        weight = getattr(modules.get(name), "weight", None)
        if weight is None or "down" not in layer or "up" not in layer:
            continue
        down, up = layer["down"].float(), layer["up"].float()
        factor = scale * (float(layer["alpha"]) / down.shape[0] if "alpha" in layer else 1.0)
        delta = factor * (up.flatten(1) @ down.flatten(1))
        if delta.numel() != weight.numel():
            continue
        updates[name] = delta.reshape(weight.shape)
    _check_all_matched(flag, path, len(updates), len(layers), [name for name in layers if name not in updates])
    for name, delta in updates.items():
        weight = modules[name].weight
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return len(updates)


def fuse_user_lora(
    bundle: ModelBundle,
    state_dict: dict[str, torch.Tensor],
    scale: float,
    adapter_name: str,
    flag: str,
    path: str,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Load a kohya or diffusers LoRA into the UNet and text encoder with diffusers' loaders, fuse it at `scale`
    and remove the peft layers; returns how many layers were fused. `metadata`: the file's adapter settings
    (read_lora_metadata)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as LoraLoader
    from diffusers.loaders.lora_base import fuse_text_encoder_lora

    try:
        converted, network_alphas = LoraLoader.lora_state_dict(state_dict)
    except (ValueError, KeyError, IndexError) as error:
        raise ParameterError(flag, f"'{path}' is not a LoRA diffusers can read: {error}") from error
    layers = sum(key.endswith((".lora_A.weight", ".down.weight")) for key in converted)
    try:
        try:
            LoraLoader.load_lora_into_unet(
                converted, network_alphas, bundle.unet, adapter_name=adapter_name, metadata=metadata
            )
            LoraLoader.load_lora_into_text_encoder(
                converted, network_alphas, bundle.text_encoder, adapter_name=adapter_name, metadata=metadata
            )
        except ValueError as error:  # peft refuses a LoRA none of whose target modules exist
            matched = _count_lora_layers(bundle.unet) + _count_lora_layers(bundle.text_encoder)
            message = f"'{path}': {matched} of {layers} LoRA layers match a module ({error})"
            raise ParameterError(flag, message) from error
        except RuntimeError as error:  # the module names exist but the shapes differ: another base model's LoRA
            if "size mismatch" not in str(error):  # out of memory, say: not the file's fault
                raise
            raise ParameterError(
                flag,
                f"'{path}' was made for another base model: its layers do not fit SD-1.5's "
                f"({error_summary(error)}); use a LoRA made for SD-1.5",
            ) from error
        matched = _count_lora_layers(bundle.unet) + _count_lora_layers(bundle.text_encoder)
        _check_all_matched(flag, path, matched, layers, [])
        bundle.unet.fuse_lora(lora_scale=scale, adapter_names=[adapter_name])
        fuse_text_encoder_lora(bundle.text_encoder, lora_scale=scale, adapter_names=[adapter_name])
    finally:
        _remove_lora_layers(bundle)
    return matched


def _count_lora_layers(model: torch.nn.Module) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(module, BaseTunerLayer) for module in model.modules())


def _remove_lora_layers(bundle: ModelBundle) -> None:
    """Put the plain modules back (keeping what was fused): the engine hooks into module names and processors."""
    from diffusers.utils import recurse_remove_peft_layers

    if getattr(bundle.unet, "_hf_peft_config_loaded", False):
        bundle.unet.unload_lora()
    recurse_remove_peft_layers(bundle.text_encoder)
    if getattr(bundle.text_encoder, "peft_config", None) is not None:
        del bundle.text_encoder.peft_config
        bundle.text_encoder._hf_peft_config_loaded = None


def _check_all_matched(flag: str, path: str, matched: int, total: int, unmatched: list[str]) -> None:
    """Refuse a LoRA with layers that fit no module: leaving them out would quietly apply part of it."""
    if total > 0 and matched == total:
        return
    example = f" (first unmatched: {unmatched[0]!r})" if unmatched else ""
    raise ParameterError(
        flag,
        f"'{path}': {matched} of {total} LoRA layers match a module of the model{example}; "
        "is it a LoRA for SD-1.5 (the domain adapter for --motion-lora, an image LoRA for --lora)?",
    )
