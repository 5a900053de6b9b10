"""The subject-mask network: marks the blocks subject's pixels in a frame, for the colour and class measures. No bpy.

The moving-region rule of `adherence.find_subject` (pixels that differ from the clip's per-pixel median) cannot see a
subject when the camera moves (the whole set moves) or when the subject grows where it stands (it covers its pixels in
most frames and so becomes the median). This small network looks at one frame at a time instead: it was trained on
the blocks generator's frames with their exact subject masks (`scripts/train_subject_mask.py`), blurred and jittered
like decoded frames, so it finds a subject that moves with the camera or stays put as well as one that crosses a
still scene. Trained also on the same scenes without their subject, it marks nothing in a frame where a model drew no
subject, rather than the most subject-like patch of the scene. It is shipped in `backend/models/subject_mask/` with a
SHA-256 manifest, like the blocks model.

Like the measures built on it, it knows the blocks world only (one ball, cube, figure or car on grass, snow, desert,
night, water or a grey blockout floor).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import ModelNotFoundError, ParameterError
from ..models.manifest import MANIFEST_NAME, file_sha256, verify_manifest
from .adherence import MIN_AREA_FRACTION, SubjectRegion, largest_region

SUBJECT_MASK_DIR = Path(__file__).resolve().parents[1] / "models" / "subject_mask"
WEIGHTS_NAME = "subject_mask.safetensors"
CONFIG_NAME = "config.json"
INPUT_SIZE = 64  # frames are resized to this shorter side; the blocks model's native size
MASK_THRESHOLD = 0.5  # subject probability above which a pixel belongs to the subject


def _conv(channels_in: int, channels_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.GroupNorm(4, channels_out),
        nn.SiLU(),
    )


class SubjectMaskNet(nn.Module):
    """A small U-Net: (N, 3, H, W) frames in [-1, 1] → (N, 1, H, W) subject logits (H and W multiples of 4; trained
    on 64 x 64).

    Two down-sampling steps and dilated convolutions at a quarter of the side give it the whole frame as context
    (enough to tell a subject from a cloud or a box of the set by its shape and place), the skip connections keep the
    mask's edges sharp.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.width = width
        self.encode_full = nn.Sequential(_conv(3, width), _conv(width, width))
        self.encode_half = nn.Sequential(_conv(width, 2 * width, stride=2), _conv(2 * width, 2 * width))
        self.context = nn.Sequential(
            _conv(2 * width, 4 * width, stride=2),
            _conv(4 * width, 4 * width, dilation=2),
            _conv(4 * width, 4 * width, dilation=4),
        )
        self.decode_half = _conv(6 * width, 2 * width)
        self.decode_full = _conv(3 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        full = self.encode_full(frames)
        half = self.encode_half(full)
        quarter = self.context(half)
        up = nn.functional.interpolate(quarter, scale_factor=2, mode="bilinear", align_corners=False)
        half = self.decode_half(torch.cat([up, half], dim=1))
        up = nn.functional.interpolate(half, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.decode_full(torch.cat([up, full], dim=1)))


def input_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) frames are resized to: the shorter side 64, the longer in proportion, both multiples of 4
    (the network halves the size twice), so that shapes are not squashed."""
    scale = INPUT_SIZE / min(height, width)
    return max(4, round(height * scale / 4) * 4), max(4, round(width * scale / 4) * 4)


def frames_to_input(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB → (T, 3, h, w) float in [-1, 1] at `input_size`, resized by area averaging."""
    height, width = input_size(*frames.shape[1:3])
    if frames.shape[1:3] != (height, width):
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def load_subject_mask_net(folder: str | Path | None = None) -> SubjectMaskNet:
    """The shipped network (or one written by `scripts/train_subject_mask.py` to `folder`), checked by its manifest.

    The files are checked on every call; the network is loaded once per folder and manifest and shared, so callers
    must not change it (train it, move it to another device).
    """
    folder = Path(folder if folder is not None else SUBJECT_MASK_DIR).resolve()
    verify_manifest(folder, what="subject-mask network", retrain="scripts/train_subject_mask.py")
    return _load(folder, (folder / MANIFEST_NAME).read_text())


@functools.lru_cache(maxsize=4)
def _load(folder: Path, manifest: str) -> SubjectMaskNet:
    """Load a checked folder; `manifest` (the SHA256SUMS text) is part of the key, so a retrained folder reloads."""
    try:
        width = int(json.loads((folder / CONFIG_NAME).read_text())["width"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelNotFoundError(f"{folder / CONFIG_NAME} gives no network width ({error}); retrain it.") from error
    net = SubjectMaskNet(width=width)
    net.load_state_dict(load_file(folder / WEIGHTS_NAME))
    return net.eval()


@torch.no_grad()
def subject_probabilities(frames: np.ndarray, net: SubjectMaskNet | None = None) -> np.ndarray:
    """(T, H, W) probability that each pixel belongs to the subject, at the frames' own size."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        got = f"{getattr(frames, 'shape', None)} {getattr(frames, 'dtype', type(frames).__name__)}"
        raise ParameterError("frames", f"must be (T, H, W, 3) uint8 RGB frames, got {got}")
    net = load_subject_mask_net() if net is None else net
    probabilities = torch.sigmoid(net(frames_to_input(frames)))[:, 0].numpy()
    height, width = frames.shape[1:3]
    if probabilities.shape[1:] == (height, width):
        return probabilities
    return np.stack([cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in probabilities])


def segment_subject(
    frames: np.ndarray, net: SubjectMaskNet | None = None, min_area_fraction: float = MIN_AREA_FRACTION
) -> list[SubjectRegion | None]:
    """The subject of every frame: the largest connected region the network marks, or None where it marks none."""
    masks = subject_probabilities(frames, net) > MASK_THRESHOLD
    return [largest_region(frame, mask, min_area_fraction) for frame, mask in zip(frames, masks, strict=True)]


def network_region_settings(folder: str | Path | None = None) -> dict[str, Any]:
    """How `segment_subject` finds the region, for metrics.json: the network, its manifest's SHA-256 and threshold."""
    folder = Path(folder if folder is not None else SUBJECT_MASK_DIR).resolve()
    config = json.loads((folder / CONFIG_NAME).read_text())
    return {
        "subject_region": "network",
        "region": "largest connected region the subject-mask network marks (probability > threshold)",
        "network": f"backend/models/{folder.name}" if folder == SUBJECT_MASK_DIR else str(folder),
        "network_manifest_sha256": file_sha256(folder / MANIFEST_NAME),
        "network_training": config.get("training", {}),
        "mask_threshold": MASK_THRESHOLD,
        "input_short_side": INPUT_SIZE,
        "min_area_fraction": MIN_AREA_FRACTION,
    }
