"""The `tiny` preset: random-weight components with SD-1.5's block layout, built in code. No bpy.

Same block names and roles as the real model (four down and four up blocks, cross-attention in the first three,
motion modules everywhere but the mid block, VAE scale factor 8), so `up_blocks.1` means the same thing here as in
SD-1.5. It builds in about a second from a seed, offline, and runs on a 2-core CPU.
"""

import torch
from diffusers import AutoencoderKL, MotionAdapter, SparseControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .bundle import ModelBundle, build_motion_unet, official_ddim_scheduler
from .tokenizer import build_offline_clip_tokenizer

BLOCK_OUT_CHANNELS = (16, 16, 32, 32)
CROSS_ATTENTION_DIM = 32
MAX_FRAMES = 32


def build_tiny_components(
    seed: int = 0,
) -> tuple[UNet2DConditionModel, MotionAdapter, AutoencoderKL, CLIPTextModel]:
    """The random-weight SD-1.5-layout parts: (2-D UNet, motion adapter, VAE, text encoder), float32 on the CPU.

    The same `seed` gives bit-identical weights; the global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet2d = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=BLOCK_OUT_CHANNELS,
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=CROSS_ATTENTION_DIM,
            attention_head_dim=2,
            norm_num_groups=4,
        )
        motion_adapter = MotionAdapter(
            block_out_channels=BLOCK_OUT_CHANNELS,
            motion_layers_per_block=2,
            motion_norm_num_groups=4,
            motion_num_attention_heads=2,
            motion_max_seq_length=MAX_FRAMES,
            use_motion_mid_block=False,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=2,
            layers_per_block=1,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=2,
                hidden_size=CROSS_ATTENTION_DIM,
                intermediate_size=37,
                layer_norm_eps=1e-5,
                num_attention_heads=4,
                num_hidden_layers=2,
                pad_token_id=1,
                vocab_size=1000,
                max_position_embeddings=77,
            )
        )
    return unet2d, motion_adapter, vae, text_encoder


def build_tiny_sparsectrl(kind: str, seed: int = 0) -> SparseControlNetModel:
    """A random SparseCtrl model for the tiny UNet: "rgb" (VAE latents in, one conv) or "scribble" (pixels in, a
    conv tower). Its output convolutions, zero in a fresh model, get small random weights, so that its residuals are
    not all zero and tests can see them reach the UNet."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        controlnet = SparseControlNetModel(
            in_channels=4,
            conditioning_channels=4 if kind == "rgb" else 3,
            down_block_types=("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",),
            block_out_channels=BLOCK_OUT_CHANNELS,
            layers_per_block=2,
            cross_attention_dim=CROSS_ATTENTION_DIM,
            attention_head_dim=2,
            norm_num_groups=4,
            conditioning_embedding_out_channels=(8, 8, 8, 16),
            motion_max_seq_length=MAX_FRAMES,
            motion_num_attention_heads=2,
            use_simplified_condition_embedding=kind == "rgb",
        )
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding")):
                torch.nn.init.normal_(parameter, std=0.05)
    return controlnet.eval()


def build_tiny_bundle(
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    sparsectrl: str | None = None,
) -> ModelBundle:
    """Build the tiny preset's bundle.

    Args:
        seed (`int`, defaults to 0): seeds the random initialisation of every component.
        device (`str` or `torch.device`, defaults to "cpu"): where the models go.
        dtype (`torch.dtype`, defaults to float32): model dtype.
        sparsectrl (`str`, *optional*): "rgb" or "scribble" adds a random SparseCtrl model of that kind.
    """
    unet2d, motion_adapter, vae, text_encoder = build_tiny_components(seed)
    with torch.random.fork_rng(devices=[]):
        # from_unet2d initialises the new layers randomly before copying weights in; keep that off the global RNG.
        unet = build_motion_unet(unet2d, motion_adapter)
    bundle = ModelBundle(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=build_offline_clip_tokenizer(),
        unet=unet.eval(),
        motion_adapter=motion_adapter,
        scheduler=official_ddim_scheduler(),
        description={"preset": "tiny", "seed": seed, "dtype": str(dtype).removeprefix("torch.")},
        controlnet=None if sparsectrl is None else build_tiny_sparsectrl(sparsectrl, seed),
        controlnet_kind=sparsectrl,
    )
    return bundle.to(device, dtype)
