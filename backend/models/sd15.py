"""The `sd15-animatediff-v3` preset: SD-1.5 (+ optional DreamBooth file), the AnimateDiff v3 adapter and, for image-
and sketch-to-video, a SparseCtrl model. No bpy.

Every source is a local path or a hub id. With the hub unreachable (or `local_files_only=True`), a missing source
raises `ModelNotFoundError` that names it and says how to provide it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from safetensors import SafetensorError, safe_open
from transformers import CLIPTextModel, CLIPTokenizer

from ..errors import ModelNotFoundError, ParameterError
from .bundle import ModelBundle, build_motion_unet, official_ddim_scheduler
from .motion_module_file import WEIGHT_FILE_SUFFIXES, load_motion_module_file
from .sparsectrl import DEFAULT_SPARSECTRL_MODELS, SPARSECTRL_MODEL_FLAG, check_kind, load_sparsectrl
from .weights_file import error_summary

DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_MOTION_ADAPTER = "guoyww/animatediff-motion-adapter-v1-5-3"


@dataclass(frozen=True)
class SD15Sources:
    """Where the weights come from.

    Attributes:
        base: SD-1.5 in diffusers layout (folder or hub id) with `unet/`, `vae/`, `text_encoder/`, `tokenizer/`.
        checkpoint: optional DreamBooth single file (`.safetensors`, e.g. Realistic Vision V6.0 B1) whose UNet, VAE
            and text-encoder weights replace the base ones; the base folder then only supplies configs.
        motion_adapter: AnimateDiff v3 motion adapter in diffusers layout (folder or hub id), or its official file
            (`v3_sd15_mm.ckpt`).
        local_files_only: never contact the hub.
        sparsectrl: "rgb" or "scribble" loads a SparseCtrl model of that kind (image- or sketch-to-video); None
            loads none.
        sparsectrl_model: the SparseCtrl weights: a diffusers folder or hub id, or the official single file
            (`v3_sd15_sparsectrl_rgb.ckpt`, `v3_sd15_sparsectrl_scribble.ckpt`); defaults to the hub id of the kind
            (`DEFAULT_SPARSECTRL_MODELS`).
    """

    base: str = DEFAULT_BASE
    checkpoint: str | None = None
    motion_adapter: str = DEFAULT_MOTION_ADAPTER
    local_files_only: bool = False
    sparsectrl: str | None = None
    sparsectrl_model: str | None = None

    def __post_init__(self) -> None:
        if self.sparsectrl is not None:
            check_kind(self.sparsectrl)
        elif self.sparsectrl_model is not None:
            raise ParameterError(SPARSECTRL_MODEL_FLAG, "needs --sparsectrl rgb|scribble to say which kind it is")


def _missing(what: str, source: str, hint: str, error: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(f"Cannot load the {what} from '{source}' ({error_summary(error)}). {hint}")


_BASE_HINT = (
    "Pass a local folder in diffusers layout (with unet/, vae/, text_encoder/, tokenizer/), for example one made by "
    "`hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir DIR` on a machine with "
    "internet access, or set HF_HOME to a cache that holds it."
)
_ADAPTER_HINT = (
    "Pass a local folder holding the AnimateDiff v3 motion adapter (config.json and "
    "diffusion_pytorch_model.safetensors), e.g. from `hf download "
    "guoyww/animatediff-motion-adapter-v1-5-3 --local-dir DIR`, or AnimateDiff's own file v3_sd15_mm.ckpt."
)
_LDM_UNET_PREFIX = "model.diffusion_model."  # the UNet's weights in an original-layout (LDM) checkpoint
_CHECKPOINT_HINT = "Pass the path of an existing DreamBooth .safetensors file (for example Realistic Vision V6.0 B1)."


def load_sd15_bundle(
    sources: SD15Sources = SD15Sources(),
    device: str | torch.device = "cuda",
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """Load SD-1.5 + AnimateDiff v3 (+ SparseCtrl when `sources.sparsectrl` names a kind) into a `ModelBundle`.

    Args:
        sources (`SD15Sources`): where each part comes from.
        device (`str`, defaults to "cuda"): target device.
        dtype (`torch.dtype`, *optional*): defaults to float16 on CUDA and float32 elsewhere.
    """
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    local = sources.local_files_only
    controlnet = None
    if sources.sparsectrl is not None:
        # First, so that a missing SparseCtrl source fails before minutes of loading the rest.
        controlnet = load_sparsectrl(sources.sparsectrl, sources.sparsectrl_model, dtype=dtype, local_files_only=local)
    unet2d, vae, text_encoder, tokenizer = _load_base(sources, dtype)
    if Path(sources.motion_adapter).is_file() or sources.motion_adapter.endswith(WEIGHT_FILE_SUFFIXES):
        # AnimateDiff's own file, v3_sd15_mm.ckpt (a missing one is named as such, not looked up as a hub id)
        motion_adapter = load_motion_module_file(Path(sources.motion_adapter), dtype)
    else:
        try:
            motion_adapter = MotionAdapter.from_pretrained(
                sources.motion_adapter, torch_dtype=dtype, local_files_only=local
            )
        except (OSError, ValueError, SafetensorError) as error:
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
            "checkpoint": _describe_file(Path(sources.checkpoint)) if sources.checkpoint else None,
            "motion_adapter": _describe_file(Path(sources.motion_adapter))
            if Path(sources.motion_adapter).is_file()
            else sources.motion_adapter,
            "dtype": str(dtype).removeprefix("torch."),
            **_describe_sparsectrl(sources),
        },
        controlnet=controlnet,
        controlnet_kind=sources.sparsectrl,
    )
    return bundle.to(device, dtype)


def _describe_sparsectrl(sources: SD15Sources) -> dict[str, Any]:
    """The SparseCtrl entry of the description; none without SparseCtrl, so text-to-video cache keys stay as they
    were."""
    if sources.sparsectrl is None:
        return {}
    model = sources.sparsectrl_model or DEFAULT_SPARSECTRL_MODELS[sources.sparsectrl]
    described = _describe_file(Path(model)) if Path(model).is_file() else model
    return {"sparsectrl": {"kind": sources.sparsectrl, "model": described}}


def _describe_file(path: Path) -> dict[str, Any]:
    """A weights file by name, size and modification time: the description keys the representation cache, and
    another file under the same name (a re-trained DreamBooth model.safetensors) must not reuse what this one made.
    Cheaper than hashing gigabytes; a copy with a new time only costs a cache miss."""
    status = path.stat()
    return {"file": path.name, "bytes": status.st_size, "modified_ns": status.st_mtime_ns}


def _load_base(
    sources: SD15Sources, dtype: torch.dtype
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer]:
    local = sources.local_files_only
    if sources.checkpoint is not None:
        if not Path(sources.checkpoint).is_file():
            raise ModelNotFoundError(
                f"The DreamBooth checkpoint '{sources.checkpoint}' does not exist. {_CHECKPOINT_HINT}"
            )
        _check_checkpoint(Path(sources.checkpoint))
        # Imported here: the single-file pipeline pulls in transformers' image processors, which only this path needs.
        from diffusers import StableDiffusionPipeline
        from diffusers.loaders.single_file_utils import SingleFileComponentError

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
        except SingleFileComponentError as error:  # the file lacks one of the three parts' weights
            raise ModelNotFoundError(
                f"The DreamBooth checkpoint '{sources.checkpoint}' is not a whole SD-1.5 checkpoint "
                f"({error_summary(error)}). {_CHECKPOINT_HINT}"
            ) from error
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
    except (OSError, ValueError, SafetensorError) as error:  # a weights file cut short raises SafetensorError
        raise _missing("SD-1.5 base model", sources.base, _BASE_HINT, error) from error
    return unet2d, vae, text_encoder, tokenizer


def _check_checkpoint(path: Path) -> None:
    """Refuse, naming the file, a `.safetensors` checkpoint that cannot be read or holds no SD-1.5 UNet (a LoRA passed
    by mistake, a damaged download), before its failure would be blamed on the base folder's configs. Reads the
    header only."""
    if path.suffix != ".safetensors":
        return
    try:
        with safe_open(path, framework="pt") as weights:
            keys = list(weights.keys())
    except (OSError, SafetensorError) as error:
        raise ModelNotFoundError(
            f"The DreamBooth checkpoint '{path}' cannot be read ({error_summary(error)}): it is damaged or not a "
            f"weights file. Download it again. {_CHECKPOINT_HINT}"
        ) from error
    if not any(key.startswith(_LDM_UNET_PREFIX) for key in keys):
        raise ModelNotFoundError(
            f"The DreamBooth checkpoint '{path}' holds no SD-1.5 UNet weights ({_LDM_UNET_PREFIX}*): a LoRA goes to "
            f"--lora instead. {_CHECKPOINT_HINT}"
        )
