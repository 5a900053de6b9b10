"""The component bundle every model preset returns, so the engine never knows which preset it got. No bpy."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    MotionAdapter,
    SparseControlNetModel,
    UNet2DConditionModel,
    UNetMotionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer


@dataclass
class ModelBundle:
    """AnimateDiff components on one device and dtype.

    Attributes:
        vae: SD-1.5 autoencoder (spatial scale factor 8).
        text_encoder: CLIP text encoder.
        tokenizer: CLIP tokenizer (77 tokens).
        unet: SD-1.5 UNet inflated with the motion adapter.
        motion_adapter: the adapter the UNet was built from (its config holds the maximum frame count).
        scheduler: DDIM scheduler configured like the official code (linear betas, `steps_offset=1`).
        description: plain values that identify the weights (preset name, sources, dtype); goes into result metadata
            and into motion-representation cache keys.
    """

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNetMotionModel
    motion_adapter: MotionAdapter
    scheduler: DDIMScheduler
    description: dict[str, Any] = field(default_factory=dict)
    controlnet: SparseControlNetModel | None = None
    controlnet_kind: str | None = None  # "rgb" or "scribble" with a SparseCtrl model

    def __post_init__(self) -> None:
        # Inference only. Motion guidance differentiates with respect to the latents alone; with trainable weights
        # autograd would also keep every input a weight gradient needs during the guided pass.
        for model in (self.vae, self.text_encoder, self.unet, self.motion_adapter, self.controlnet):
            if model is not None:
                model.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def max_frames(self) -> int:
        """Longest clip the motion adapter's positional encoding covers."""
        return int(self.motion_adapter.config.motion_max_seq_length)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "ModelBundle":
        """Move every model to `device` (and `dtype` when given); returns self."""
        # The motion adapter stays where it is: the UNet holds copies of its weights, and the adapter is only
        # consulted for its config, so moving it would double the motion modules' memory on the device.
        for model in (self.vae, self.text_encoder, self.unet, self.controlnet):
            if model is None:
                continue
            model.to(device=device)
            if dtype is not None and model.dtype != dtype:
                model.to(dtype=dtype)
        return self


def official_ddim_scheduler() -> DDIMScheduler:
    """The official MotionClone scheduler: linear betas 0.00085..0.012, `steps_offset=1`, no clipping."""
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False)


def build_motion_unet(unet2d: UNet2DConditionModel, motion_adapter: MotionAdapter) -> UNetMotionModel:
    """Inflate an SD-1.5 UNet with the motion adapter (diffusers' `UNetMotionModel.from_unet2d`)."""
    with quiet_dtype_casts():
        return UNetMotionModel.from_unet2d(unet2d, motion_adapter)


@contextmanager
def quiet_dtype_casts() -> Iterator[None]:
    """Mute diffusers' warning about an empty list of float32 modules, which it gives on every `.to(dtype)` of a model
    built in code (from_unet2d casts its new model so): it says nothing here."""
    modeling_logger = logging.getLogger("diffusers.models.modeling_utils")
    previous_level = modeling_logger.level
    modeling_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        modeling_logger.setLevel(previous_level)
