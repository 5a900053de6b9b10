"""Location-aware semantic guidance of the inversion-based MotionClone (paper v1-v3). No bpy.

The object named in the reference (inversion) prompt is located in the reference video through the text
cross-attention of `up_blocks.1`; the generated video is then pulled, at that location, towards the appearance of the
new object in the "appearance" stream (a plain CFG trajectory of the new prompt from the same initial noise).

Notation (paper v1-v3):
    S ∈ [0, 1]^{F×h×w}    cross-attention map of one token, averaged over heads and layers, min-max per frame
    b = [S_ref > τ_ex]    binary reference mask; g = Gaussian (σ) centred on the centroid of b, per frame
    M_ex_fg = g·b,  M_ex_bg = (1−g)(1−b)            reference-location masks (applied to the generated video)
    M_app_fg = [S_app > τ_app],  M_app_bg = 1 − M_app_fg    the appearance stream's own masks
    K_x ∈ R^{F×hw×C}      temporal-attention keys (`to_k` output) of a guided motion module, stream x
    fg_x(M) = Σ_hw K_x·M / (Σ_hw M + 1e−5)           masked key mean per frame, (F, C)
    L^sem_m = MSE(fg_gen(M_ex_fg), fg_app(M_app_fg)) + MSE(bg_gen(M_ex_bg), bg_app(M_app_bg))
    L_sem = mean_m (a_m/100 · L^sem_m)

Fixes of the official code (bug B14): a frame where the reference word is found nowhere (empty binary mask b, whose
centroid the official code divides by zero, turning the whole loss into NaN) is left out of both terms; every other
frame counts as in the official mean, even where another mask is empty (its masked mean is then 0); masks follow
non-square latents and any frame count; σ scales with the map (5 cells at 16×16, as official); words are looked up
as whole token sequences and a missing word raises `ParameterError` naming the field.
"""

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from ..errors import ParameterError

# The spatial text cross-attentions of a block: `<block>.attentions.<j>.transformer_blocks.<k>.attn2`.
CROSS_ATTENTION_PATTERN = re.compile(
    r"^(?P<block>(down_blocks|up_blocks)\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\.attn2$"
)
# The block whose cross-attention locates the objects (official: `up_blocks.1`, 16×16 at 512²).
MASK_BLOCK = "up_blocks.1"
# σ of the Gaussian in cells of a 16-cell side (official 5 at 16×16); scaled with the map's height and width.
REFERENCE_MAP_SIDE = 16
# Denominator guard of the masked means (official value).
MASK_EPS = 1e-5


def cross_attention_module_names(unet: torch.nn.Module, block: str = MASK_BLOCK) -> list[str]:
    """Names of the spatial text cross-attention modules of `block`, in `named_modules()` order.

    Raises:
        ValueError: the block has no text cross-attention.
    """
    names = [
        name
        for name, module in unet.named_modules()
        if isinstance(module, Attention)
        and (match := CROSS_ATTENTION_PATTERN.match(name))
        and match["block"] == block
        and module.is_cross_attention
    ]
    if not names:
        raise ValueError(f"{block!r} has no text cross-attention modules; location-aware guidance needs them.")
    return names


@dataclass
class CrossAttentionStore:
    """Head-averaged cross-attention probabilities of the last forward, per module.

    Attributes:
        probs: module name → (B·F, h·w, tokens), averaged over heads.
        recording: whether the processors write into `probs`.
    """

    probs: dict[str, torch.Tensor] = field(default_factory=dict)
    recording: bool = False

    def clear(self) -> None:
        """Drop the stored maps."""
        self.probs.clear()

    def token_maps(self, token_index: int) -> torch.Tensor:
        """The map of one token averaged over heads and layers: (B·F, h·w)."""
        if not self.probs:
            raise RuntimeError("no cross-attention was recorded; run a forward with `recording = True` first.")
        return torch.stack([probs[..., token_index] for probs in self.probs.values()]).float().mean(0)


class CrossAttentionProbsProcessor:
    """Text cross-attention with explicit probabilities, stored head-averaged while `store.recording`.

    Same output as `AttnProcessor2_0` up to rounding, for the (B·F, h·w, C) input and (B·F, 77, C_text) context of
    the spatial transformer's `attn2`.

    Args:
        store: where the maps go.
        name: the module's name, the key in `store.probs`.
    """

    def __init__(self, store: CrossAttentionStore, name: str) -> None:
        self.store = store
        self.name = name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """softmax(q kᵀ·d^−½) v over the text tokens; stores the probabilities averaged over heads."""
        if attention_mask is not None:
            raise ValueError(f"{self.name}: text cross-attention got an attention mask; SD-1.5 never passes one.")
        if hidden_states.ndim != 3:
            raise ValueError(f"{self.name}: expected (B·F, h·w, C) hidden states, got {tuple(hidden_states.shape)}.")
        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross is not None and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        batch, tokens, _ = hidden_states.shape
        q = attn.to_q(hidden_states).view(batch, tokens, attn.heads, -1).transpose(1, 2)
        k = attn.to_k(context).view(batch, context.shape[1], attn.heads, -1).transpose(1, 2)
        v = attn.to_v(context).view(batch, context.shape[1], attn.heads, -1).transpose(1, 2)
        probs = ((q @ k.transpose(-1, -2)) * attn.scale).softmax(dim=-1)
        if self.store.recording:
            self.store.probs[self.name] = probs.mean(dim=1)
        out = (probs @ v).transpose(1, 2).reshape(batch, tokens, -1)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def capture_cross_attention(unet: torch.nn.Module, module_names: Sequence[str]) -> Iterator[CrossAttentionStore]:
    """Install `CrossAttentionProbsProcessor` on `module_names` while the block runs; restores the old processors.

    Yields:
        The store; `recording` starts False, switch it on for the passes whose maps are wanted.
    """
    modules = dict(unet.named_modules())
    store = CrossAttentionStore()
    previous = {}
    try:
        for name in dict.fromkeys(module_names):
            previous[name] = modules[name].get_processor()
            modules[name].set_processor(CrossAttentionProbsProcessor(store, name))
        yield store
    finally:
        for name, processor in previous.items():
            modules[name].set_processor(processor)


def word_token_index(tokenizer: Any, prompt: str, word: str, field_name: str) -> int:
    """Position (BOS included) of the first token of the first occurrence of `word` in the tokenised `prompt`.

    The word is matched as its whole token sequence (official: first sub-token only, bug B14), case-insensitively
    as CLIP lower-cases.

    Raises:
        ParameterError: naming `field_name`, when the word is empty, not in the prompt, or past the 77-token limit.
    """
    if not isinstance(word, str) or not word.strip():
        raise ParameterError(field_name, f"must name a word of the prompt, got {word!r}")
    prompt_ids = tokenizer(prompt.lower(), truncation=True, max_length=tokenizer.model_max_length).input_ids
    word_ids = tokenizer(word.strip().lower(), add_special_tokens=False).input_ids
    for start in range(1, len(prompt_ids) - len(word_ids) + 1):
        if prompt_ids[start : start + len(word_ids)] == word_ids:
            return start
    raise ParameterError(field_name, f"word {word!r} does not occur in the prompt {prompt!r} (within 77 tokens)")


def normalized_token_map(maps: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    """(F, h·w) map of one token (batch 1) → (F, h, w), min-max normalised per frame (constant frames → 0)."""
    maps = maps.reshape(num_frames, height * width).float()
    low = maps.min(dim=1, keepdim=True).values
    high = maps.max(dim=1, keepdim=True).values
    span = high - low
    normalised = torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)
    return normalised.view(num_frames, height, width)


def gaussian_around_centroid(binary: torch.Tensor, sigma_cells: float) -> torch.Tensor:
    """g per frame: isotropic-in-relative-units Gaussian exp(−d²/2σ²) centred on the centroid of `binary` (F, h, w).

    σ is `sigma_cells` at a 16-cell side and scales with each axis (so 5 → 5 cells at 16×16, 10 at 32×32). A frame
    with an empty mask gets g = 0 (official: NaN).
    """
    _, height, width = binary.shape
    binary = binary.float()
    rows = torch.arange(height, dtype=torch.float32, device=binary.device).view(1, height, 1)
    cols = torch.arange(width, dtype=torch.float32, device=binary.device).view(1, 1, width)
    count = binary.sum(dim=(1, 2))
    safe = count.clamp_min(1.0)
    centre_row = (binary * rows).sum(dim=(1, 2)) / safe
    centre_col = (binary * cols).sum(dim=(1, 2)) / safe
    sigma_row = sigma_cells * height / REFERENCE_MAP_SIDE
    sigma_col = sigma_cells * width / REFERENCE_MAP_SIDE
    distance = ((rows - centre_row.view(-1, 1, 1)) / sigma_row) ** 2
    distance = distance + ((cols - centre_col.view(-1, 1, 1)) / sigma_col) ** 2
    return torch.exp(-0.5 * distance) * (count > 0).float().view(-1, 1, 1)


@dataclass
class SemanticMasks:
    """The four masks of the location-aware semantic guidance at the mask block's resolution, each (F, h, w)
    float32, and which frames count:
    `reference_found` (F,) bool, False where the reference mask b is empty (official: NaN)."""

    example_fg: torch.Tensor
    example_bg: torch.Tensor
    app_fg: torch.Tensor
    app_bg: torch.Tensor
    reference_found: torch.Tensor

    def resized(self, height: int, width: int) -> "SemanticMasks":
        """The masks at another block's resolution (nearest neighbour; official: ×2 for square latents only)."""
        if self.example_fg.shape[-2:] == (height, width):
            return self

        def resize(mask: torch.Tensor) -> torch.Tensor:
            return F.interpolate(mask.unsqueeze(1), size=(height, width), mode="nearest").squeeze(1)

        return SemanticMasks(
            resize(self.example_fg),
            resize(self.example_bg),
            resize(self.app_fg),
            resize(self.app_bg),
            self.reference_found,
        )


def semantic_masks(
    reference_map: torch.Tensor, app_map: torch.Tensor, example_threshold: float, app_threshold: float, sigma: float
) -> SemanticMasks:
    """Masks from the normalised (F, h, w) token maps of the reference and appearance streams."""
    binary = (reference_map > example_threshold).float()
    gaussian = gaussian_around_centroid(binary, sigma)
    app_fg = (app_map > app_threshold).float()
    found = binary.flatten(1).sum(dim=1) > 0
    return SemanticMasks(gaussian * binary, (1 - gaussian) * (1 - binary), app_fg, 1 - app_fg, found)


def masked_mean(keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """fg_x(M) = Σ_hw K·M / (Σ_hw M + 1e−5): keys (F, hw, C), mask (F, hw) → (F, C)."""
    mask = mask.to(keys.dtype).unsqueeze(-1)
    return (keys * mask).sum(dim=1) / (mask.sum(dim=1) + MASK_EPS)


def _masked_term(
    gen_keys: torch.Tensor, gen_mask: torch.Tensor, app_keys: torch.Tensor, app_mask: torch.Tensor, frames: torch.Tensor
) -> torch.Tensor:
    """MSE(fg_gen, fg_app) over the frames that count (`frames`, (F,) bool); zero when none does (B14)."""
    if not bool(frames.any()):
        return gen_keys.sum() * 0.0
    gen_mean = masked_mean(gen_keys, gen_mask)[frames]
    app_mean = masked_mean(app_keys, app_mask)[frames]
    return F.mse_loss(gen_mean.float(), app_mean.float().detach())


def keys_by_frame(keys: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Temporal keys (h·w, F, C) of a batch-1 stream → (F, h·w, C)."""
    if keys.shape[1] != num_frames:
        raise ValueError(f"expected temporal keys with {num_frames} frames, got shape {tuple(keys.shape)}")
    return keys.permute(1, 0, 2)


def module_semantic_loss(
    gen_keys: torch.Tensor, app_keys: torch.Tensor, masks: SemanticMasks | None, height: int, width: int
) -> torch.Tensor:
    """L^sem_m for one module: the fg and bg terms, or the global variant when `masks` is None.

    Args:
        gen_keys: temporal keys of the generated stream, (h·w, F, C), with grad.
        app_keys: temporal keys of the appearance stream, same shape, detached.
        masks: the masks at the mask block's resolution, or None for the global variant.
        height, width: this module's spatial grid (h·w = gen_keys.shape[0]).
    """
    frames = gen_keys.shape[1]
    gen = keys_by_frame(gen_keys, frames)
    app = keys_by_frame(app_keys.detach(), frames)
    if masks is None:
        # Global variant: MSE(mean_{hw,f} K_app, mean_hw K_gen).
        return F.mse_loss(gen.float().mean(dim=1), app.float().mean(dim=(0, 1)).expand(frames, -1))
    masks = masks.resized(height, width)
    found = masks.reference_found.to(gen.device)
    fg = _masked_term(gen, masks.example_fg.flatten(1), app, masks.app_fg.flatten(1), found)
    bg = _masked_term(gen, masks.example_bg.flatten(1), app, masks.app_bg.flatten(1), found)
    return fg + bg


def block_grid(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The (h, w) of a UNet level with `tokens` positions for latents of height × width (stride-2 levels, ceil)."""
    h, w = height, width
    for _ in range(8):
        if h * w == tokens:
            return h, w
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    raise ValueError(f"no UNet level of a {height}×{width} latent has {tokens} positions")


def semantic_loss(
    gen_keys: dict[str, torch.Tensor],
    app_keys: dict[str, torch.Tensor],
    module_weights: dict[str, float],
    masks: SemanticMasks | None,
    latent_height: int,
    latent_width: int,
) -> torch.Tensor:
    """L_sem = mean_m (a_m/100 · L^sem_m) over the modules of `module_weights`.

    Args:
        gen_keys: module → temporal keys of the generated stream (grad).
        app_keys: module → temporal keys of the appearance stream.
        module_weights: module → a_m (official 500 for `up_blocks.1`, …); the mean runs over all listed modules.
        masks: masks at the mask block, or None for the global variant.
        latent_height, latent_width: the latent video's h and w.
    """
    losses = []
    for name, weight in module_weights.items():
        height, width = block_grid(gen_keys[name].shape[0], latent_height, latent_width)
        losses.append(weight / 100 * module_semantic_loss(gen_keys[name], app_keys[name], masks, height, width))
    return torch.stack(losses).mean()
