"""Synthetic clips for the evaluation tests, made in numpy: textured patterns moving by known amounts."""

import cv2
import numpy as np


def texture(height: int, width: int, seed: int, blur: float = 1.5) -> np.ndarray:
    """Smooth random RGB texture (H, W, 3) uint8: every window holds gradients in both directions."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur).astype(np.float32)
    stretched = (smooth - smooth.mean()) * (100.0 / max(smooth.std(), 1e-6)) + 128.0  # restore the contrast
    return np.clip(stretched, 0, 255).astype(np.uint8)


def panning_clip(num_frames: int, size: int, velocity: tuple[float, float], seed: int = 0) -> np.ndarray:
    """A whole textured picture translated by `velocity` (dx, dy) pixels per frame (sub-pixel, bilinear)."""
    source = texture(2 * size, 2 * size, seed)
    frames = []
    for t in range(num_frames):
        # With WARP_INVERSE_MAP, dst(p) = src(p + offset): offset = size/2 - velocity·t moves the content by +velocity.
        shift = np.float32([[1, 0, size / 2 - velocity[0] * t], [0, 1, size / 2 - velocity[1] * t]])
        frames.append(cv2.warpAffine(source, shift, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    return np.stack(frames)


def moving_square_clip(
    num_frames: int = 16,
    size: int = 96,
    side: int = 32,
    start: tuple[int, int] = (8, 20),
    velocity: tuple[int, int] = (3, 1),
    seed: int = 1,
) -> np.ndarray:
    """A textured square moving by whole pixels over a different, still textured background."""
    return moving_patch_clip(texture(size, size, seed), texture(side, side, seed + 100), num_frames, start, velocity)


def square_on_plain_clip(
    num_frames: int = 16,
    size: int = 96,
    side: int = 32,
    start: tuple[int, int] = (8, 20),
    velocity: tuple[int, int] = (3, 1),
    seed: int = 3,
) -> np.ndarray:
    """A textured square moving by whole pixels over a smooth vertical gradient (a plain sky, as the blocks model
    draws): only the square carries texture, so every track Lucas-Kanade keeps moves with it in every step."""
    rows = np.linspace(40, 160, size, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(rows * np.array([0.6, 0.8, 1.0], dtype=np.float32), (size, size, 3)).astype(np.uint8)
    return moving_patch_clip(background, texture(side, side, seed), num_frames, start, velocity)


def moving_patch_clip(
    background: np.ndarray, patch: np.ndarray, num_frames: int, start: tuple[int, int], velocity: tuple[int, int]
) -> np.ndarray:
    """`patch` pasted over `background` at `start`, moving by `velocity` whole pixels a frame."""
    side = patch.shape[0]
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        x, y = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        frames[t, y : y + side, x : x + side] = patch
    return frames


def subject_clip(
    shape: str,
    colour: tuple[int, int, int],
    num_frames: int = 16,
    size: int = 128,
    box: tuple[int, int] = (24, 24),
    velocity: tuple[int, int] = (5, 3),
    seed: int = 2,
) -> np.ndarray:
    """A flat-coloured disc ("disc") or rectangle ("rect") of `box` (width, height) moving over a dim green texture.

    It moves fast enough that it covers any pixel in well under half the frames, so the temporal median is the
    background.
    """
    background = (texture(size, size, seed).astype(np.float32) * 0.25 + np.array([40, 90, 40])).astype(np.uint8)
    width, height = box
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        x, y = 4 + velocity[0] * t, 16 + velocity[1] * t
        if shape == "disc":
            cv2.ellipse(frame, (x + width // 2, y + height // 2), (width // 2, height // 2), 0, 0, 360, colour, -1)
        else:
            frame[y : y + height, x : x + width] = colour
        frames[t] = frame
    return frames
