"""The `blocks` model's architecture: SD-1.5's classes and block layout, narrow enough to train on a CPU. No bpy.

Every part is the diffusers (or transformers) class the `sd15-animatediff-v3` preset uses, so the trained folder
loads through the same code:

- `AutoencoderKL` that down-samples twice (64 x 64 frames -> 32 x 32 latents). SD-1.5's VAE down-samples three
  times; one step fewer keeps `up_blocks.1` of the UNet at 8 x 8 positions, enough to carry a trajectory.
- `CLIPTextModel` (2 layers, width 64) with a word-level CLIP tokenizer over the captions' vocabulary.
- `UNet2DConditionModel` with SD-1.5's four down and four up blocks at SD-1.5's resolutions, so `up_blocks.1` runs at
  a quarter of the latent side exactly as in SD-1.5, with cross-attention in the middle two levels (`down_blocks.1-2`,
  `up_blocks.1-2`). SD-1.5 also attends at the full latent resolution; here that level is plain ResNet blocks.
- `MotionAdapter` with motion modules at every resolution and none in the mid block (AnimateDiff v3's layout).

The UNet is narrow (16-128 channels) and has no attention over the 1,024 positions of the full latent resolution: on a
CPU that attention alone costs as much as the rest of the network (2.7 s against 1.6 s per training step of 32
frames, measured side by side), and the blocks that carry a trajectory or the prompt work at 16 x 16 and 8 x 8.
`build_image_unet` and `build_motion_adapter` take other widths and block depths for a new model (the training
script's --unet-channels and --unet-layers-per-block); a trained folder's configs say which it has.
"""

from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

FRAME_SIZE = 64  # native width and height in pixels
NUM_FRAMES = 16  # native clip length
VAE_BLOCK_OUT_CHANNELS = (32, 64)  # two blocks: one down-sampling step, scale factor 2
# Narrowest at the full latent resolution, whose 1,024 positions make each channel the costliest: a quarter less
# time per motion-stage step on a CPU than 32 channels there; the levels carrying prompt and trajectory keep width.
UNET_BLOCK_OUT_CHANNELS = (16, 64, 96, 128)
UNET_LAYERS_PER_BLOCK = 2  # SD-1.5's; the up blocks have one more, so up_blocks.1 has 3 motion modules to guide
CHANNEL_MULTIPLE = 8  # GroupNorm's 8 groups, and whole heads for every block's attention
UNET_ATTENTION_HEADS = (1, 2, 4, 4)  # diffusers' `attention_head_dim` is SD-1.5's head count per block
UNET_DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
UNET_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
MOTION_HEADS = 4
TEXT_WIDTH = 64
MAX_FRAMES = 32  # motion modules' positional encoding length


def build_vae() -> AutoencoderKL:
    """A KL autoencoder with 4 latent channels and a spatial scale factor of 2."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_BLOCK_OUT_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_BLOCK_OUT_CHANNELS),
        block_out_channels=VAE_BLOCK_OUT_CHANNELS,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=FRAME_SIZE,
    )


def build_text_encoder(vocab_size: int) -> CLIPTextModel:
    """A 2-layer CLIP text transformer; `vocab_size` comes from the word-level tokenizer."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TEXT_WIDTH,
            intermediate_size=4 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            layer_norm_eps=1e-5,
        )
    )


def build_image_unet(
    block_out_channels: tuple[int, ...] = UNET_BLOCK_OUT_CHANNELS, layers_per_block: int = UNET_LAYERS_PER_BLOCK
) -> UNet2DConditionModel:
    """The 2-D UNet in SD-1.5's block layout, `block_out_channels` wide from the full latent resolution down."""
    check_unet_shape(block_out_channels, layers_per_block)
    return UNet2DConditionModel(
        sample_size=FRAME_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        down_block_types=UNET_DOWN_BLOCKS,
        up_block_types=UNET_UP_BLOCKS,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=UNET_ATTENTION_HEADS,
        norm_num_groups=8,
    )


def build_motion_adapter(
    block_out_channels: tuple[int, ...] = UNET_BLOCK_OUT_CHANNELS, layers_per_block: int = UNET_LAYERS_PER_BLOCK
) -> MotionAdapter:
    """AnimateDiff v3-style motion modules (zero-initialised outputs) for the UNet `build_image_unet` makes with the
    same arguments: one module after each of its ResNet blocks."""
    check_unet_shape(block_out_channels, layers_per_block)
    return MotionAdapter(
        block_out_channels=block_out_channels,
        motion_layers_per_block=layers_per_block,
        motion_norm_num_groups=8,
        motion_num_attention_heads=MOTION_HEADS,
        motion_max_seq_length=MAX_FRAMES,
        use_motion_mid_block=False,
    )


def check_unet_shape(block_out_channels: tuple[int, ...], layers_per_block: int) -> None:
    """Refuse a UNet shape the SD-1.5 layout cannot take, naming the value and its limit."""
    blocks = len(UNET_DOWN_BLOCKS)
    if len(block_out_channels) != blocks:
        raise ValueError(f"the UNet needs {blocks} widths, one per block, got {len(block_out_channels)}")
    if any(width < CHANNEL_MULTIPLE or width % CHANNEL_MULTIPLE for width in block_out_channels):
        widths = " ".join(map(str, block_out_channels))
        raise ValueError(f"the UNet's widths must be positive multiples of {CHANNEL_MULTIPLE}, got {widths}")
    if layers_per_block < 1:
        raise ValueError(f"the UNet's layers per block must be at least 1, got {layers_per_block}")
