"""Capture of temporal self-attention probabilities in AnimateDiff's motion modules, autograd intact. No bpy.

MotionClone's motion representation and its guidance loss are both built from the temporal attention maps

    A = softmax(q kᵀ · d^−½)  ∈ R^{(B·h·w) × heads × F × F}    (softmax over the key-frame axis)

of the motion modules in the guided blocks. diffusers runs these modules with SDPA, where A never exists,
so a processor that also computes A explicitly is installed on exactly the guided modules, for the duration of a
`capture_temporal_attention` block. The module's output still comes from SDPA, exactly as diffusers' own processor
computes it (the official code likewise took the output from its fused xformers kernel); A is computed from the same
q and k only while recording, feeds only the loss, and is stored without detaching, so ∂L/∂x_t flows through it.

Notation: N = B·h·w query sequences (one per latent pixel), F frames, d head dim.
"""

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from ..errors import ParameterError
from .partial_unet import block_execution_order

# diffusers names of the temporal self-attentions (attn2 is a second self-attention). Also matches the
# motion mid block of v1/v2 adapters; the v3 layout has none.
TEMPORAL_ATTENTION_PATTERN = re.compile(
    r"^(?P<block>(down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]$"
)

# "parity": A in the module dtype, like the official fp16 baddbmm + softmax; "accurate": A in float32.
PRECISIONS = ("parity", "accurate")


def _temporal_attention_modules(unet: torch.nn.Module) -> list[tuple[str, str]]:
    """(module name, block name) of every temporal self-attention, in `named_modules()` order."""
    found = []
    for name, module in unet.named_modules():
        match = TEMPORAL_ATTENTION_PATTERN.match(name)
        if match and isinstance(module, Attention):
            found.append((name, match["block"]))
    return found


def guidable_block_names(unet: torch.nn.Module) -> list[str]:
    """The top-level blocks that hold motion modules, in the order the forward runs them.

    Args:
        unet: a diffusers `UNetMotionModel`.

    Returns:
        E.g. `["down_blocks.0", …, "down_blocks.3", "up_blocks.0", …, "up_blocks.3"]` for SD-1.5 with the v3 adapter.
    """
    with_motion = {block for _, block in _temporal_attention_modules(unet)}
    return [block for block in block_execution_order(unet) if block in with_motion]


def guided_module_names(unet: torch.nn.Module, blocks: Sequence[str]) -> list[str]:
    """Names of the temporal attention modules inside the guided `blocks`, in execution order.

    Blocks are matched exactly, so `up_blocks.1` never selects modules of `up_blocks.10` (bug B6).

    Args:
        unet: a diffusers `UNetMotionModel`.
        blocks: `motion_guidance_blocks`, e.g. `["up_blocks.1"]`.

    Returns:
        For SD-1.5 and `["up_blocks.1"]` the 6 names
        `up_blocks.1.motion_modules.{0,1,2}.transformer_blocks.0.attn{1,2}`.

    Raises:
        ParameterError: `motion_guidance_blocks` is empty, a plain string, or names a block without motion modules.
    """
    allowed = guidable_block_names(unet)
    if isinstance(blocks, str) or not blocks:
        raise ParameterError(
            "motion_guidance_blocks", f"must be a non-empty list of blocks from {allowed}; got {blocks!r}."
        )
    unknown = [block for block in blocks if block not in allowed]
    if unknown:
        raise ParameterError(
            "motion_guidance_blocks", f"has blocks without motion modules {unknown}; allowed: {allowed}."
        )
    modules = _temporal_attention_modules(unet)
    # named_modules() lists mid_block after up_blocks, so order blocks by the forward and keep module order within.
    return [name for block in allowed if block in blocks for name, owner in modules if owner == block]


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ParameterError("attention_precision", f"must be one of {list(PRECISIONS)}; got {precision!r}.")


@dataclass
class TemporalAttentionStore:
    """Attention probabilities of the last forward, per guided module.

    Attributes:
        probs: module name → A of shape (N, heads, F, F), not detached.
        recording: whether the processors write into `probs`; switch off for passes whose maps are not needed.
        record_keys: whether the processors also write the temporal keys (the `to_k` output, (N, F, C)) into `keys`
            while recording; off by default (the inversion-based semantic guidance reads them).
        keys: module name → temporal keys, not detached; empty unless `record_keys`.
    """

    probs: dict[str, torch.Tensor] = field(default_factory=dict)
    recording: bool = True
    record_keys: bool = False
    keys: dict[str, torch.Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        """Drop the stored maps and keys (and the autograd graph they keep alive)."""
        self.probs.clear()
        self.keys.clear()


def temporal_attention_probs(query: torch.Tensor, key: torch.Tensor, scale: float, precision: str) -> torch.Tensor:
    """A = softmax(q kᵀ · scale) over the key frames.

    Args:
        query: (N, heads, F, d).
        key: (N, heads, F, d).
        scale: `attn.scale` (d^−½ for the motion modules).
        precision: "parity" computes in the input dtype, "accurate" in float32.

    Returns:
        A of shape (N, heads, F, F), in the input dtype ("parity") or float32 ("accurate").
    """
    if precision == "accurate":
        query, key = query.float(), key.float()
    n, heads, frames, head_dim = query.shape
    query = query.reshape(n * heads, frames, head_dim)
    key = key.reshape(n * heads, frames, head_dim)
    # baddbmm with beta=0 ignores its input and fuses the scale into the product, as the official fp16 kernel does.
    scores = torch.baddbmm(
        torch.empty(n * heads, frames, frames, dtype=query.dtype, device=query.device),
        query,
        key.transpose(-1, -2),
        beta=0,
        alpha=scale,
    )
    return scores.softmax(dim=-1).view(n, heads, frames, frames)


class TemporalAttentionProbsProcessor:
    """diffusers attention processor for one temporal self-attention that also computes and stores A explicitly.

    Its output is `AttnProcessor2_0`'s, bit for bit, for the 3-D (N, F, C) self-attention input the motion modules
    give it; A is computed besides, from the same q and k, only while `store.recording`.

    Args:
        store: where A goes while `store.recording` is True.
        name: the module's name, the key in `store.probs`.
        precision: one of `PRECISIONS`.
    """

    def __init__(self, store: TemporalAttentionStore, name: str, precision: str = "parity") -> None:
        _check_precision(precision)
        self.store = store
        self.name = name
        self.precision = precision

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Temporal self-attention through SDPA, recording explicit probabilities.

        Args:
            attn: the `Attention` module.
            hidden_states: (N, F, C): LayerNorm output plus sinusoidal position encoding.
            encoder_hidden_states: must be None (or `hidden_states` itself): these modules are self-attention.
            attention_mask: must be None: the motion modules never mask frames.
            temb: only used by a spatial norm, which the motion modules do not have.
            **kwargs: ignored, as diffusers' own processors ignore the deprecated `scale`.

        Returns:
            (N, F, C), the attention output after `to_out`.
        """
        if attention_mask is not None:
            raise ValueError(f"{self.name}: temporal self-attention got an attention mask; it never takes one.")
        if encoder_hidden_states is not None and encoder_hidden_states is not hidden_states:
            raise ValueError(f"{self.name}: temporal self-attention got `encoder_hidden_states`; it is self-attention.")
        if hidden_states.ndim != 3:
            raise ValueError(f"{self.name}: expected (N, F, C) hidden states, got shape {tuple(hidden_states.shape)}.")

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        q = _split_heads(attn.to_q(hidden_states), attn.heads)
        key = attn.to_k(hidden_states)
        if self.store.recording and self.store.record_keys:
            self.store.keys[self.name] = key
        k = _split_heads(key, attn.heads)
        v = _split_heads(attn.to_v(hidden_states), attn.heads)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)

        if self.store.recording:
            self.store.probs[self.name] = temporal_attention_probs(q, k, attn.scale, self.precision)

        # The scale SDPA applies by default is d^−½, the motion modules' `attn.scale`.
        hidden_states = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        hidden_states = _merge_heads(hidden_states).to(q.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, F, heads·d) → (N, heads, F, d)."""
    n, frames, inner_dim = x.shape
    return x.view(n, frames, heads, inner_dim // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, F, d) → (N, F, heads·d)."""
    n, heads, frames, head_dim = x.shape
    return x.transpose(1, 2).reshape(n, frames, heads * head_dim)


@contextmanager
def capture_temporal_attention(
    unet: torch.nn.Module, module_names: Sequence[str], precision: str = "parity"
) -> Iterator[TemporalAttentionStore]:
    """Install the explicit-probability processor on exactly `module_names` while the block runs.

    Each forward inside the block overwrites the maps of the previous one. Every module gets its previous processor
    back on exit, also on exceptions. `module.set_processor` is used per module because `unet.set_attn_processor`
    would replace every processor of the UNet.

    Args:
        unet: a diffusers `UNetMotionModel`.
        module_names: temporal attention modules to capture (see `guided_module_names`).
        precision: one of `PRECISIONS`.

    Yields:
        The store the processors write to; `recording` starts True.

    Raises:
        ParameterError: `attention_precision` is not one of `PRECISIONS`.
        ValueError: `module_names` is empty or names something that is not a temporal self-attention module.
    """
    _check_precision(precision)
    if isinstance(module_names, str) or not module_names:
        raise ValueError(f"`module_names` must be a non-empty list of module names; got {module_names!r}.")
    modules = dict(unet.named_modules())
    for name in module_names:
        if not TEMPORAL_ATTENTION_PATTERN.match(name) or not isinstance(modules.get(name), Attention):
            raise ValueError(f"`module_names` entry {name!r} is not a temporal self-attention module of the UNet.")

    store = TemporalAttentionStore()
    previous = {}
    try:
        for name in dict.fromkeys(module_names):  # a repeated name must not save our own processor as "previous"
            previous[name] = modules[name].get_processor()
            modules[name].set_processor(TemporalAttentionProbsProcessor(store, name, precision))
        yield store
    finally:
        for name, processor in previous.items():
            modules[name].set_processor(processor)
