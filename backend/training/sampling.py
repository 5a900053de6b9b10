"""Plain DDIM sampling with classifier-free guidance, for the training checks. No bpy.

The product samples through the MotionClone pipeline; the checks only need unguided samples from a model that is
still being trained (a 2-D UNet for single frames, or the inflated UNet for clips), so they use this short loop.
"""

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..models.bundle import official_ddim_scheduler

CFG_SCALE = 7.5


@torch.no_grad()
def encode_text(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


@torch.no_grad()
def sample_latents(
    unet: UNet2DConditionModel | UNetMotionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    captions: list[str],
    noise: torch.Tensor,
    steps: int = 20,
    cfg_scale: float = CFG_SCALE,
) -> torch.Tensor:
    """Denoise `noise` ((B, 4, h, w) for a 2-D UNet, (B, 4, F, h, w) for a motion UNet) under `captions`."""
    scheduler: DDIMScheduler = official_ddim_scheduler()
    scheduler.set_timesteps(steps)
    frames = noise.shape[2] if noise.ndim == 5 else 1
    text = encode_text(text_encoder, tokenizer, captions)
    empty = encode_text(text_encoder, tokenizer, [""] * len(captions))
    embeddings = torch.cat([empty, text]).repeat_interleave(frames, dim=0)
    latents = noise
    for t in scheduler.timesteps:
        both = unet(torch.cat([latents, latents]), t, embeddings).sample
        uncond, cond = both.chunk(2)
        epsilon = uncond + cfg_scale * (cond - uncond)
        latents = scheduler.step(epsilon, t, latents).prev_sample
    return latents


@torch.no_grad()
def decode_frames(vae: AutoencoderKL, latents: torch.Tensor) -> np.ndarray:
    """Latents (N, 4, h, w), already multiplied by the scaling factor -> uint8 (N, H, W, 3)."""
    images = vae.decode(latents / vae.config.scaling_factor).sample
    images = ((images / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()
