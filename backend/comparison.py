"""A comparison sheet: reference frames in one row above result frames in another, as one RGB image. No bpy, no torch.

Layout, for ``count`` columns of ``tile``-wide tiles with ``gap`` pixels of white around and between them::

    +-----------------------------------------------+
    | gap                                           |
    |   [ref 1] gap [ref 2] gap ... [ref count]     |  height: tile * reference height / reference width
    | gap                                           |
    |   [res 1] gap [res 2] gap ... [res count]     |  height: tile * result height / result width
    | gap                                           |
    +-----------------------------------------------+

    width  = count * tile + (count + 1) * gap
    height = reference tile height + result tile height + 3 * gap

No text is drawn, so nothing depends on fonts: the top row is always the reference.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic_files import write_atomically
from .errors import ParameterError

BACKGROUND = 255  # white


def comparison_sheet(
    reference: np.ndarray, result: np.ndarray, columns: int = 8, tile: int = 128, gap: int = 4
) -> np.ndarray:
    """Lay out frames of a reference and of a result as two rows of one image.

    The same number of frames is picked evenly from each clip (first and last included), so with equal frame counts
    each result tile sits under the reference frame it was made from. Every tile is resized to ``tile`` pixels wide,
    keeping its clip's aspect ratio.

    Args:
        reference (`np.ndarray`): uint8 frames of shape (N, height, width, 3), N >= 1.
        result (`np.ndarray`): uint8 frames of shape (M, height, width, 3), M >= 1; the size may differ from the
            reference's.
        columns (`int`, defaults to 8): frames per row; fewer when a clip has fewer frames.
        tile (`int`, defaults to 128): width of each tile in pixels.
        gap (`int`, defaults to 4): white pixels around and between the tiles.

    Returns:
        `np.ndarray`: uint8 RGB image of shape (height, width, 3), sized as the module docstring says.

    Raises:
        ParameterError: a clip is not uint8 (N, H, W, 3) with N >= 1, or ``columns``, ``tile`` or ``gap`` is out of
            range.
    """
    check_frames(reference, "reference")
    check_frames(result, "result")
    check_int(columns, "columns", 1)
    check_int(tile, "tile", 1)
    check_int(gap, "gap", 0)
    count = min(columns, len(reference), len(result))
    rows = [resize_tiles(pick_evenly(clip, count), tile) for clip in (reference, result)]
    width = count * tile + (count + 1) * gap
    height = sum(row.shape[1] for row in rows) + 3 * gap
    sheet = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    top = gap
    for row in rows:
        tile_height = row.shape[1]
        for index, image in enumerate(row):
            left = gap + index * (tile + gap)
            sheet[top : top + tile_height, left : left + tile] = image
        top += tile_height + gap
    return sheet


def pick_evenly(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames spread evenly over a clip, the first and last included (one frame: the first)."""
    indices = np.round(np.linspace(0, len(frames) - 1, count)).astype(int)
    return frames[indices]


def resize_tiles(frames: np.ndarray, tile: int) -> np.ndarray:
    """Frames resized to ``tile`` pixels wide, keeping their aspect ratio (at least 1 pixel high)."""
    height, width = frames.shape[1:3]
    tile_height = max(1, round(tile * height / width))
    if (tile_height, tile) == (height, width):
        return frames
    resample = Image.Resampling.LANCZOS if tile < width else Image.Resampling.BICUBIC
    return np.stack([np.asarray(Image.fromarray(frame).resize((tile, tile_height), resample)) for frame in frames])


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a uint8 RGB image as a PNG, atomically (a temporary sibling renamed into place); parents are created.

    Args:
        path (`str | os.PathLike[str]`): the file to write.
        image (`np.ndarray`): uint8 array of shape (height, width, 3).

    Returns:
        `Path`: the written file.

    Raises:
        ParameterError: ``image`` is not a uint8 (height, width, 3) array.
        OSError: the file cannot be written.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ParameterError("image", f"must be a uint8 array of shape (height, width, 3), got {describe(image)}")
    return write_atomically(Path(path).expanduser(), lambda temporary: Image.fromarray(image).save(temporary, "PNG"))


def check_frames(frames: object, name: str) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ParameterError(name, f"must be a uint8 array of shape (frames, height, width, 3), got {describe(frames)}")
    if 0 in frames.shape:
        raise ParameterError(name, f"must hold at least one frame of at least 1 x 1 pixels, got shape {frames.shape}")


def check_int(value: object, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(name, f"must be an integer of at least {low}, got {value!r}")


def describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
