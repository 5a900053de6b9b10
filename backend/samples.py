"""Synthetic reference clips for demos and tests, made in code so nothing has to be downloaded. No bpy."""

import numpy as np


def make_moving_square_clip(num_frames: int = 24, height: int = 128, width: int = 128) -> np.ndarray:
    """A light square sliding left to right over a vertical gradient, (num_frames, height, width, 3) uint8."""
    rows = np.linspace(40, 120, height, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(rows * np.array([0.6, 0.8, 1.0], dtype=np.float32), (height, width, 3))
    side = max(4, min(height, width) // 4)
    top = (height - side) // 2
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for index in range(num_frames):
        frame = background.copy()
        left = round(index * (width - side) / max(1, num_frames - 1))
        frame[top : top + side, left : left + side] = (235, 200, 90)
        frames[index] = frame.astype(np.uint8)
    return frames
