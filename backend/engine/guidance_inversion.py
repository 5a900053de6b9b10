"""Guided sampling of the inversion-based MotionClone (paper v1-v3). No bpy.

At guided step i (timestep t) the reference attention is recomputed from the DDIM-inverted reference x^ref_t with the
inversion prompt (no grad), so the motion target changes with t (time-dependent guidance):

    M_m      = one-hot of argmax_k A^ref_m[..., k]                       (top-1 mask of the reference)
    L^mot_m  = mean over the selected entries of (A^ref_m − A^gen_m)²
    L_mot    = mean_m (w_m/100 · L^mot_m)       w = 20000 (up_blocks.1), 10000 (up_blocks.2)
    L        = 100·λ(i)·(L_mot + L_sem)         λ(i) = (i+1)/warm_up for i < warm_up; L_mot = 0 for
                                                 i > G − cool_down_steps, as official (L_sem continues)
    x_{t_prev} = DDIM(x_t, ε) − √(1−ᾱ_{t_prev})·√(1−ᾱ_t)·∇_{x_t}L   (the paper's guided update)

The official code ran five streams in two big batches with processors on every attention (30-45 GB, bug B13). Here
the no-grad passes that run the whole network at a timestep go as one batch, as the official code batched them: ε_u
of the generated video and, when semantic guidance is on, both CFG passes of the appearance stream. The reference
stream runs on its own because it stops after the last guided block (in the official batch it ran the whole network
for nothing), and the conditional pass carries autograd only up to the last guided block. Only x_t, x^app_t and the
current x^ref_t are on the device.

Schedule: linspace(0, 999, N) rounded, descending. The official DDIM step took t_prev = t − 1000//N, off
by about one timestep from the schedule's next value (bug B12); by default t_prev is the actual next timestep, and
`inversion_parity_prev_timestep` restores the old rule.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import JobCancelled
from .attention_capture import capture_temporal_attention
from .inversion import InvertedLatents
from .partial_unet import no_grad_after, run_unet_until
from .schedule import NUM_TRAIN_TIMESTEPS, guided_ddim_step
from .semantic_guidance import (
    CrossAttentionStore,
    block_grid,
    capture_cross_attention,
    normalized_token_map,
    semantic_loss,
    semantic_masks,
)

# The factor the official code put on the total loss, L = 100·(L_mot + L_sem).
LOSS_SCALE = 100.0


def linspace_timesteps(num_inference_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The old schedule: round(linspace(0, T−1, N)), descending."""
    timesteps = np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1].astype(np.int64)
    return torch.from_numpy(timesteps.copy())


def previous_timestep(
    timesteps: torch.Tensor, index: int, parity: bool, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> int:
    """t_prev of step `index`: the schedule's next timestep (−1 after the last), or the old t − T//N (bug B12).

    With `parity` the value may be negative on the last step; ᾱ of any negative timestep is ᾱ_{-1} = 1, as in the
    old diffusers DDIM step.
    """
    t = int(timesteps[index])
    if parity:
        return max(t - num_train_timesteps // len(timesteps), -1)
    return int(timesteps[index + 1]) if index + 1 < len(timesteps) else -1


def inversion_ramp(
    step_index: int, guidance_steps: int, warm_up_steps: int, cool_down_steps: int
) -> tuple[float, bool]:
    """(λ(i) on the whole loss, whether L_mot is active): warm-up ramp; L_mot zeroed where the official code zeroes
    it, `step_index > guidance_steps − cool_down_steps` (so the last cool_down_steps − 1 guided steps)."""
    ramp = (step_index + 1) / warm_up_steps if step_index < warm_up_steps else 1.0
    return ramp, step_index <= guidance_steps - cool_down_steps


def top1_motion_loss(
    reference_probs: dict[str, torch.Tensor], generated_probs: dict[str, torch.Tensor], module_weights: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_mot = mean_m w_m/100 · L^mot_m, the unweighted mean_m L^mot_m) with a top-1 mask of the reference (6.4)."""
    weighted, plain = [], []
    for name, weight in module_weights.items():
        reference = reference_probs[name].detach()
        index = reference.argmax(dim=-1, keepdim=True)
        generated = generated_probs[name].gather(-1, index)
        module_loss = torch.nn.functional.mse_loss(generated.float(), reference.gather(-1, index).float())
        weighted.append(weight / 100 * module_loss)
        plain.append(module_loss)
    return torch.stack(weighted).mean(), torch.stack(plain).mean().detach()


@dataclass
class InversionGuidanceConfig:
    """What the guided loop needs beyond the tensors (resolved from `MotionCloneParams` by the pipeline).

    Attributes:
        guidance_steps, warm_up_steps, cool_down_steps: G and the ramps.
        motion_weights: guided temporal-attention module → w_m (block weight repeated per module, bug B15).
        semantic_weights: module → a_m; empty disables semantic guidance and the appearance stream.
        last_guided_block: the block after which the conditional pass runs without autograd and the reference
            pass stops.
        cross_attention_modules: spatial attn2 modules of the mask block.
        token_indices: (reference word index in the inversion prompt, new word index in the prompt), or None for
            the global semantic variant.
        example_threshold, app_threshold, sigma: mask settings.
        parity_prev_timestep: reproduce bug B12.
        grad_threshold: optional element-wise clamp of ∇L.
        attention_precision: "parity" or "accurate" for the temporal attention probabilities.
        cfg: combines (ε_u, ε_c) into ε.
    """

    guidance_steps: int
    warm_up_steps: int
    cool_down_steps: int
    motion_weights: dict[str, float]
    semantic_weights: dict[str, float]
    last_guided_block: str
    cross_attention_modules: list[str]
    token_indices: tuple[int, int] | None
    example_threshold: float
    app_threshold: float
    sigma: float
    parity_prev_timestep: bool
    grad_threshold: float | None
    attention_precision: str
    cfg: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def denoise_inversion(
    unet: torch.nn.Module,
    alphas_cumprod: torch.Tensor,
    final_alpha_cumprod: torch.Tensor | float,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    inverted: InvertedLatents,
    negative_embeds: torch.Tensor,
    positive_embeds: torch.Tensor,
    inversion_embeds: torch.Tensor,
    config: InversionGuidanceConfig,
    report: Callable[[str, int, int], None],
    should_stop: Callable[[], bool],
    latents_callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Run the N DDIM steps of the inversion-based method; the first G carry motion (and semantic) guidance.

    Returns:
        (x_0, the unweighted mean_m L^mot_m of each guided step).
    """
    frames, height, width = latents.shape[2], latents.shape[3], latents.shape[4]
    E_neg = negative_embeds.repeat_interleave(frames, dim=0)
    E_pos = positive_embeds.repeat_interleave(frames, dim=0)
    E_inv = inversion_embeds.repeat_interleave(frames, dim=0)
    E_both = torch.cat([E_neg, E_pos])
    semantic = bool(config.semantic_weights) and any(w != 0 for w in config.semantic_weights.values())
    captured = list(dict.fromkeys([*config.motion_weights, *config.semantic_weights]))
    app_latents = latents.clone() if semantic else None
    losses: list[torch.Tensor] = []
    total = len(timesteps)
    report("denoise", 0, total)
    with (
        capture_temporal_attention(unet, captured, config.attention_precision) as store,
        capture_cross_attention(unet, config.cross_attention_modules if semantic else []) as cross,
    ):
        store.recording = False
        for i, t in enumerate(timesteps.tolist()):
            if should_stop():
                raise JobCancelled(f"cancelled at denoising step {i} of {total}")
            t_prev = previous_timestep(timesteps, i, config.parity_prev_timestep)
            score = None
            if i < config.guidance_steps:
                ramp, motion_active = inversion_ramp(
                    i, config.guidance_steps, config.warm_up_steps, config.cool_down_steps
                )
                with torch.no_grad():
                    # Reference stream: x^ref_t with the inversion prompt, up to the last guided block.
                    store.clear()
                    store.recording = True
                    cross.recording = semantic
                    x_ref = inverted.at(t, latents.device, latents.dtype)
                    run_unet_until(unet, config.last_guided_block, x_ref, t, encoder_hidden_states=E_inv)
                    reference_probs = dict(store.probs)
                    cross_ref = _token_map(cross, config.token_indices, 0, frames, height, width) if semantic else None
                    store.clear()
                    cross.clear()
                    app_keys: dict[str, torch.Tensor] = {}
                    masks = None
                    if semantic:
                        # One batch: [ε_u of x_t, ε_u and ε_c of the appearance stream (plain CFG of the new
                        # prompt)]; the keys and cross-attention of its cond pass, the batch's last third, give the
                        # semantic targets and masks.
                        store.record_keys = True
                        noise_uncond, app_uncond, app_cond = unet(
                            torch.cat([latents, app_latents, app_latents]),
                            t,
                            encoder_hidden_states=torch.cat([E_neg, E_neg, E_pos]),
                        ).sample.chunk(3)
                        app_keys = {name: store.keys[name].chunk(3)[2] for name in config.semantic_weights}
                        if config.token_indices is not None:
                            cross_app = _token_map(cross, config.token_indices, 1, frames, height, width, part=(2, 3))
                            masks = semantic_masks(
                                cross_ref, cross_app, config.example_threshold, config.app_threshold, config.sigma
                            )
                        app_latents = guided_ddim_step(
                            app_latents,
                            config.cfg(app_uncond, app_cond),
                            t,
                            t_prev,
                            alphas_cumprod,
                            final_alpha_cumprod,
                        )
                    else:
                        store.recording = False
                        noise_uncond = unet(latents, t, encoder_hidden_states=E_neg).sample
                    cross.recording = False
                    cross.clear()
                # Generated stream, conditional pass with autograd up to the last guided block.
                store.clear()
                store.recording = True
                store.record_keys = semantic
                x_g = latents.detach().clone().requires_grad_(True)
                with no_grad_after(unet, config.last_guided_block):
                    noise_cond = unet(x_g, t, encoder_hidden_states=E_pos).sample
                store.recording = False
                store.record_keys = False
                weighted_motion, plain_motion = top1_motion_loss(reference_probs, store.probs, config.motion_weights)
                loss = weighted_motion if motion_active else weighted_motion * 0.0
                if semantic:
                    loss = loss + semantic_loss(store.keys, app_keys, config.semantic_weights, masks, height, width)
                loss = LOSS_SCALE * ramp * loss
                if loss.requires_grad:
                    (score,) = torch.autograd.grad(loss, x_g)
                    if config.grad_threshold is not None:
                        score = score.clamp(-config.grad_threshold, config.grad_threshold)
                store.clear()
                del reference_probs, app_keys
                losses.append(plain_motion)  # read once after the loop: no host synchronisation per step
                noise_cond = noise_cond.detach()
            else:
                with torch.no_grad():
                    noise_both = unet(torch.cat([latents, latents]), t, encoder_hidden_states=E_both).sample
                noise_uncond, noise_cond = noise_both.chunk(2)
            noise_pred = config.cfg(noise_uncond, noise_cond)
            with torch.no_grad():
                latents = guided_ddim_step(latents, noise_pred, t, t_prev, alphas_cumprod, final_alpha_cumprod, score)
            if latents_callback is not None:
                latents_callback(i + 1, latents)
            report("denoise", i + 1, total)
    return latents, [float(value) for value in torch.stack(losses).float().cpu()] if losses else []


def _token_map(
    cross: CrossAttentionStore,
    token_indices: tuple[int, int] | None,
    which: int,
    frames: int,
    height: int,
    width: int,
    part: tuple[int, int] = (0, 1),
) -> torch.Tensor | None:
    """Normalised (F, h, w) map of the reference (which=0) or new (which=1) word from the last recorded pass, whose
    batch is cut into part[1] equal streams of which stream part[0] is read."""
    if token_indices is None:
        return None
    maps = cross.token_maps(token_indices[which]).chunk(part[1])[part[0]]  # (F, h_m·w_m) at the mask block
    grid_h, grid_w = block_grid(maps.shape[-1], height, width)
    return normalized_token_map(maps, frames, grid_h, grid_w)
