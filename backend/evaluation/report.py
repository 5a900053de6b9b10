"""The files `motionclone evaluate` writes: metrics.json and tracks.png. No bpy."""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .tracks import Tracks

MIN_TILE = 256  # the shorter side of every frame tile in tracks.png, in pixels (small frames are upscaled)
MAX_TILE = 384  # larger frames are scaled down to this shorter side
MAX_DRAWN_TRACKS = 80  # spread over the frame (one per cell of a coarse lattice), so the picture stays readable
COLUMNS = 4
HEADER = 44
LABEL_PAD = 4
STATIC_COLOUR = (200, 200, 200)


def metrics_json(metrics: dict[str, Any]) -> str:
    """Metrics as indented JSON. allow_nan=False: NaN or Infinity would make the file unreadable to strict JSON
    parsers; better to fail before any file is written."""
    return json.dumps(metrics, indent=2, default=_plain, allow_nan=False) + "\n"


def direction_colour(displacement: np.ndarray, min_length: float) -> tuple[int, int, int]:
    """An RGB colour for a direction in image coordinates: hue follows the angle (right = red, down = yellow-green,
    left = cyan, up = violet); displacements shorter than `min_length` are light grey."""
    dx, dy = float(displacement[0]), float(displacement[1])
    if math.hypot(dx, dy) < min_length:
        return STATIC_COLOUR
    hue = (math.atan2(dy, dx) / (2 * math.pi)) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return round(red * 255), round(green * 255), round(blue * 255)


def render_tracks_image(
    reference_frames: np.ndarray,
    result_frames: np.ndarray,
    reference_tracks: Tracks,
    result_tracks: Tracks,
    reference_used: np.ndarray,
    result_used: np.ndarray,
    caption: str = "",
    min_length: float = 1.0,
) -> Image.Image:
    """Reference frames (top row) and result frames (bottom row) with the tracks used drawn as polylines.

    Each tile shows the frame and, for every drawn track, its path from frame 0 up to that frame plus a dot at its
    current position. Each segment is coloured by its own direction (still steps grey), so matching motion shows
    matching colours in the two rows.

    Args:
        reference_frames: (T, H, W, 3) uint8 reference frames at the tracking size.
        result_frames: (T', H, W, 3) uint8 result frames.
        reference_tracks: tracks of the reference.
        result_tracks: tracks of the result.
        reference_used: indices of the reference tracks to draw.
        result_used: indices of the result tracks to draw.
        caption: a line of text for the header.
        min_length: segments shorter than this (pixels) are drawn grey.

    Returns:
        The picture, for the caller to write (evaluate writes it together with metrics.json).
    """
    num_frames = min(len(reference_frames), len(result_frames), reference_tracks.num_frames, result_tracks.num_frames)
    picks = np.unique(np.linspace(0, num_frames - 1, COLUMNS).round().astype(int))
    height, width = result_frames.shape[1:3]
    short = min(height, width)
    scale = MIN_TILE / short if short < MIN_TILE else min(1.0, MAX_TILE / short)
    tile_w, tile_h = round(width * scale), round(height * scale)
    font = _font(14)

    canvas = Image.new("RGB", (tile_w * len(picks), HEADER + 2 * tile_h), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), caption, fill=(240, 240, 240), font=font)
    draw.text(
        (8, 24),
        "top: reference, bottom: result; colour = direction of motion (wheel at right)",
        fill=(190, 190, 190),
        font=font,
    )
    _draw_wheel(draw, (canvas.width - HEADER // 2 - 4, HEADER // 2), HEADER // 2 - 4)

    rows = (
        ("reference", reference_frames, reference_tracks, reference_used),
        ("result", result_frames, result_tracks, result_used),
    )
    for row, (label, frames, tracks, used) in enumerate(rows):
        drawn = _spread(tracks.positions[:, 0], np.asarray(used, dtype=int), MAX_DRAWN_TRACKS)
        positions = tracks.positions[drawn, :num_frames].astype(np.float64)
        valid = tracks.valid[drawn, :num_frames]
        steps = np.diff(positions, axis=1)
        top = HEADER + row * tile_h
        for column, frame_index in enumerate(picks):
            left = column * tile_w
            tile = Image.fromarray(frames[frame_index]).resize((tile_w, tile_h), Image.Resampling.BILINEAR)
            canvas.paste(tile, (left, top))
            upto = int(frame_index)
            points = (positions + 0.5) * scale + (left, top)  # pixel centres of the upscaled tile
            for track in range(len(drawn)):
                if not valid[track, : upto + 1].all():
                    continue
                for k in range(upto):
                    colour = direction_colour(steps[track, k], min_length)
                    draw.line([tuple(points[track, k]), tuple(points[track, k + 1])], fill=colour, width=2)
                colour = direction_colour(steps[track, upto - 1], min_length) if upto else (255, 255, 255)
                x, y = points[track, upto]
                draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour, outline=(0, 0, 0))
            _label(draw, (left + LABEL_PAD, top + LABEL_PAD), f"{label} · frame {int(frame_index)}", font)
        draw.line([(0, top), (canvas.width, top)], fill=(24, 24, 24), width=2)
    for column in range(1, len(picks)):
        draw.line([(column * tile_w, HEADER), (column * tile_w, canvas.height)], fill=(24, 24, 24), width=2)

    return canvas


def _spread(starts: np.ndarray, indices: np.ndarray, most: int) -> np.ndarray:
    """At most `most` of the indices, spread over the frame: one per cell of the finest square lattice (on the
    starting positions) that leaves no more than `most` occupied cells."""
    if len(indices) <= most:
        return indices
    cell = 1.0
    while True:
        _, first = np.unique(np.floor(starts[indices] / cell).astype(np.int64), axis=0, return_index=True)
        if len(first) <= most:
            return indices[np.sort(first)]
        cell *= 1.25


def _draw_wheel(draw: ImageDraw.ImageDraw, centre: tuple[int, int], radius: int) -> None:
    """A colour wheel: the colour of each direction, drawn where that direction points."""
    cx, cy = centre
    for degrees in range(0, 360, 10):
        radians = math.radians(degrees + 5)
        colour = direction_colour(np.array([math.cos(radians), math.sin(radians)]), 0.0)
        # PIL's angles run clockwise from 3 o'clock, as atan2(dy, dx) does with y pointing down.
        draw.pieslice((cx - radius, cy - radius, cx + radius, cy + radius), degrees, degrees + 10, fill=colour)


def _label(draw: ImageDraw.ImageDraw, at: tuple[int, int], text: str, font: Any) -> None:
    box = draw.textbbox(at, text, font=font)
    draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
    draw.text(at, text, fill=(255, 255, 255), font=font)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _plain(value: Any) -> Any:
    """json.dumps fallback for numpy scalars and arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
