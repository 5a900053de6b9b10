"""Continue training an exported `blocks` model (the shipped one, or any folder the training wrote). No bpy.

The motion stage is the one that keeps improving with more steps (docs/training.md), and the one a GPU can take much
further than a 2-core CPU. This starts from the folder's weights instead of training every stage again: the VAE,
text encoder and tokenizer are kept as they are, and the training clips are made and encoded with that VAE. Then
the inflated UNet trains `plan.motion.steps` more steps with a fresh optimizer (warm-up and cosine decay again: a warm
restart): the motion modules, and the image UNet too at `plan.motion.spatial_learning_rate` (0 keeps it as it is),
after `plan.motion_low_res.steps` on pooled latents when that part has steps. After it, the cross-attention stage
trains `plan.colour.steps` steps, as at the end of a full run (it follows the motion stage there too, because that
stage moves the image UNet's weights). Any of the counts may be 0, not all. The other stages' settings of `plan`
do not apply.

The checkpoints in the work folder are named by what each stage starts from (`stages.stage_checkpoint`), so a run
resumes only from its own source and settings, and a normal run's files in the same folder are neither used nor
overwritten; the encoded clips carry the hash of the VAE that encoded them, so runs from models that share a VAE share
them. The export records which model it continued and that model's own training record.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextModel

from ..models.manifest import MANIFEST_NAME, file_sha256, verify_manifest
from .checks import CheckResult, check_colour_words, check_motion_coherence
from .data import caption_words
from .export import TRAINING_INFO_NAME, export_model
from .loss_plot import plot_losses
from .stages import (
    EncodedClips,
    encode_clips,
    extract_image_unet,
    extract_motion_adapter,
    latent_subject_masks,
    train_cross_attention,
    train_motion_coarse_to_fine,
)
from .train import TrainingPlan, gate, load_or_make_dataset, save_array_atomically, training_info
from .word_tokenizer import load_word_tokenizer

SKIPPED_STAGES = ("vae", "text", "image")
SOURCE_SHAPE = ("unet_channels", "unet_layers_per_block")  # the UNet keeps the shape it was trained with


VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"


def latents_file_name(source: Path, plan: TrainingPlan) -> str:
    """The clips as the source's VAE encodes them, named by that VAE's weights and the data set."""
    return f"latents-vae{file_sha256(source / VAE_WEIGHTS)[:12]}-seed{plan.data_seed}-n{plan.clips}.npy"


def continue_training(plan: TrainingPlan, source: Path) -> Path:
    """Train the model in `source` for `plan.motion.steps` more motion-stage steps, then `plan.colour.steps` steps
    of the cross-attention stage; returns the new folder.

    Raises:
        ValueError: both step counts are 0.
        ModelNotFoundError: `source` is not a complete model folder (its SHA-256 manifest does not match).
        TrainingCheckFailed: a stage's check fails (unless `plan.run_checks` is off).
    """
    if plan.motion.steps <= 0 and plan.motion_low_res.steps <= 0 and plan.colour.steps <= 0:
        raise ValueError("Nothing to train: the motion and cross-attention stages all have 0 steps.")
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
    checks: list[CheckResult] = []
    losses: dict[str, list[float]] = {}
    if plan.motion.steps > 0 or plan.motion_low_res.steps > 0:
        unet, motion_losses = train_motion_coarse_to_fine(
            unet2d, motion_adapter, text_encoder, tokenizer, clips, plan.motion_low_res, plan.motion, plan.work_dir
        )
        losses.update(motion_losses)
        checks.append(gate(check_motion_coherence(unet, text_encoder, tokenizer, vae, captions), plan))
        extract_motion_adapter(unet, motion_adapter)
        extract_image_unet(unet, unet2d)
    if plan.colour.steps > 0:
        losses["colour"] = train_cross_attention(unet2d, text_encoder, tokenizer, clips, plan.colour, plan.work_dir)
        checks.append(gate(check_colour_words(unet2d, text_encoder, tokenizer, vae), plan))

    info = training_info(plan, checks, losses, time.perf_counter() - started)
    for stage in SKIPPED_STAGES:
        del info["recipe"][stage]  # not run: the source's record below says how those were trained
    for name in SOURCE_SHAPE:
        del info["recipe"][name]  # the plan's default, not the shape of the model this run continued
    for stage in ("motion_low_res", "motion", "colour"):
        if stage not in losses:
            del info["recipe"][stage]
    info["stages_trained"] = list(losses)
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
    """The clips encoded by the source's VAE, from the work folder when an earlier run with that VAE saved them."""
    path = plan.work_dir / latents_file_name(source, plan)
    if path.exists():
        return np.load(path)
    latents = encode_clips(vae, frames, plan.device)
    save_array_atomically(path, latents)
    return latents


def source_training_record(source: Path) -> dict | None:
    """The source folder's own `training.json`, so the chain of runs that made a model stays on record."""
    path = source / TRAINING_INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else None
