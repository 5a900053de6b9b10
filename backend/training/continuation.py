"""Continue the motion stage of an exported `blocks` model (the shipped one, or any folder the training wrote). No bpy.

The motion stage is the one that keeps improving with more steps (docs/training.md), and the one a GPU can take much
further than a 2-core CPU. This starts from the folder's weights instead of training every stage again: the VAE,
text encoder and tokenizer are kept as they are, the training clips are made and encoded with that VAE, and the
inflated UNet trains `plan.motion.steps` more steps with a fresh optimizer (warm-up and cosine decay again: a warm
restart): the motion modules, and the image UNet too at `plan.motion.spatial_learning_rate` (0 keeps it as it is).
The other stages' settings of `plan` do not apply. The encoded clips and the checkpoint in the work folder carry the
source's manifest hash in their names, so a run resumes only from its own source, and a normal run's files in the
same folder are neither used nor overwritten. The export records which model it continued and that model's own
training record.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextModel

from ..models.blocks import MANIFEST_NAME, file_sha256, verify_manifest
from .checks import check_motion_coherence
from .data import caption_words
from .export import TRAINING_INFO_NAME, export_model
from .loss_plot import plot_losses
from .stages import (
    EncodedClips,
    encode_clips,
    extract_image_unet,
    extract_motion_adapter,
    latent_subject_masks,
    train_motion_modules,
)
from .train import TrainingPlan, gate, load_or_make_dataset, training_info
from .word_tokenizer import load_word_tokenizer

SKIPPED_STAGES = ("vae", "text", "image")


def work_file_tag(source: Path) -> str:
    """What names the continuation's files in the work folder: the first 12 hex digits of the source's manifest."""
    return file_sha256(source / MANIFEST_NAME)[:12]


def continued_checkpoint_name(source: Path) -> str:
    return f"stage4_motion_continued-{work_file_tag(source)}.pt"


def continue_motion_stage(plan: TrainingPlan, source: Path) -> Path:
    """Train the motion stage of the model in `source` for `plan.motion.steps` more steps; returns the new folder.

    Raises:
        ModelNotFoundError: `source` is not a complete model folder (its SHA-256 manifest does not match).
        TrainingCheckFailed: the motion check fails (unless `plan.run_checks` is off).
    """
    started = time.perf_counter()
    verify_manifest(source)
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(plan.seed)
    data = load_or_make_dataset(plan)
    frames, masks, captions = data["frames"], data["masks"], [str(c) for c in data["captions"]]

    float32 = {"torch_dtype": torch.float32}
    vae = AutoencoderKL.from_pretrained(source / "vae", **float32).to(plan.device).eval()
    text_encoder = CLIPTextModel.from_pretrained(source / "text_encoder", **float32)
    tokenizer = load_word_tokenizer(source / "tokenizer")
    unet2d = UNet2DConditionModel.from_pretrained(source / "unet", **float32)
    motion_adapter = MotionAdapter.from_pretrained(source / "motion_adapter", **float32)

    # The clips are encoded with the source's VAE; its scaling factor stays the one the model was trained and
    # sampled with, rather than being measured again on the encoded latents.
    latents = load_or_encode_with(vae, frames, plan, source)
    scaling_factor = float(vae.config.scaling_factor)
    clips = EncodedClips(
        latents, captions, scaling_factor, latent_subject_masks(masks, frames.shape[2] // latents.shape[3])
    )
    unet, motion_losses = train_motion_modules(
        unet2d,
        motion_adapter,
        text_encoder,
        tokenizer,
        clips,
        plan.motion,
        plan.work_dir,
        continued_checkpoint_name(source),
    )
    checks = [gate(check_motion_coherence(unet, text_encoder, tokenizer, vae, captions), plan)]
    extract_motion_adapter(unet, motion_adapter)
    extract_image_unet(unet, unet2d)

    losses = {"motion": motion_losses}
    info = training_info(plan, checks, losses, time.perf_counter() - started)
    for stage in SKIPPED_STAGES:
        del info["recipe"][stage]  # not run: the source's record below says how those were trained
    info["stages_trained"] = ["motion"]
    info["continued_from"] = {
        "manifest_sha256": file_sha256(source / MANIFEST_NAME),
        "training": source_training_record(source),
    }
    folder = export_model(
        plan.out_dir,
        vae,
        text_encoder,
        caption_words(),
        unet2d,
        motion_adapter,
        info,
        tokenizer_dir=source / "tokenizer",
    )
    plot_losses(losses, plan.work_dir / "loss_curves_continued.png")
    return folder


def load_or_encode_with(vae: AutoencoderKL, frames: np.ndarray, plan: TrainingPlan, source: Path) -> np.ndarray:
    """The clips encoded by the source's VAE, from the work folder when an earlier run of the same source saved them."""
    path = plan.work_dir / f"latents-{work_file_tag(source)}-seed{plan.data_seed}-n{plan.clips}.npy"
    if path.exists():
        return np.load(path)
    latents = encode_clips(vae, frames, plan.device)
    np.save(path, latents)
    return latents


def source_training_record(source: Path) -> dict | None:
    """The source folder's own `training.json`, so the chain of runs that made a model stays on record."""
    path = source / TRAINING_INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else None
