"""Image gradients shared by the engine's frame analyses (SparseCtrl sketches, camera-move detection). No bpy."""

from __future__ import annotations

import numpy as np

SOBEL_WEIGHT = 8  # the sum of a 3x3 Sobel kernel's absolute weights: dividing by it gives grey levels per pixel


def sobel_magnitude(grey: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of grey images (..., H, W), their edges padded by repetition.

    Unnormalised, like the Sobel operator itself: divide by SOBEL_WEIGHT for grey levels per pixel.
    """
    pad = [(0, 0)] * (grey.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(grey.astype(np.float32, copy=False), pad, mode="edge")
    gx = (padded[..., :-2, 2:] + 2 * padded[..., 1:-1, 2:] + padded[..., 2:, 2:]) - (
        padded[..., :-2, :-2] + 2 * padded[..., 1:-1, :-2] + padded[..., 2:, :-2]
    )
    gy = (padded[..., 2:, :-2] + 2 * padded[..., 2:, 1:-1] + padded[..., 2:, 2:]) - (
        padded[..., :-2, :-2] + 2 * padded[..., :-2, 1:-1] + padded[..., :-2, 2:]
    )
    return np.hypot(gx, gy)
