"""Initial noise that travels with the reference's motion: the shared part of frame-correlated noise, warped along
the reference's optical flow ("How I Warped Your Noise", Chang et al. 2024; "Go-with-the-Flow", Burgert et al.
2025, use the same idea with finer warps). No bpy.

A model that keeps the picture it sees in the shared noise (which `noise_frame_correlation` exploits) then draws its
content where the noise goes: still where the reference is still, moving where it moves, panning with a camera pan.
Every frame's noise stays standard normal: each position takes one value of the shared draw (nearest sample, never
a blend, which would shrink the variance); content entering the frame takes values from the opposite edge.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from ..errors import JobCancelled

# Farneback settings for small frames (64-512 px): a 3-level pyramid finds motions of a few pixels per frame.
FLOW_SETTINGS = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 9,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.1,
    "flags": 0,
}
CHANGE_THRESHOLD = 6  # 0-255: a pixel that changes by less between frames is still (render noise, compression)


def reference_source_maps(
    frames: np.ndarray, height: int, width: int, should_stop: Callable[[], bool] = lambda: False
) -> np.ndarray:
    """For every frame and latent position, where that point was in the first frame.

    Frame-to-frame optical flow (Farneback, on the reference's grey values) is chained: a point of frame t came from
    p + flow(p) in frame t-1, which came from wherever that point of frame t-1 came from. Chaining displacements in
    floating point keeps slow sub-pixel motions, which per-frame rounding would lose.

    Args:
        frames: (F, H, W, 3) uint8 RGB reference frames, at the generation's pixel size.
        height, width: the latent grid the map is wanted on.
        should_stop: polled between frames (optical flow of a long, large clip takes a while); True raises
            `JobCancelled`.

    Returns:
        (F, height, width, 2) float32 (x, y) positions in the first frame's latent grid; the first frame maps to
        itself. Positions may lie outside the grid where content enters the frame.
    """
    grey = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    scale_x, scale_y = width / frames.shape[2], height / frames.shape[1]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    displacement = np.zeros((height, width, 2), dtype=np.float32)  # source - position, in latent cells
    maps = [np.stack([xs, ys], axis=-1)]
    for index in range(1, len(frames)):
        if should_stop():
            raise JobCancelled(f"cancelled while the reference's motion was measured (frame {index} of {len(frames)})")
        # flow(p): frame `index` at p shows what frame `index - 1` showed at p + flow(p)
        flow = cv2.calcOpticalFlowFarneback(grey[index], grey[index - 1], None, **FLOW_SETTINGS)
        flow[~changed_pixels(frames[index], frames[index - 1])] = 0.0
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_AREA) * np.float32([scale_x, scale_y])
        previous_x, previous_y = xs + flow[..., 0], ys + flow[..., 1]
        carried = cv2.remap(displacement, previous_x, previous_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        displacement = flow + carried
        # Where the frame shows what the first frame showed at the same place (background a subject has left),
        # the content has not moved: it takes its own noise back instead of the noise the subject dragged along.
        unchanged = ~changed_pixels(frames[index], frames[0], grow=1)
        unchanged = cv2.resize(unchanged.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0.5
        displacement[unchanged] = 0.0
        maps.append(np.stack([xs + displacement[..., 0], ys + displacement[..., 1]], axis=-1))
    return np.stack(maps)


def changed_pixels(frame: np.ndarray, previous: np.ndarray, grow: int = 5) -> np.ndarray:
    """(H, W) bool: pixels that differ visibly between two frames, grown by a few pixels to cover moving edges.

    Flow is kept there only: elsewhere Farneback's smooth field drags still background along with a moving subject,
    which would copy the same noise values along its path and draw streaks."""
    difference = np.abs(frame.astype(np.int16) - previous.astype(np.int16)).max(axis=-1)
    changed = (difference > CHANGE_THRESHOLD).astype(np.uint8)
    return cv2.dilate(changed, np.ones((grow, grow), dtype=np.uint8)).astype(bool)


def warp_shared_noise(shared: torch.Tensor, source_maps: np.ndarray) -> torch.Tensor:
    """The shared noise (B, C, 1, h, w) carried to every frame: (B, C, F, h, w), by nearest sample of `source_maps`.

    Positions outside the grid wrap around, so every value is one of the shared draw's and the noise stays N(0, I).
    """
    height, width = shared.shape[-2:]
    columns = np.rint(source_maps[..., 0]).astype(np.int64) % width
    rows = np.rint(source_maps[..., 1]).astype(np.int64) % height
    flat_index = torch.from_numpy(rows * width + columns).to(shared.device)  # (F, h, w)
    flat = shared[:, :, 0].flatten(2)  # (B, C, h*w)
    frames = [flat[:, :, index.flatten()].reshape(*flat.shape[:2], height, width) for index in flat_index]
    return torch.stack(frames, dim=2)
