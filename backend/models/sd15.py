"""The `sd15-animatediff-v3` preset: SD-1.5 (+ optional DreamBooth file) and the AnimateDiff v3 adapter. No bpy.

Every source is a local path or a hub id. With the hub unreachable (or `local_files_only=True`), a missing source
raises `ModelNotFoundError` that names it and says how to provide it.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..errors import ModelNotFoundError
from .bundle import ModelBundle, build_motion_unet, official_ddim_scheduler

DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_MOTION_ADAPTER = "guoyww/animatediff-motion-adapter-v1-5-3"


@dataclass(frozen=True)
class SD15Sources:
    """Where the weights come from.

    Attributes:
        base: SD-1.5 in diffusers layout (folder or hub id) with `unet/`, `vae/`, `text_encoder/`, `tokenizer/`.
        checkpoint: optional DreamBooth single file (`.safetensors`, e.g. Realistic Vision V6.0 B1) whose UNet, VAE
            and text-encoder weights replace the base ones; the base folder then only supplies configs.
        motion_adapter: AnimateDiff v3 motion adapter in diffusers layout (folder or hub id).
        local_files_only: never contact the hub.
    """

    base: str = DEFAULT_BASE
    checkpoint: str | None = None
    motion_adapter: str = DEFAULT_MOTION_ADAPTER
    local_files_only: bool = False


def _missing(what: str, source: str, hint: str, error: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Cannot load the {what} from '{source}' ({type(error).__name__}: {str(error).splitlines()[0]}). {hint}"
    )


_BASE_HINT = (
    "Pass a local folder in diffusers layout (with unet/, vae/, text_encoder/, tokenizer/), for example one made by "
    "`huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir DIR` on a machine with "
    "internet access, or set HF_HOME to a cache that holds it."
)
_ADAPTER_HINT = (
    "Pass a local folder holding the AnimateDiff v3 motion adapter (config.json and "
    "diffusion_pytorch_model.safetensors), e.g. from `huggingface-cli download "
    "guoyww/animatediff-motion-adapter-v1-5-3 --local-dir DIR`."
)
_CHECKPOINT_HINT = "Pass the path of an existing DreamBooth .safetensors file (for example Realistic Vision V6.0 B1)."


def load_sd15_bundle(
    sources: SD15Sources = SD15Sources(),
    device: str | torch.device = "cuda",
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """Load SD-1.5 + AnimateDiff v3 into a `ModelBundle`.

    Args:
        sources (`SD15Sources`): where each part comes from.
        device (`str`, defaults to "cuda"): target device.
        dtype (`torch.dtype`, *optional*): defaults to float16 on CUDA and float32 elsewhere.
    """
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    local = sources.local_files_only
    unet2d, vae, text_encoder, tokenizer = _load_base(sources, dtype)
    try:
        motion_adapter = MotionAdapter.from_pretrained(
            sources.motion_adapter, torch_dtype=dtype, local_files_only=local
        )
    except (OSError, ValueError) as error:
        raise _missing("motion adapter", sources.motion_adapter, _ADAPTER_HINT, error) from error
    unet = build_motion_unet(unet2d, motion_adapter)
    bundle = ModelBundle(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        motion_adapter=motion_adapter,
        scheduler=official_ddim_scheduler(),
        description={
            "preset": "sd15-animatediff-v3",
            "base": sources.base,
            "checkpoint": Path(sources.checkpoint).name if sources.checkpoint else None,
            "motion_adapter": sources.motion_adapter,
            "dtype": str(dtype).removeprefix("torch."),
        },
    )
    return bundle.to(device, dtype)


def _load_base(
    sources: SD15Sources, dtype: torch.dtype
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer]:
    local = sources.local_files_only
    if sources.checkpoint is not None:
        if not Path(sources.checkpoint).is_file():
            raise ModelNotFoundError(
                f"The DreamBooth checkpoint '{sources.checkpoint}' does not exist. {_CHECKPOINT_HINT}"
            )
        # Imported here: the single-file pipeline pulls in transformers' image processors, which only this path needs.
        from diffusers import StableDiffusionPipeline

        try:
            # The single file carries UNet, VAE and text-encoder weights in LDM layout; `config` supplies the rest.
            pipe = StableDiffusionPipeline.from_single_file(
                sources.checkpoint,
                config=sources.base,
                torch_dtype=dtype,
                local_files_only=local,
                safety_checker=None,
                feature_extractor=None,
            )
        except (OSError, ValueError) as error:
            raise _missing("SD-1.5 configs for the checkpoint", sources.base, _BASE_HINT, error) from error
        return pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    try:
        unet2d = UNet2DConditionModel.from_pretrained(
            sources.base, subfolder="unet", torch_dtype=dtype, local_files_only=local
        )
        vae = AutoencoderKL.from_pretrained(sources.base, subfolder="vae", torch_dtype=dtype, local_files_only=local)
        text_encoder = CLIPTextModel.from_pretrained(
            sources.base, subfolder="text_encoder", torch_dtype=dtype, local_files_only=local
        )
        tokenizer = CLIPTokenizer.from_pretrained(sources.base, subfolder="tokenizer", local_files_only=local)
    except (OSError, ValueError) as error:
        raise _missing("SD-1.5 base model", sources.base, _BASE_HINT, error) from error
    return unet2d, vae, text_encoder, tokenizer
