"""Point tracks for motion fidelity: OpenCV pyramidal Lucas-Kanade with a forward-backward check. No bpy.

Points start on a regular grid on frame 0 and are chained frame to frame. At every step each live point is tracked
forward (t → t+1) and back again (t+1 → t); a point whose round trip misses its start by more than the threshold,
that OpenCV loses, or that leaves the frame is marked invalid from then on (a track never comes back to life).

Optionally, `track_points_cotracker` runs Meta's CoTracker from a local checkpoint, but only when its code (the
`cotracker` package, not on PyPI) is installed: nothing is fetched from a hub.

Positions are (x, y) in pixels of the frames given, so both videos must be brought to one size before tracking.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ModelNotFoundError, ParameterError

TRACKER_NAME = "opencv-lk-pyramidal"
COTRACKER_NAME = "cotracker"
DEFAULT_GRID = 32  # points per side: 32 × 32 = 1,024 points (DMT's released code uses 55 × 55 with CoTracker)
MAX_GRID = 128  # 16,384 points: a finer grid tracks for minutes and adds no motion a coarser one misses
FB_REFERENCE_SIDE = 256  # the forward-backward threshold is given in pixels per 256 px of the longer frame side


@dataclass(frozen=True)
class TrackerSettings:
    """Settings of the Lucas-Kanade tracker.

    Attributes:
        window: side of the square search window in pixels, at every pyramid level.
        levels: pyramid levels above the full-resolution image (0 is single-scale).
        fb_threshold: the largest forward-backward round-trip error a point may have, in pixels per 256 pixels of
            the frame's longer side (1.0 → 0.5 px at 128 px, 2 px at 512 px).
        fb_min_px: floor of the scaled threshold, so that small frames are not held to an impossible precision.
        max_iterations: Lucas-Kanade iterations per level.
        epsilon: Lucas-Kanade stops earlier once an update moves less than this (pixels).
        min_eigen_threshold: OpenCV drops a point whose window has too little texture (its default, 1e-4).
    """

    window: int = 15
    levels: int = 3
    fb_threshold: float = 1.0
    fb_min_px: float = 0.5
    max_iterations: int = 30
    epsilon: float = 0.01
    min_eigen_threshold: float = 1e-4

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 3 or self.window % 2 == 0:
            raise ParameterError("window", f"must be an odd integer of at least 3 pixels, got {self.window!r}")
        if not isinstance(self.levels, int) or not 0 <= self.levels <= 8:
            raise ParameterError("levels", f"must be an integer from 0 to 8, got {self.levels!r}")
        for name in ("fb_threshold", "fb_min_px", "epsilon", "min_eigen_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
                raise ParameterError(name, f"must be a positive number, got {value!r}")
        if not isinstance(self.max_iterations, int) or self.max_iterations < 1:
            raise ParameterError("max_iterations", f"must be a positive integer, got {self.max_iterations!r}")

    def fb_threshold_px(self, height: int, width: int) -> float:
        """The round-trip threshold in pixels for frames of this size."""
        return max(self.fb_min_px, self.fb_threshold * max(height, width) / FB_REFERENCE_SIDE)

    def describe(self, height: int, width: int) -> dict[str, Any]:
        """Plain values for metrics.json."""
        return {
            "name": TRACKER_NAME,
            "implementation": f"cv2.calcOpticalFlowPyrLK (OpenCV {cv2.__version__})",
            "window_px": self.window,
            "pyramid_levels": self.levels,
            "forward_backward_threshold_px": round(self.fb_threshold_px(height, width), 4),
            "forward_backward_threshold_per_256px": self.fb_threshold,
            "max_iterations": self.max_iterations,
            "epsilon_px": self.epsilon,
            "min_eigen_threshold": self.min_eigen_threshold,
            "chaining": "frame to frame from the grid on frame 0; a failed point stays invalid",
        }


@dataclass
class Tracks:
    """Point tracks through a clip.

    Attributes:
        positions: (N, T, 2) float32 (x, y) pixel positions; after a track fails its last good position is repeated.
        valid: (N, T) bool; once False, False for the rest of the track.
        grid_index: (N,) int, the index of each track's starting point in the grid (row-major).
    """

    positions: np.ndarray
    valid: np.ndarray
    grid_index: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[1])

    def fully_valid(self) -> np.ndarray:
        """(N,) bool: tracks that are valid in every frame."""
        return self.valid.all(axis=1)

    def truncated(self, num_frames: int) -> Tracks:
        """The first `num_frames` frames of every track."""
        return Tracks(self.positions[:, :num_frames], self.valid[:, :num_frames], self.grid_index)


def grid_points(
    height: int, width: int, points_per_side: int = DEFAULT_GRID, box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """A regular grid of points: the centres of `points_per_side` × `points_per_side` equal cells.

    Args:
        height: frame height in pixels.
        width: frame width in pixels.
        points_per_side: points along each axis.
        box: (x0, y0, x1, y1) in pixels to restrict the grid to; None covers the whole frame.

    Returns:
        (points_per_side², 2) float32 (x, y), row-major (all points of the top row first).

    Raises:
        ParameterError: a grid of fewer than 2 points per side or more than MAX_GRID or the frame's shorter side
            in pixels, or an empty box.
    """
    if isinstance(points_per_side, bool) or not isinstance(points_per_side, int) or points_per_side < 2:
        raise ParameterError("grid", f"must be an integer of at least 2 points per side, got {points_per_side!r}")
    shorter_side = min(height, width)
    if points_per_side > min(MAX_GRID, shorter_side):
        limit = "" if shorter_side >= MAX_GRID else " (the frame's shorter side, in pixels)"
        limit = f"{min(MAX_GRID, shorter_side)} points per side{limit}"
        raise ParameterError("grid", f"must be at most {limit}, got {points_per_side}")
    x0, y0, x1, y1 = clipped_box(box, height, width)
    if not (x1 > x0 and y1 > y0):
        raise ParameterError("box", f"must be (x0, y0, x1, y1) with x0 < x1, y0 < y1 inside {width}x{height}: {box}")
    xs = x0 + (np.arange(points_per_side) + 0.5) * (x1 - x0) / points_per_side - 0.5
    ys = y0 + (np.arange(points_per_side) + 0.5) * (y1 - y0) / points_per_side - 0.5
    grid_x, grid_y = np.meshgrid(xs, ys)  # pixel centres: pixel i spans [i - 0.5, i + 0.5]
    # A small box holds cells narrower than a pixel, whose centres at its edge can fall just outside the frame.
    grid_x, grid_y = grid_x.clip(0, width - 1), grid_y.clip(0, height - 1)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1).astype(np.float32)


def clipped_box(
    box: tuple[float, float, float, float] | None, height: int, width: int
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) cut to the frame; the whole frame for None."""
    x0, y0, x1, y1 = (0.0, 0.0, float(width), float(height)) if box is None else (float(v) for v in box)
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))


def to_gray(frames: np.ndarray) -> list[np.ndarray]:
    """(T, H, W, 3) uint8 RGB → list of (H, W) uint8 grayscale frames."""
    return [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in frames]


def track_points(frames: np.ndarray, points: np.ndarray, settings: TrackerSettings | None = None) -> Tracks:
    """Track points from frame 0 through a clip with pyramidal Lucas-Kanade and a forward-backward check.

    Args:
        frames: (T, H, W, 3) uint8 RGB frames, T ≥ 2.
        points: (N, 2) (x, y) starting positions on frame 0.
        settings: tracker settings (defaults: `TrackerSettings()`).

    Returns:
        Tracks with (N, T, 2) positions and (N, T) validity.

    Raises:
        ParameterError: frames or points of the wrong shape.
    """
    settings = settings or TrackerSettings()
    _check_frames(frames)
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ParameterError("points", f"must be shaped (N, 2) as (x, y), got {points.shape}")
    num_points, (num_frames, height, width) = points.shape[0], frames.shape[:3]
    gray = to_gray(frames)
    threshold = settings.fb_threshold_px(height, width)
    lk = {
        "winSize": (settings.window, settings.window),
        "maxLevel": settings.levels,
        "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, settings.max_iterations, settings.epsilon),
        "minEigThreshold": settings.min_eigen_threshold,
    }

    positions = np.empty((num_points, num_frames, 2), dtype=np.float32)
    valid = np.zeros((num_points, num_frames), dtype=bool)
    positions[:, 0] = points
    valid[:, 0] = _inside(points, height, width)
    for t in range(num_frames - 1):
        positions[:, t + 1] = positions[:, t]
        alive = np.flatnonzero(valid[:, t])
        if alive.size == 0:
            continue
        start = positions[alive, t].reshape(-1, 1, 2)
        forward, status_forward, _ = cv2.calcOpticalFlowPyrLK(gray[t], gray[t + 1], start, None, **lk)
        backward, status_backward, _ = cv2.calcOpticalFlowPyrLK(gray[t + 1], gray[t], forward, None, **lk)
        forward, backward = forward.reshape(-1, 2), backward.reshape(-1, 2)
        round_trip = np.linalg.norm(backward - start.reshape(-1, 2), axis=1)
        ok = (
            (status_forward.ravel() == 1)
            & (status_backward.ravel() == 1)
            & np.isfinite(forward).all(axis=1)
            & (round_trip <= threshold)
            & _inside(forward, height, width)
        )
        positions[alive[ok], t + 1] = forward[ok]
        valid[alive[ok], t + 1] = True
    return Tracks(positions, valid, np.arange(num_points))


def track_points_cotracker(
    frames: np.ndarray, points: np.ndarray, checkpoint: str | os.PathLike[str], device: str = "cpu"
) -> Tracks:
    """Track points with CoTracker from a local checkpoint, through the installed `cotracker` package only.

    CoTracker is not on PyPI and its hub loader downloads code; this function never does. Its visibility flags are
    not used: CoTracker keeps tracking through occlusion, so every in-frame position counts as valid.

    Raises:
        ModelNotFoundError: the `cotracker` package is not installed, or the checkpoint file is missing.
    """
    _check_frames(frames)
    try:
        predictor_module = importlib.import_module("cotracker.predictor")
    except ImportError as error:
        raise ModelNotFoundError(
            "--cotracker needs CoTracker's code installed (the `cotracker` package from "
            "github.com/facebookresearch/co-tracker; it is not on PyPI and its weights are CC-BY-NC): "
            f"it is not importable here ({error}). Install it, or leave out --cotracker to track with "
            f"{TRACKER_NAME}"
        ) from error
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"CoTracker checkpoint {path} does not exist: pass the local .pth file")
    import torch

    try:
        model = predictor_module.CoTrackerPredictor(checkpoint=str(path)).to(device).eval()
    except Exception as error:  # a checkpoint of another version, a corrupt file, ...
        raise ModelNotFoundError(f"could not load CoTracker from {path}: {error}") from error
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float().to(device)
    start = torch.from_numpy(np.asarray(points, dtype=np.float32))
    queries = torch.cat([torch.zeros(len(start), 1), start], dim=1)[None].to(device)  # (1, N, 3): frame, x, y
    with torch.no_grad():
        predicted, _visibility = model(video, queries=queries)
    positions = predicted[0].permute(1, 0, 2).float().cpu().numpy()  # (T, N, 2) → (N, T, 2)
    height, width = frames.shape[1:3]
    inside = np.stack([_inside(positions[:, t], height, width) for t in range(positions.shape[1])], axis=1)
    valid = np.logical_and.accumulate(inside & np.isfinite(positions).all(axis=2), axis=1)
    return Tracks(positions.astype(np.float32), valid, np.arange(len(start)))


def describe_cotracker(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """Plain values for metrics.json when CoTracker made the tracks."""
    return {
        "name": COTRACKER_NAME,
        "checkpoint": str(checkpoint),
        "visibility": "not used; a track is valid while it stays inside the frame",
    }


def _inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    x, y = points[..., 0], points[..., 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        shape = getattr(frames, "shape", None)
        raise ParameterError("frames", f"must be a (T, H, W, 3) uint8 array, got {shape}")
    if frames.shape[0] < 2:
        raise ParameterError("frames", f"needs at least 2 frames to track motion, got {frames.shape[0]}")
