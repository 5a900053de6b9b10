"""Training of the subject-mask network that the colour and class measures read (evaluation/subject_mask.py). No bpy.

The data are the blocks generator's frames with their exact subject masks, from a seed of their own (neither the
blocks model's training clips nor the benchmark's references), and about one in nine frames of the same scenes
without their subject, with an empty mask (so that a frame in which a model drew no subject shows none, instead of
the most subject-like patch of the scene). Each batch is degraded the way a generated frame is:
blurred by a random down- and up-sampling (a decoded 64 x 64 frame is soft), its brightness and contrast (also per
channel) jittered and noise added, and mirrored at random. The loss is binary cross-entropy plus a soft Dice term (the
subject covers about 5 % of a frame, and Dice keeps a small subject from being given up for the background). The check
is the mean intersection over union with the true masks on frames of another seed, clean and degraded, and the share
of that seed's subject-free frames in which the network marks a region as large as a subject.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from ..evaluation.subject_mask import (
    CONFIG_NAME,
    INPUT_SIZE,
    MASK_THRESHOLD,
    WEIGHTS_NAME,
    SubjectMaskNet,
    segment_subject,
)
from ..models.manifest import write_manifest
from .data import clip_at, render_scene, spec_at

MIN_HELD_OUT_IOU = 0.75  # the check: mean IoU with the true masks on held-out frames, clean and degraded
MAX_FALSE_SUBJECT_SHARE = 0.1  # and at most this share of held-out subject-free frames with a subject region
CLIP_FRAMES = 16  # frames rendered per clip, of which a few evenly spaced ones are used
HELD_OUT_FRAMES_PER_CLIP = 4
SCENE_FRAMES_PER_CLIP = 2  # subject-free frames taken from each of `scene_clips` clips


@dataclass(frozen=True)
class MaskTrainingSettings:
    seed: int = 3
    held_out_seed: int = 4
    clips: int = 3000
    frames_per_clip: int = 4
    steps: int = 2500
    batch: int = 32
    learning_rate: float = 2e-3
    width: int = 16
    held_out_clips: int = 64
    scene_clips: int = 750  # clips whose scene is also shown without the subject: 1,500 frames of 13,500

    def __post_init__(self) -> None:
        if self.seed == self.held_out_seed:
            raise ValueError(f"seed {self.seed} is also the held-out check's seed: the check would see training data")


def mask_frames(seed: int, clips: int, frames_per_clip: int, scene_clips: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, 64, 64, 3) uint8 and their subject masks (N, 64, 64) bool: `frames_per_clip` spread over each of
    `clips` clips, then `SCENE_FRAMES_PER_CLIP` frames of the first `scene_clips` clips' scenes without the subject,
    whose masks are empty."""
    picks = np.linspace(0, CLIP_FRAMES - 1, frames_per_clip).round().astype(int)
    scene_picks = np.linspace(0, CLIP_FRAMES - 1, SCENE_FRAMES_PER_CLIP).round().astype(int)
    images, masks = [], []
    for index in range(clips):
        clip = clip_at(seed, index, size=INPUT_SIZE, frames=CLIP_FRAMES)
        images.append(clip.frames[picks])
        masks.append(clip.masks[picks])
    for index in range(scene_clips):
        scene = render_scene(spec_at(seed, index), size=INPUT_SIZE, frames=CLIP_FRAMES)[scene_picks]
        images.append(scene)
        masks.append(np.zeros(scene.shape[:3], dtype=bool))
    return np.concatenate(images), np.concatenate(masks)


def degrade(images: torch.Tensor, generator: torch.Generator, blur: bool = True, jitter: bool = True) -> torch.Tensor:
    """Make clean frames (N, 3, 64, 64) in [-1, 1] look generated: soft, shifted in tone, noisy.

    Tone: a brightness offset, a contrast factor and a per-channel contrast factor (around mid-grey, which shifts the
    colours' saturation and balance a little), then Gaussian noise of a random strength.
    """
    n = images.shape[0]
    if blur:
        sides = torch.randint(24, INPUT_SIZE + 1, (n,), generator=generator).tolist()
        images = torch.cat(
            [
                F.interpolate(
                    F.interpolate(image[None], size=(side, side), mode="area"),
                    size=(INPUT_SIZE, INPUT_SIZE),
                    mode="bilinear",
                    align_corners=False,
                )
                for image, side in zip(images, sides, strict=True)
            ]
        )
    if jitter:
        uniform = torch.rand((n, 6), generator=generator)
        brightness = (uniform[:, 0] - 0.5) * 0.2
        contrast = 0.8 + 0.4 * uniform[:, 1]
        channel_contrast = 0.92 + 0.16 * uniform[:, 2:5]
        noise = 0.04 * uniform[:, 5]
        gain = contrast[:, None, None, None] * channel_contrast[:, :, None, None]
        images = images * gain + brightness[:, None, None, None]
        images = images + noise[:, None, None, None] * torch.randn(images.shape, generator=generator)
    return images.clamp(-1.0, 1.0)


def mask_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice, both over (N, 1, H, W)."""
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    probabilities = torch.sigmoid(logits)
    overlap = (probabilities * masks).sum(dim=(1, 2, 3))
    dice = 1.0 - (2.0 * overlap + 1.0) / (probabilities.sum(dim=(1, 2, 3)) + masks.sum(dim=(1, 2, 3)) + 1.0)
    return bce + dice.mean()


@torch.no_grad()
def mean_iou(net: SubjectMaskNet, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean intersection over union of the thresholded network masks with the true ones (1 where both are empty)."""
    predicted = torch.sigmoid(net(images)) > MASK_THRESHOLD
    truth = masks > 0.5
    intersection = (predicted & truth).sum(dim=(1, 2, 3)).float()
    union = (predicted | truth).sum(dim=(1, 2, 3)).float()
    return float(torch.where(union > 0, intersection / union.clamp(min=1.0), 1.0).mean())


def false_subject_share(net: SubjectMaskNet, scenes: np.ndarray) -> float:
    """Share of subject-free frames in which `segment_subject` would find a subject."""
    regions = segment_subject(scenes, net)
    return sum(region is not None for region in regions) / max(1, len(regions))


def to_tensors(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return frames, torch.from_numpy(masks)[:, None].float()


def fit_subject_mask(
    settings: MaskTrainingSettings, device: str = "cpu", progress: bool = True
) -> tuple[SubjectMaskNet, list[float]]:
    """Train a network on `settings.clips` clips of `settings.seed`; returns it (on the CPU) and the loss per step."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    images, masks = to_tensors(
        *mask_frames(settings.seed, settings.clips, settings.frames_per_clip, settings.scene_clips)
    )
    net = SubjectMaskNet(settings.width).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, settings.learning_rate, total_steps=settings.steps)
    bar = tqdm(total=settings.steps, unit="step", desc="subject mask", disable=not progress)
    losses: list[float] = []
    net.train()
    for _ in range(settings.steps):
        picks = torch.randint(0, images.shape[0], (settings.batch,), generator=generator)
        batch, target = degrade(images[picks], generator), masks[picks]
        mirrored = torch.rand(settings.batch, generator=generator) < 0.5
        batch[mirrored], target[mirrored] = batch[mirrored].flip(-1), target[mirrored].flip(-1)
        loss = mask_loss(net(batch.to(device)), target.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        bar.update()
    bar.close()
    return net.cpu().eval(), losses


def train_subject_mask(
    settings: MaskTrainingSettings, out: Path, device: str = "cpu", progress: bool = True
) -> dict[str, Any]:
    """Train the network, check it on held-out frames and write `out` (weights, config.json, SHA256SUMS).

    Returns the training record stored in config.json. Raises RuntimeError, writing nothing, when the check fails.
    """
    started = time.monotonic()
    net, losses = fit_subject_mask(settings, device, progress)
    held_out = mask_frames(settings.held_out_seed, settings.held_out_clips, HELD_OUT_FRAMES_PER_CLIP)
    held_images, held_masks = to_tensors(*held_out)
    iou_clean = mean_iou(net, held_images, held_masks)
    degraded = degrade(held_images, torch.Generator().manual_seed(settings.held_out_seed))
    iou_degraded = mean_iou(net, degraded, held_masks)
    scenes = mask_frames(settings.held_out_seed, 0, HELD_OUT_FRAMES_PER_CLIP, settings.held_out_clips)[0]
    false_subjects = false_subject_share(net, scenes)
    record = {
        **asdict(settings),
        "device": device,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "seconds": round(time.monotonic() - started, 1),
        "first_loss": round(float(np.mean(losses[:50])), 4),
        "last_loss": round(float(np.mean(losses[-50:])), 4),
        "held_out_iou": round(iou_clean, 4),
        "held_out_iou_degraded": round(iou_degraded, 4),
        "held_out_false_subject_share": round(false_subjects, 4),
    }
    if min(iou_clean, iou_degraded) < MIN_HELD_OUT_IOU:
        raise RuntimeError(
            f"the subject-mask network's held-out IoU is {iou_clean:.3f} (clean) and {iou_degraded:.3f} (degraded), "
            f"below {MIN_HELD_OUT_IOU}; train longer (--steps) or on more clips (--clips)"
        )
    if false_subjects > MAX_FALSE_SUBJECT_SHARE:
        raise RuntimeError(
            f"the subject-mask network finds a subject in {false_subjects:.0%} of held-out frames without one, "
            f"more than {MAX_FALSE_SUBJECT_SHARE:.0%}; train longer (--steps)"
        )
    out.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in net.state_dict().items()}, out / WEIGHTS_NAME)
    (out / CONFIG_NAME).write_text(json.dumps({"width": settings.width, "training": record}, indent=2) + "\n")
    write_manifest(out)
    return record
