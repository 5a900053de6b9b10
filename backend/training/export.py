"""Write the trained `blocks` model as a diffusers folder with a SHA-256 manifest, and verify one. No bpy.

Layout (AnimateDiffPipeline's, so diffusers can load it too): `model_index.json`, `vae/`, `text_encoder/`,
`tokenizer/`, `unet/` (the 2-D UNet), `motion_adapter/`, `scheduler/`, and `SHA256SUMS` over every other file.
Weights are stored in float16 to keep the folder small; the presets load them in the dtype they run in.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextModel

from ..models.bundle import official_ddim_scheduler
from ..models.manifest import write_manifest
from .word_tokenizer import save_word_tokenizer

TRAINING_INFO_NAME = "training.json"


def export_model(
    folder: Path,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    words: list[str],
    unet2d: UNet2DConditionModel,
    motion_adapter: MotionAdapter,
    training_info: dict[str, Any],
    tokenizer_dir: Path | None = None,
) -> Path:
    """Save every component into `folder` (float16 safetensors) and write the manifest. The tokenizer is made for
    `words`, or copied from `tokenizer_dir` (the one the text encoder was trained with, when that exists already)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in (
        ("vae", vae),
        ("text_encoder", text_encoder),
        ("unet", unet2d),
        ("motion_adapter", motion_adapter),
    ):
        original_dtype = next(model.parameters()).dtype
        model.to(torch.float16).save_pretrained(folder / name, safe_serialization=True)
        model.to(original_dtype)
        drop_source_path(folder / name / "config.json")
    if tokenizer_dir is None:
        save_word_tokenizer(words, folder / "tokenizer")
    else:
        shutil.copytree(tokenizer_dir, folder / "tokenizer", dirs_exist_ok=True)
    official_ddim_scheduler().save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "AnimateDiffPipeline",
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "motion_adapter": ["diffusers", "MotionAdapter"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / TRAINING_INFO_NAME).write_text(json.dumps(training_info, indent=2, sort_keys=True) + "\n")
    write_manifest(folder)
    return folder


def drop_source_path(config_file: Path) -> None:
    """Remove `_name_or_path` from a saved config: a model loaded from a folder records that folder there, and a
    model folder written for others should not name the place it was made from."""
    config = json.loads(config_file.read_text())
    if config.pop("_name_or_path", None) is not None:
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
