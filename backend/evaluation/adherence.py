"""Subject colour and subject class adherence: heuristics for the built-in `blocks` model only. No bpy.

The blocks model draws one subject (ball, cube, figure or car) in a named colour over a simple scene, from prompts
such as "a red ball bouncing on grass under a blue sky". Both scores look at the subject region of each frame:

- the region: `motionclone evaluate` takes the largest connected region that the subject-mask network marks
  (subject_mask.py, trained on the blocks generator's exact masks; it sees a subject that stays put or moves with the
  camera). This module's own finder, `find_subject`, takes the largest connected region that differs from the
  clip's per-pixel temporal median (the moving region; right only while the camera stands still and the subject
  covers each pixel in fewer than half the frames); subject placement and `--subject-region moving` use it;
- colour: the region's mean colour per frame, named by the nearest palette colour in CIE Lab (grey, white and black
  by chroma and lightness first); the score is the fraction of frames named as the prompt's colour;
- class: the region's bounding box per frame: wide (aspect > 1.4) is a car, tall (aspect < 0.7) a figure, otherwise
  a box filled to ≥ 0.89 is a cube (a square fills 1.0) and a rounder one a ball (a disc fills π/4 ≈ 0.785); the
  score is the fraction of frames classified as the prompt's subject.

A frame in which no region is found counts as a miss. These are not general measures of prompt adherence: real
footage or several subjects break their assumptions. Use CLIP text alignment for those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import ParameterError

# sRGB anchors of the chromatic names, lit and shaded (a rendered subject's mean colour is darker than its albedo);
# grey, white and black are decided by chroma and lightness instead.
CHROMATIC_COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((210, 40, 40), (120, 20, 20)),
    "orange": ((240, 140, 30), (150, 80, 20)),
    "yellow": ((240, 220, 40), (160, 145, 25)),
    "green": ((50, 160, 60), (25, 80, 30)),
    "blue": ((40, 80, 210), (20, 35, 100)),
    "purple": ((130, 60, 180), (70, 30, 100)),
    "pink": ((240, 140, 190), (190, 90, 140)),
}
COLOURS = (*CHROMATIC_COLOURS, "white", "black", "grey")
SUBJECTS = ("ball", "cube", "figure", "car")
COLOUR_ALIASES = {"gray": "grey", "violet": "purple"}

ACHROMATIC_CHROMA = 18.0  # Lab chroma below this is grey, white or black
WHITE_LIGHTNESS = 80.0  # L* above this (when achromatic) is white
BLACK_LIGHTNESS = 25.0  # L* below this (when achromatic) is black
LIGHTNESS_WEIGHT = 0.5  # shading changes lightness more than hue: weigh ΔL* less when naming chromatic colours

DIFFERENCE_THRESHOLD = 40  # a pixel is foreground when a channel differs from the median by more (0-255)
MIN_AREA_FRACTION = 0.002  # smaller regions are noise, not a subject
WIDE_ASPECT = 1.4
TALL_ASPECT = 0.7
CUBE_FILL = 0.89  # halfway between a disc's π/4 and a square's 1

# Where `motionclone evaluate` reads the subject: the subject-mask network's region, or the moving region.
SUBJECT_REGIONS = ("network", "moving")
DEFAULT_SUBJECT_REGION = "network"

NOTE = "heuristic for the built-in blocks model only (one coloured subject in a simple scene)"


@dataclass
class SubjectRegion:
    """The subject's region in one frame.

    Attributes:
        bbox: (x, y, width, height) of the region's bounding box in pixels.
        area: pixels in the region.
        mean_rgb: mean colour of the region (0-255), after eroding one pixel of its edge where possible.
    """

    bbox: tuple[int, int, int, int]
    area: int
    mean_rgb: tuple[float, float, float]

    @property
    def aspect(self) -> float:
        """Bounding box width / height."""
        return self.bbox[2] / self.bbox[3]

    @property
    def fill(self) -> float:
        """Region area / bounding box area."""
        return self.area / (self.bbox[2] * self.bbox[3])


def parse_prompt(prompt: str | None) -> tuple[str | None, str | None]:
    """The subject's colour and class named in a prompt, e.g. "a red ball under a blue sky" → ("red", "ball").

    The colour is the colour word closest before the subject word (so the sky's colour is not taken); without a
    subject word, the first colour word. Plurals ("cars") and "gray" are understood.
    """
    if not prompt:
        return None, None
    words = [_normalise_word(word) for word in re.findall(r"[a-z]+", prompt.lower())]
    subject_at = next((i for i, word in enumerate(words) if word in SUBJECTS), None)
    if subject_at is None:
        return next((word for word in words if word in COLOURS), None), None
    before = [word for word in words[max(0, subject_at - 3) : subject_at] if word in COLOURS]
    return (before[-1] if before else None), words[subject_at]


def name_colour(rgb: tuple[float, float, float] | np.ndarray) -> str:
    """The palette name of an sRGB colour (0-255): grey, white or black by chroma and lightness, else nearest in Lab."""
    lightness, a, b = _to_lab(np.asarray(rgb, dtype=np.float32).reshape(1, 3))[0]
    if np.hypot(a, b) < ACHROMATIC_CHROMA:
        if lightness >= WHITE_LIGHTNESS:
            return "white"
        return "black" if lightness <= BLACK_LIGHTNESS else "grey"
    names = [name for name, anchors in CHROMATIC_COLOURS.items() for _ in anchors]
    anchors = _to_lab(np.array([rgb for group in CHROMATIC_COLOURS.values() for rgb in group], dtype=np.float32))
    weights = np.array([LIGHTNESS_WEIGHT, 1.0, 1.0])
    distances = np.linalg.norm((anchors - np.array([lightness, a, b])) * weights, axis=1)
    return names[int(np.argmin(distances))]


def classify_shape(region: SubjectRegion) -> str:
    """ball, cube, figure or car from the bounding box's aspect ratio and fill ratio."""
    if region.aspect > WIDE_ASPECT:
        return "car"
    if region.aspect < TALL_ASPECT:
        return "figure"
    return "cube" if region.fill >= CUBE_FILL else "ball"


def find_subject(
    frames: np.ndarray, threshold: int = DIFFERENCE_THRESHOLD, min_area_fraction: float = MIN_AREA_FRACTION
) -> list[SubjectRegion | None]:
    """The moving subject of every frame: the largest region differing from the clip's per-pixel temporal median.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        threshold: the largest channel difference (0-255) a background pixel may show.
        min_area_fraction: regions smaller than this fraction of the frame are ignored.

    Returns:
        One SubjectRegion per frame, or None where nothing large enough moves.
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ParameterError("frames", f"must be (T, H, W, 3) RGB frames, got {getattr(frames, 'shape', None)}")
    background = np.median(frames, axis=0).astype(np.int16)
    kernel = np.ones((3, 3), dtype=np.uint8)
    regions: list[SubjectRegion | None] = []
    for frame in frames:
        foreground = (np.abs(frame.astype(np.int16) - background).max(axis=-1) > threshold).astype(np.uint8)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernel)
        regions.append(largest_region(frame, foreground, min_area_fraction))
    return regions


def largest_region(
    frame: np.ndarray, mask: np.ndarray, min_area_fraction: float = MIN_AREA_FRACTION
) -> SubjectRegion | None:
    """The largest 8-connected region of `mask` in `frame`, or None when it covers less than `min_area_fraction`.

    Its colour is the mean over the region less one pixel of its edge (where enough is left), so that pixels blended
    with the background do not shift it.
    """
    min_area = max(4, int(min_area_fraction * mask.shape[0] * mask.shape[1]))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[largest])
    if area < min_area:
        return None
    region = (labels == largest).astype(np.uint8)
    inner = cv2.erode(region, np.ones((3, 3), dtype=np.uint8))
    colour_mask = inner if inner.sum() >= min_area // 2 else region
    mean = frame[colour_mask.astype(bool)].astype(np.float64).mean(axis=0)
    return SubjectRegion((x, y, w, h), area, (float(mean[0]), float(mean[1]), float(mean[2])))


def colour_adherence(
    frames: np.ndarray,
    prompt: str | None = None,
    colour: str | None = None,
    regions: list[SubjectRegion | None] | None = None,
    region_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fraction of frames whose subject region is named as the prompt's subject colour.

    Args:
        frames: (T, H, W, 3) uint8 result frames.
        prompt: the result's prompt; its subject colour is used unless `colour` is given.
        colour: the expected colour (overrides the prompt), one of COLOURS.
        regions: the subject region of each frame; default `find_subject(frames)`, the moving region.
        region_settings: how `regions` were found, for the report; needed with `regions`.

    Returns:
        A metric entry: value, status, reason (when not measured), expected colour, per-frame names and settings.
    """
    expected, source = _expected(colour, "subject_colour", COLOURS, parse_prompt(prompt)[0])
    method = {
        "method": "mean colour of the subject region per frame, nearest named colour in CIE Lab",
        "note": NOTE,
        "settings": _region_settings(regions, region_settings)
        | {
            "achromatic_chroma": ACHROMATIC_CHROMA,
            "white_lightness": WHITE_LIGHTNESS,
            "black_lightness": BLACK_LIGHTNESS,
            "lightness_weight": LIGHTNESS_WEIGHT,
            "palette_srgb": {name: [list(rgb) for rgb in group] for name, group in CHROMATIC_COLOURS.items()},
        },
    }
    if expected is None:
        return _not_measured(_no_expected(prompt, "colour", COLOURS, "--subject-colour"), method)
    regions = _regions(frames, regions, region_settings)
    named = [None if region is None else name_colour(region.mean_rgb) for region in regions]
    return {
        "value": _fraction(named, expected),
        "status": "measured",
        "expected": expected,
        "expected_from": source,
        "frames": len(named),
        "frames_with_subject": sum(name is not None for name in named),
        "per_frame": named,
        "mean_rgb": [None if r is None else [round(c, 1) for c in r.mean_rgb] for r in regions],
        **method,
    }


def class_adherence(
    frames: np.ndarray,
    prompt: str | None = None,
    subject: str | None = None,
    regions: list[SubjectRegion | None] | None = None,
    region_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fraction of frames whose subject region's shape is classified as the prompt's subject.

    Args:
        frames: (T, H, W, 3) uint8 result frames.
        prompt: the result's prompt; its subject word is used unless `subject` is given.
        subject: the expected subject (overrides the prompt), one of SUBJECTS.
        regions: the subject region of each frame; default `find_subject(frames)`, the moving region.
        region_settings: how `regions` were found, for the report; needed with `regions`.

    Returns:
        A metric entry: value, status, reason (when not measured), expected class, per-frame classes and settings.
    """
    expected, source = _expected(subject, "subject_class", SUBJECTS, parse_prompt(prompt)[1])
    method = {
        "method": "bounding box of the subject region per frame: aspect ratio and fill ratio",
        "note": NOTE,
        "settings": _region_settings(regions, region_settings)
        | {"wide_aspect_car": WIDE_ASPECT, "tall_aspect_figure": TALL_ASPECT, "cube_min_fill": CUBE_FILL},
    }
    if expected is None:
        return _not_measured(_no_expected(prompt, "subject", SUBJECTS, "--subject-class"), method)
    regions = _regions(frames, regions, region_settings)
    classes = [None if region is None else classify_shape(region) for region in regions]
    return {
        "value": _fraction(classes, expected),
        "status": "measured",
        "expected": expected,
        "expected_from": source,
        "frames": len(classes),
        "frames_with_subject": sum(name is not None for name in classes),
        "per_frame": classes,
        "shape": [None if r is None else {"aspect": round(r.aspect, 3), "fill": round(r.fill, 3)} for r in regions],
        **method,
    }


def override_warnings(prompt: str | None, colour: str | None, subject: str | None) -> list[str]:
    """Warnings for a --subject-colour or --subject-class that contradicts the prompt (the override is scored)."""
    warnings = []
    parsed = dict(zip(("subject-colour", "subject-class"), parse_prompt(prompt), strict=True))
    for flag, override in (("subject-colour", colour), ("subject-class", subject)):
        if override is None or parsed[flag] is None:
            continue
        given = _normalise_word(override.strip().lower())
        if given != parsed[flag]:
            warnings.append(f"--{flag} {given} differs from the prompt's {parsed[flag]}: {given} is scored")
    return warnings


def check_overrides(colour: str | None, subject: str | None) -> None:
    """Raise ParameterError (naming the field) for an unknown --subject-colour or --subject-class."""
    _expected(colour, "subject_colour", COLOURS, None)
    _expected(subject, "subject_class", SUBJECTS, None)


def _expected(
    override: str | None, field: str, allowed: tuple[str, ...], parsed: str | None
) -> tuple[str | None, str | None]:
    if override is None:
        return parsed, "prompt" if parsed else None
    name = _normalise_word(override.strip().lower())
    if name not in allowed:
        raise ParameterError(field, f"must be one of {', '.join(allowed)}, got {override!r}")
    return name, f"--{field.replace('_', '-')}"


def _no_expected(prompt: str | None, what: str, known: tuple[str, ...], flag: str) -> str:
    if not prompt:
        return f"no prompt given (--prompt) and none found in result.json; pass {flag}"
    return f"the prompt names no known {what} ({', '.join(known)}); pass {flag}"


def _normalise_word(word: str) -> str:
    word = COLOUR_ALIASES.get(word, word)
    if word.endswith("s") and word[:-1] in SUBJECTS:
        return word[:-1]
    return word


def _fraction(names: list[str | None], expected: str) -> float:
    return sum(name == expected for name in names) / len(names) if names else 0.0


def _not_measured(reason: str, method: dict[str, Any]) -> dict[str, Any]:
    return {"value": None, "status": "not measured", "reason": reason, **method}


def _region_settings(
    regions: list[SubjectRegion | None] | None, region_settings: dict[str, Any] | None
) -> dict[str, Any]:
    """The settings of the region finder, checking that given regions come with them."""
    if region_settings is not None:
        return region_settings
    if regions is not None:
        raise ParameterError("region_settings", "must say how the given `regions` were found (for the report)")
    return moving_region_settings()


def _regions(
    frames: np.ndarray, regions: list[SubjectRegion | None] | None, region_settings: dict[str, Any] | None
) -> list[SubjectRegion | None]:
    """The given regions, or the moving region when neither regions nor another finder's settings are given."""
    if regions is not None:
        return regions
    if region_settings is not None:
        raise ParameterError("regions", "must be given with `region_settings` (the regions that they describe)")
    return find_subject(frames)


def moving_region_settings() -> dict[str, Any]:
    """How `find_subject` finds the region, for metrics.json."""
    return {
        "subject_region": "moving",
        "region": "largest connected region differing from the per-pixel temporal median by > threshold",
        "difference_threshold": DIFFERENCE_THRESHOLD,
        "min_area_fraction": MIN_AREA_FRACTION,
    }


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) sRGB 0-255 → (N, 3) CIE Lab (D65; L* 0-100), via OpenCV's float conversion."""
    scaled = (np.clip(rgb, 0, 255) / 255.0).astype(np.float32).reshape(-1, 1, 3)
    return cv2.cvtColor(scaled, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float64)
