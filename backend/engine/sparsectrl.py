"""SparseCtrl conditioning for image-to-video and sketch-to-video MotionClone. No bpy.

A condition is one or more images placed on chosen frames: RGB keyframes (`rgb`, given to the network as VAE latents)
or line drawings (`scribble`, given as pixels in [0, 1]); a mask marks the frames that have one. The SparseCtrl
network turns (timestep, text, condition) into residuals for the UNet's down blocks and mid block. It zeroes the noisy
sample it is given, so its residuals do not depend on x_t: they are computed without autograd, once per step for the
CFG pair [E_neg, E_pos], and each UNet pass takes its half. During extraction the condition frames are
filled from the reference itself, as the official code does (RGB from the reference latents, scribble
from the reference's RGB frame, bug B4); `sparsectrl_extraction="none"` leaves SparseCtrl out of the extraction.
"""

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, SparseControlNetModel

from ..errors import ParameterError
from .edges import sobel_magnitude
from .representation import encode_reference, frames_to_tensor

CONDITION_KINDS = ("rgb", "scribble")
SKETCH_EDGE_QUANTILE = 0.9  # the brightest 10 % of the edge strength become strokes
SKETCH_STROKE_RADIUS = 1  # strokes widened by this many pixels each side, like the thick training scribbles


@dataclass(frozen=True)
class SparseCondition:
    """Condition images for a generation.

    Attributes:
        kind: "rgb" (keyframes) or "scribble" (line drawings); must match the SparseCtrl model loaded.
        images: uint8 (K, H, W, 3) at the generation's size, one per entry of `frames`.
        frames: the frame index each image stands on, strictly increasing.
    """

    kind: str
    images: np.ndarray
    frames: tuple[int, ...]

    def describe(self, scale: float) -> dict[str, Any]:
        """Plain values for the result metadata: kind, frames, scale and a content hash of the images."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()
        return {"kind": self.kind, "frames": list(self.frames), "scale": scale, "sha256": digest}


def window_condition(condition: SparseCondition | None, frames: list[int]) -> SparseCondition | None:
    """The part of `condition` inside a context window, on the window's own frame positions; None when none of
    its frames falls inside."""
    if condition is None or (frames == list(range(len(frames))) and condition.frames[-1] < len(frames)):
        return condition
    inside = sorted((frames.index(frame), index) for index, frame in enumerate(condition.frames) if frame in frames)
    if not inside:
        return None
    positions, chosen = zip(*inside, strict=True)
    return SparseCondition(condition.kind, condition.images[list(chosen)], tuple(positions))


def check_condition(
    condition: SparseCondition,
    num_frames: int,
    height: int,
    width: int,
    model_kind: str | None,
    check_size: bool = True,
) -> None:
    """Raise `ParameterError` naming the field when `condition` cannot be used for this generation and model.
    `check_size=False` leaves out the images' size (for images that are still to be resized)."""
    if model_kind is None:
        raise ParameterError("condition", "needs a SparseCtrl model: load the preset with one (rgb or scribble)")
    if condition.kind not in CONDITION_KINDS:
        raise ParameterError("condition_type", f"must be one of {', '.join(CONDITION_KINDS)}, got {condition.kind!r}")
    if condition.kind != model_kind:
        raise ParameterError(
            "condition_type", f"is {condition.kind!r} but the loaded SparseCtrl model is {model_kind!r}"
        )
    frames = condition.frames
    if not frames or any(not isinstance(f, int) or isinstance(f, bool) for f in frames):
        raise ParameterError("condition_frames", f"must be one or more frame indices, got {list(frames)!r}")
    if list(frames) != sorted(set(frames)):
        raise ParameterError("condition_frames", f"must be strictly increasing, got {list(frames)!r}")
    if frames[0] < 0 or frames[-1] >= num_frames:
        raise ParameterError(
            "condition_frames", f"must lie in [0, {num_frames - 1}] for {num_frames} frames, got {list(frames)!r}"
        )
    images = condition.images
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ParameterError("condition", "images must be uint8 (count, height, width, 3)")
    if images.shape[0] != len(frames):
        raise ParameterError("condition", f"has {images.shape[0]} images for {len(frames)} condition frames")
    if check_size and images.shape[1:3] != (height, width):
        raise ParameterError("condition", f"images are {images.shape[2]}x{images.shape[1]}, the video {width}x{height}")


@torch.no_grad()
def condition_tensors(
    kind: str,
    images: np.ndarray,
    frames: tuple[int, ...],
    num_frames: int,
    vae: AutoencoderKL,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, mask): the images on their frames and zeros elsewhere, (1, C, F, h, w) and (1, 1, F, h, w).

    RGB: C = 4 VAE latents (sampled from the posterior with `generator`, which RGB needs); scribble: C = 3 pixels in
    [0, 1].
    """
    if kind == "rgb":
        if generator is None:
            raise ValueError("an RGB condition is VAE-encoded and needs a generator for the posterior sample")
        values = encode_reference(vae, images, "sample", generator)[0].permute(1, 0, 2, 3)  # (K, 4, h, w)
    else:
        values = (frames_to_tensor(images, vae.device, torch.float32) + 1) / 2  # (K, 3, H, W) in [0, 1]
    return place_on_frames(values.to(dtype), frames, num_frames)


def scribble_strokes(images: np.ndarray, invert: str) -> np.ndarray:
    """Scribbles as the scribble model learned them: light strokes on a dark page (the official condition images).

    "auto" inverts each image that is mostly light (a sketch drawn dark on white, such as Blender's line art);
    "never" and "always" decide for every image.
    """
    if invert == "never":
        return images
    light = images.reshape(len(images), -1).mean(axis=1) > 127.5
    flip = np.ones_like(light) if invert == "always" else light
    return np.where(flip[:, None, None, None], 255 - images, images).astype(np.uint8)


def reference_sketch(frames: np.ndarray) -> np.ndarray:
    """A scribble of video frames: their strongest edges (Sobel on the grey image) as light strokes on black.

    For `sparsectrl_extraction="sketch"`, the fix of the official code's bug B4 (the scribble network fed a photo)."""
    strength = sobel_magnitude(frames.astype(np.float32).mean(axis=3))
    flat = strength.reshape(len(frames), -1)
    # The strongest edges, but never faint ones where a frame has few: at least a tenth of its strongest edge.
    threshold = np.maximum(np.quantile(flat, SKETCH_EDGE_QUANTILE, axis=1), 0.1 * flat.max(axis=1))
    strokes = (strength >= np.maximum(threshold, 1e-6)[:, None, None]).astype(np.uint8)
    radius = SKETCH_STROKE_RADIUS
    wide = np.pad(strokes, ((0, 0), (radius, radius), (radius, radius)))
    height, width = strokes.shape[1:]
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            strokes = np.maximum(strokes, wide[:, dy : dy + height, dx : dx + width])
    return np.repeat(strokes[..., None] * 255, 3, axis=3).astype(np.uint8)


def place_on_frames(
    values: torch.Tensor, frames: tuple[int, ...], num_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, mask) with `values` (K, C, h, w) on `frames` of a (1, C, F, h, w) tensor of zeros, and the mask of
    those frames (1, 1, F, h, w)."""
    shape = (1, values.shape[1], num_frames, *values.shape[2:])
    cond = torch.zeros(shape, dtype=values.dtype, device=values.device)
    mask = torch.zeros((1, 1, *shape[2:]), dtype=values.dtype, device=values.device)
    index = torch.tensor(frames, device=values.device)
    cond[0, :, index] = values.permute(1, 0, 2, 3)
    mask[0, :, index] = 1
    return cond, mask


class SparseCtrl:
    """The SparseCtrl network with one generation's condition: residuals for the UNet, per step."""

    def __init__(self, controlnet: SparseControlNetModel, cond: torch.Tensor, mask: torch.Tensor, scale: float) -> None:
        self.controlnet, self.cond, self.mask, self.scale = controlnet, cond, mask, scale

    def window(self, frames: list[int]) -> "SparseCtrl":
        """The same network and condition for a context window of the clip (its frames, in the window's order)."""
        if frames == list(range(self.cond.shape[2])):
            return self
        return SparseCtrl(self.controlnet, self.cond[:, :, frames], self.mask[:, :, frames], self.scale)

    @torch.no_grad()
    def residuals(self, sample: torch.Tensor, timestep: int, encoder_hidden_states: torch.Tensor) -> list[torch.Tensor]:
        """The 12 down residuals and the mid residual for a batch of B samples (the condition broadcasts)."""
        down, mid = self.controlnet(
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            controlnet_cond=self.cond,
            conditioning_mask=self.mask,
            conditioning_scale=self.scale,
            return_dict=False,
        )
        return [*down, mid]


def unet_residuals(residuals: list[torch.Tensor] | None, part: int = 0, parts: int = 1) -> dict[str, Any]:
    """The UNet keyword arguments for stream `part` of a batch of `parts` streams (rows are stream-major)."""
    if residuals is None:
        return {}
    chosen = [residual.chunk(parts)[part] for residual in residuals]
    return {"down_block_additional_residuals": tuple(chosen[:-1]), "mid_block_additional_residual": chosen[-1]}
