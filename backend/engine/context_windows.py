"""Context windows on the whole UNet: long clips denoised window by window, overlaps blended. No bpy.

A clip longer than `context_length` frames is cut into windows (`protocol.windows.context_windows`). Every UNet pass
of a step runs on one window's frames at a time, so memory is that of one window; the windows' predictions (the
noise estimates and the guidance gradient) are put back on their frames with weights that fall off towards the
window edges and sum to one on every frame. MotionClone's representation is extracted with the same windows and
each window's loss guides that window: a temporal-attention map only ever spans the frames of one window.

The initial noise is one tensor for the whole clip, so the windows that share a frame share its noise. With
`context_noise="freenoise"` the frames after the first window take the first window's noise, shuffled (FreeNoise),
so every window starts from alike noise and the windows agree more readily.
"""

from dataclasses import dataclass

import torch

from ...protocol.windows import context_windows, frame_weights
from .parameters import MotionCloneParams


@dataclass(frozen=True)
class ContextWindows:
    """The windows of one generation.

    Attributes:
        frames: the frame indices of each window, in the order they run.
        weights: each window's blending weight per frame, (1, 1, L, 1, 1) tensors that sum to one on every frame.
        num_frames: frames in the clip.
    """

    frames: list[list[int]]
    weights: list[torch.Tensor]
    num_frames: int

    @classmethod
    def from_params(cls, params: MotionCloneParams, device: torch.device, dtype: torch.dtype) -> "ContextWindows":
        frames = context_windows(
            params.num_frames, params.context_length, params.context_overlap, params.context_schedule
        )
        weights = [
            torch.tensor(values, device=device, dtype=dtype).view(1, 1, -1, 1, 1)
            for values in frame_weights(params.num_frames, frames, params.context_overlap)
        ]
        return cls(frames, weights, params.num_frames)

    @property
    def single(self) -> bool:
        """One window of all frames in order: the clip runs as a whole, exactly as without windows."""
        return len(self.frames) == 1 and self.frames[0] == list(range(self.num_frames))

    @property
    def length(self) -> int:
        return len(self.frames[0])

    def take(self, video: torch.Tensor, window: int) -> torch.Tensor:
        """The frames of `window` from a (B, C, F, h, w) tensor (the tensor itself for a single window)."""
        if self.single:
            return video
        return video[:, :, self.frames[window]]

    def blend(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """One (B, C, F, h, w) tensor from each window's (B, C, L, h, w) part, weighted per frame."""
        if self.single:
            return parts[0]
        first = parts[0]
        whole = first.new_zeros((*first.shape[:2], self.num_frames, *first.shape[3:]))
        for frames, weight, part in zip(self.frames, self.weights, parts, strict=True):
            whole[:, :, frames] += weight * part
        return whole


def freenoise(noise: torch.Tensor, length: int, overlap: int, generator: torch.Generator) -> torch.Tensor:
    """FreeNoise's noise for a long clip: frames after the first window repeat the first window's noise, each stride
    of them in a new random order, so that every window's frames are a shuffle of the same noise."""
    num_frames = noise.shape[2]
    if num_frames <= length:
        return noise
    stride = length - overlap
    parts = [noise[:, :, :length]]
    for start in range(length, num_frames, stride):
        order = torch.randperm(length, generator=generator, device=generator.device)[: min(stride, num_frames - start)]
        parts.append(noise[:, :, :length][:, :, order.to(noise.device)])
    return torch.cat(parts, dim=2)
