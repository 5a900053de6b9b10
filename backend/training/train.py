"""Train the `blocks` model end to end: data, five stages with their checks, export. No bpy.

Every artefact lives in `work_dir` (the data set, each stage's checkpoint, the encoded latents), so a stopped run
picks up where it stopped, and a finished stage is not trained again.
"""

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic_files import write_atomically
from .architecture import (
    FRAME_SIZE,
    NUM_FRAMES,
    UNET_BLOCK_OUT_CHANNELS,
    UNET_LAYERS_PER_BLOCK,
    build_image_unet,
    build_motion_adapter,
    build_text_encoder,
    build_vae,
    check_unet_shape,
)
from .checks import (
    CheckResult,
    check_colour_words,
    check_motion_coherence,
    check_text_conditioning,
    check_vae_colours,
)
from .data import caption_words, load_dataset, write_dataset
from .export import export_model
from .loss_plot import plot_losses
from .stages import (
    EncodedClips,
    StageSettings,
    encode_clips,
    extract_image_unet,
    extract_motion_adapter,
    fingerprint,
    latent_scaling_factor,
    latent_subject_masks,
    train_cross_attention,
    train_image_model,
    train_motion_coarse_to_fine,
    train_vae,
)
from .text_pretraining import check_text_encoder, pretrain_text_encoder
from .word_tokenizer import load_word_tokenizer, save_word_tokenizer

logger = logging.getLogger(__name__)

LOW_RES_POOL = 2  # the motion stage's low-resolution part: 16 x 16 latents instead of 32 x 32


class TrainingCheckFailed(RuntimeError):
    """A stage did not learn what the next one builds on."""


@dataclass
class TrainingPlan:
    """Everything that decides the trained model. The defaults are the shipped model's recipe."""

    work_dir: Path
    out_dir: Path
    data_seed: int = 1
    clips: int = 3000
    unet_channels: tuple[int, ...] = UNET_BLOCK_OUT_CHANNELS  # the UNet's and motion modules' widths, per block
    unet_layers_per_block: int = UNET_LAYERS_PER_BLOCK
    vae: StageSettings = field(default_factory=lambda: StageSettings(steps=500, batch_size=16, learning_rate=1e-3))
    text: StageSettings = field(default_factory=lambda: StageSettings(steps=1500, batch_size=128, learning_rate=2e-3))
    image: StageSettings = field(
        default_factory=lambda: StageSettings(
            steps=1400, batch_size=32, learning_rate=5e-4, subject_weight=4.0, subject_weight_from=300
        )
    )
    motion: StageSettings = field(
        default_factory=lambda: StageSettings(
            steps=4000, batch_size=2, learning_rate=4e-4, subject_weight=4.0, spatial_learning_rate=1e-4
        )
    )
    motion_low_res: StageSettings = field(  # off by default; 2 makes each clip about 4 times cheaper
        default_factory=lambda: StageSettings(
            steps=0, batch_size=8, learning_rate=4e-4, subject_weight=4.0, latent_pool=LOW_RES_POOL
        )
    )
    colour: StageSettings = field(
        default_factory=lambda: StageSettings(steps=500, batch_size=32, learning_rate=2e-3, subject_weight=20.0)
    )
    device: str = "cpu"
    seed: int = 0
    run_checks: bool = True

    def __post_init__(self) -> None:
        check_unet_shape(self.unet_channels, self.unet_layers_per_block)  # before any work, not after the VAE
        for stage in (self.vae, self.text, self.image, self.motion_low_res, self.motion, self.colour):
            stage.device = self.device
            stage.seed = self.seed


def train_blocks_model(plan: TrainingPlan) -> Path:
    """Run (or resume) every step of `plan`; returns the exported model folder."""
    started = time.perf_counter()
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(plan.seed)
    data = load_or_make_dataset(plan)
    frames, masks, captions = data["frames"], data["masks"], [str(c) for c in data["captions"]]
    checks: list[CheckResult] = []

    vae = build_vae()
    vae_losses = train_vae(vae, frames, masks, plan.vae, plan.work_dir)
    checks.append(gate(check_vae_colours(vae, frames, masks), plan))

    latents, scaling_factor = load_or_encode_latents(vae, frames, plan)
    vae.register_to_config(scaling_factor=scaling_factor)
    clips = EncodedClips(
        latents, captions, scaling_factor, latent_subject_masks(masks, frames.shape[2] // latents.shape[3])
    )

    tokenizer_dir = save_word_tokenizer(caption_words(), plan.work_dir / "tokenizer")
    tokenizer = load_word_tokenizer(tokenizer_dir)
    text_encoder = build_text_encoder(len(tokenizer))
    text_losses, probe = pretrain_text_encoder(text_encoder, tokenizer, captions, plan.text, plan.work_dir)
    checks.append(gate(check_text_encoder(text_encoder, tokenizer, captions[::-1], probe), plan))

    unet2d = build_image_unet(plan.unet_channels, plan.unet_layers_per_block)
    image_losses = train_image_model(unet2d, text_encoder, tokenizer, clips, plan.image, plan.work_dir)
    checks.append(
        gate(check_text_conditioning(unet2d, text_encoder, tokenizer, vae, latents, captions, scaling_factor), plan)
    )

    motion_adapter = build_motion_adapter(plan.unet_channels, plan.unet_layers_per_block)
    unet, motion_losses = train_motion_coarse_to_fine(
        unet2d, motion_adapter, text_encoder, tokenizer, clips, plan.motion_low_res, plan.motion, plan.work_dir
    )
    checks.append(gate(check_motion_coherence(unet, text_encoder, tokenizer, vae, captions), plan))
    extract_motion_adapter(unet, motion_adapter)
    extract_image_unet(unet, unet2d)

    losses = {"vae": vae_losses, "text": text_losses, "image": image_losses, **motion_losses}
    if plan.colour.steps > 0:
        losses["colour"] = train_cross_attention(unet2d, text_encoder, tokenizer, clips, plan.colour, plan.work_dir)
        checks.append(gate(check_colour_words(unet2d, text_encoder, tokenizer, vae), plan))
    info = training_info(plan, checks, losses, time.perf_counter() - started)
    folder = export_model(plan.out_dir, vae, text_encoder, caption_words(), unet2d, motion_adapter, info)
    plot_losses(losses, plan.work_dir / "loss_curves.png")
    return folder


def gate(result: CheckResult, plan: TrainingPlan) -> CheckResult:
    logger.warning(result.summary())
    print(result.summary(), flush=True)
    if plan.run_checks and not result.passed:
        raise TrainingCheckFailed(
            f"{result.summary()}. Train this stage longer (raise its steps and run again: the run resumes), "
            "or pass --skip-checks to build on it anyway."
        )
    return result


def load_or_make_dataset(plan: TrainingPlan) -> dict[str, np.ndarray]:
    path = plan.work_dir / f"clips-seed{plan.data_seed}-n{plan.clips}-{FRAME_SIZE}px.npz"
    if not path.exists():
        write_dataset(path, seed=plan.data_seed, count=plan.clips, size=FRAME_SIZE, frames=NUM_FRAMES)
    return load_dataset(path)


def load_or_encode_latents(vae, frames: np.ndarray, plan: TrainingPlan) -> tuple[np.ndarray, float]:
    """The clips encoded by `vae`, and the latent scaling factor, from the work folder when this VAE encoded this
    data set there before (named by both: a work folder reused with another data set or VAE encodes again)."""
    tag = f"vae{fingerprint(vae)}-seed{plan.data_seed}-n{plan.clips}"
    path = plan.work_dir / f"latents-{tag}.npy"
    scale_path = plan.work_dir / f"latent_scale-{tag}.json"
    if path.exists() and scale_path.exists():
        return np.load(path), float(json.loads(scale_path.read_text())["scaling_factor"])
    latents = encode_clips(vae, frames, plan.device)
    scaling_factor = latent_scaling_factor(latents)
    save_array_atomically(path, latents)
    scale = json.dumps({"scaling_factor": scaling_factor}) + "\n"
    write_atomically(scale_path, lambda temporary: temporary.write_text(scale))
    return latents, scaling_factor


def save_array_atomically(path: Path, array: np.ndarray) -> None:
    """`np.save` that leaves no half-written file behind (a stop while hundreds of MB are written would otherwise
    leave one that every later run tries to load)."""

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as file:  # a path without .npy would get one added
            np.save(file, array)
            file.flush()
            os.fsync(file.fileno())  # on disk before the name says it is there

    write_atomically(path, save)


def training_info(
    plan: TrainingPlan, checks: list[CheckResult], losses: dict[str, list[float]], seconds: float
) -> dict[str, object]:
    """What the model folder records about how it was made."""
    settings = asdict(plan)
    settings["work_dir"] = settings["out_dir"] = None  # machine paths stay out of the shipped folder
    return {
        "recipe": settings,
        "checks": [{"name": c.name, "passed": c.passed, **c.measured} for c in checks],
        "final_losses": {stage: float(np.mean(values[-50:])) if values else None for stage, values in losses.items()},
        "seconds_this_run": round(seconds, 1),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
    }
