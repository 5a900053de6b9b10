"""Subject placement: the noise from which the prompt's subject forms travels along the reference subject's path.
No bpy.

With noise shared between frames (`noise_frame_correlation`), a model draws its subject where one patch of the shared
noise lies, often far from the reference's subject, and guidance then moves other parts of the picture. Moving that
patch moves the subject (FreeTraj, Qiu et al. 2024, moves noise patches along a trajectory for the same reason):

1. where the subject forms: a short unguided preview from the same noise, and the text cross-attention of the
   subject's word at `up_blocks.1` (the map the paper's location-aware semantic guidance locates objects with): the
   centroid of its strongest cells, and their extent;
2. where the reference's subject is in every frame: the largest region that differs from the clip's per-pixel
   temporal median (the still set), its bounding-box centre;
3. every frame's shared noise: the subject's patch is cut out (its place refilled with the noise of the place it
   goes to, so that no second subject forms there) and pasted at the reference subject's position in that frame.
   Each position still takes one value of the shared draw, so every frame's noise stays standard normal.

A camera move has no one moving subject: the whole set moves, and the largest moving region jumps from one part of it
to another. `measure_set_motion` tells such a clip apart; the pipeline then lets all of the shared noise travel with
the reference's optical flow (`noise_warp.py`) instead, so that the subject stays in the world while the picture pans.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import JobCancelled
from ..evaluation.adherence import find_subject
from .edges import SOBEL_WEIGHT, sobel_magnitude
from .noise_warp import FLOW_SETTINGS, changed_pixels

TOP_SHARE = 0.1  # the subject's place: the centroid of the strongest 10 % of the word's cross-attention cells
EXTENT_LEVEL = 0.5  # the subject's extent: cells whose normalised attention is at least half the peak
MIN_PATCH, MAX_PATCH_SHARE = 4, 0.5  # patch side bounds: 4 cells, half the latent side
# Words that name no thing: their cross-attention can be peaked too (an article often is), so they are never picked.
FUNCTION_WORDS_TEXT = (
    "a an the this that these those in on at of to from into onto over under above below behind near by with"
    " without and or as while is are was be its his her their it"
)
FUNCTION_WORDS = frozenset(FUNCTION_WORDS_TEXT.split())
# A camera move: on average over the frame pairs, at least half of the reference's textured pixels move, spread over
# at least 60 % of the frame's width or height. On the benchmark's references: share 0.80 and 0.91, spread 0.89 and
# 0.95 for the two camera moves; share 0.12-0.27, spread 0.26-0.40 for the six moving subjects (and a square over a
# flat gradient, whose only texture moves with it: share 0.72, spread 0.27).
CAMERA_MOVE_SHARE = 0.5
CAMERA_MOVE_SPREAD = 0.6
TEXTURE_GRADIENT = 8.0  # grey levels per pixel: optical flow is seen only where the picture has texture
MOVING_FLOW = 0.25  # pixels per frame: slower is still


@dataclass
class SubjectPlacement:
    """Where the prompt's subject forms and where its noise goes, in latent cells.

    Attributes:
        word: the prompt's word whose cross-attention located the subject.
        source: (row, column) centre of the subject in the preview.
        side: side of the square noise patch that is moved.
        path: (row, column) centre of the reference's subject in every frame.
    """

    word: str
    source: tuple[int, int]
    side: int
    path: list[tuple[int, int]]

    def apply(self, shared: torch.Tensor) -> torch.Tensor:
        """The shared noise (B, C, 1, h, w) with the subject's patch moved along the path: (B, C, F, h, w)."""
        base = shared[:, :, 0].clone()
        patch = _take(base, self.source, self.side).clone()
        _put(base, self.source, _take(shared[:, :, 0], self.path[0], self.side))
        frames = []
        for centre in self.path:
            frame = base.clone()
            _put(frame, centre, patch)
            frames.append(frame)
        return torch.stack(frames, dim=2)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record for the result's metadata."""
        return {"word": self.word, "source": list(self.source), "side": self.side, "path": [list(c) for c in self.path]}


def reference_subject_path(frames: np.ndarray, height: int, width: int) -> list[tuple[int, int]] | None:
    """Centre of the reference's moving subject in every frame, in cells of a (height, width) latent grid.

    The subject is the moving region (`find_subject`, the region `motionclone evaluate --subject-region moving` reads
    colour from): a reference is an animation of a still set, so what moves is the subject. A frame where none
    is found takes the previous frame's centre (frames before the first find take the first found centre). Returns
    None when no frame has a moving subject.
    """
    regions = find_subject(frames)
    scale_y, scale_x = height / frames.shape[1], width / frames.shape[2]
    centres = [
        None
        if region is None
        else _cell((region.bbox[1] + region.bbox[3] / 2) * scale_y, (region.bbox[0] + region.bbox[2] / 2) * scale_x)
        for region in regions
    ]
    known = [centre for centre in centres if centre is not None]
    if not known:
        return None
    path, last = [], known[0]
    for centre in centres:
        last = centre if centre is not None else last
        path.append(last)
    return path


@dataclass
class SetMotion:
    """How much of a reference's set moves, to tell a camera move from one subject moving over a still set.

    Attributes:
        moving_share: mean share, over consecutive frame pairs, of the textured pixels that move: near 1 in a camera
            move, small where one subject moves over a textured still set (but near 1 over a flat one, whose only
            texture is the subject's own edges).
        spread: mean extent of the moving pixels across the frame (the larger of width and height shares, between
            their 2nd and 98th percentiles): near 1 in a camera move, the subject's size where one subject moves.
    """

    moving_share: float
    spread: float

    @property
    def is_camera_move(self) -> bool:
        """Most of the set's texture moves, all over the frame."""
        return self.moving_share >= CAMERA_MOVE_SHARE and self.spread >= CAMERA_MOVE_SPREAD


def measure_set_motion(frames: np.ndarray, should_stop: Callable[[], bool] = lambda: False) -> SetMotion:
    """Which of the reference's pixels move between consecutive frames, and how far across the frame they spread.

    A pixel moves when it changes visibly and its Farneback optical flow is at least MOVING_FLOW; textured pixels are
    those whose grey gradient is at least TEXTURE_GRADIENT (a flat floor or sky shows no motion either way).

    Args:
        frames: (F, H, W, 3) uint8 RGB reference frames.
        should_stop: polled between frames; True raises `JobCancelled`.
    """
    grey = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    height, width = frames.shape[1:3]
    shares, spreads = [], []
    for index in range(1, len(frames)):
        if should_stop():
            raise JobCancelled(f"cancelled while the reference's motion was measured (frame {index} of {len(frames)})")
        textured = sobel_magnitude(grey[index - 1]) / SOBEL_WEIGHT >= TEXTURE_GRADIENT
        flow = cv2.calcOpticalFlowFarneback(grey[index - 1], grey[index], None, **FLOW_SETTINGS)
        fast = np.hypot(flow[..., 0], flow[..., 1]) >= MOVING_FLOW
        moving = textured & fast & changed_pixels(frames[index], frames[index - 1])
        shares.append(moving.sum() / max(1, textured.sum()))
        rows, columns = np.nonzero(moving)
        if len(rows) == 0:
            spreads.append(0.0)
            continue
        across = np.ptp(np.percentile(columns, [2, 98])) / width
        down = np.ptp(np.percentile(rows, [2, 98])) / height
        spreads.append(float(max(across, down)))
    if not shares:
        return SetMotion(0.0, 0.0)
    return SetMotion(float(np.mean(shares)), float(np.mean(spreads)))


def locate_subject(token_map: torch.Tensor, height: int, width: int) -> tuple[tuple[int, int], int]:
    """Centre and patch side, in cells of the (height, width) latent grid, of one word's cross-attention.

    Args:
        token_map: (F, h', w') the word's attention per frame at a coarser grid (h' divides height).
    """
    mean = token_map.float().mean(dim=0)
    normalised = (mean - mean.min()) / (mean.max() - mean.min()).clamp_min(1e-12)
    threshold = max(torch.quantile(normalised.flatten(), 1 - TOP_SHARE).item(), EXTENT_LEVEL)
    rows, columns = torch.nonzero(normalised >= threshold, as_tuple=True)
    cell_y, cell_x = height / mean.shape[0], width / mean.shape[1]
    centre = _cell((rows.float().mean().item() + 0.5) * cell_y, (columns.float().mean().item() + 0.5) * cell_x)
    strong_rows, strong_columns = torch.nonzero(normalised >= EXTENT_LEVEL, as_tuple=True)
    extent = max(
        (strong_rows.max() - strong_rows.min() + 1).item() * cell_y,
        (strong_columns.max() - strong_columns.min() + 1).item() * cell_x,
    )
    side = int(min(max(round(extent), MIN_PATCH), MAX_PATCH_SHARE * min(height, width)))
    return centre, side


def candidate_words(prompt: str) -> list[str]:
    """The prompt's words that may name its subject, in order, without repeats or function words."""
    words = dict.fromkeys(re.findall(r"[\w'-]+", prompt.lower()))
    return [word for word in words if word not in FUNCTION_WORDS] or list(words)


def most_concentrated_token(token_maps: torch.Tensor, candidates: list[int]) -> int:
    """Of the `candidates` token positions, the one whose (F, N, tokens) attention puts most of its mass in its
    strongest TOP_SHARE of cells: the word that names one thing in one place."""
    best, best_share = candidates[0], -1.0
    for index in candidates:
        mass = token_maps[..., index].float().mean(dim=0).flatten()
        top = torch.topk(mass, max(1, int(TOP_SHARE * mass.numel()))).values.sum()
        share = (top / mass.sum().clamp_min(1e-12)).item()
        if share > best_share:
            best, best_share = index, share
    return best


def _cell(y: float, x: float) -> tuple[int, int]:
    """The grid cell (row, column) that holds the point (y, x), given in cell units from the grid's corner."""
    return math.floor(y), math.floor(x)


def _window(centre: tuple[int, int], side: int, height: int, width: int) -> tuple[slice, slice, slice, slice]:
    """Slices of the grid and of a side×side patch for a patch centred at `centre`, clipped to the grid."""
    top, left = centre[0] - side // 2, centre[1] - side // 2
    y0, x0, y1, x1 = max(0, top), max(0, left), min(height, top + side), min(width, left + side)
    return slice(y0, y1), slice(x0, x1), slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)


def _take(grid: torch.Tensor, centre: tuple[int, int], side: int) -> torch.Tensor:
    """The side×side patch of (B, C, h, w) `grid` centred at `centre`; where it leaves the grid it wraps around, so
    that every value is one of the grid's."""
    height, width = grid.shape[-2:]
    rows = (torch.arange(side) + centre[0] - side // 2) % height
    columns = (torch.arange(side) + centre[1] - side // 2) % width
    return grid[..., rows[:, None], columns[None, :]]


def _put(grid: torch.Tensor, centre: tuple[int, int], patch: torch.Tensor) -> None:
    """Write `patch` into `grid` centred at `centre`, the part inside the grid only."""
    rows, columns, patch_rows, patch_columns = _window(centre, patch.shape[-1], *grid.shape[-2:])
    grid[..., rows, columns] = patch[..., patch_rows, patch_columns]
