"""Random clip specs: colours that stand out from the background, motions that suit the subject, sizes and start
points that keep the subject inside the frame and on the ground for the whole clip. No bpy.
"""

from dataclasses import replace

import numpy as np

from .clip_spec import BACKGROUNDS, CAMERA_MOTIONS, COLOURS, EXTENT, SUBJECTS, ClipSpec, scene_horizon
from .motion_paths import camera_path, subject_path

CAMERA_MOTION_PROBABILITY = 0.35

# Low-contrast pairs are never sampled (a white cube on snow, a black car at night...).
EXCLUDED_COLOURS = {
    "grass": ("green",),
    "snow": ("white",),
    "desert": ("yellow",),
    "night": ("black",),
    "water": ("blue",),
    "blockout": (),
}
_BLOCKOUT_MANNEQUIN = ("grey", "grey", "grey", "black", "white")  # blockout subjects are mostly neutral
_BLOCKOUT_NEUTRAL_PROBABILITY = 0.7
_MOTION_WEIGHTS = {
    "ball": {"line": 0.25, "arc": 0.15, "zigzag": 0.1, "bounce": 0.25, "depth": 0.15, "still": 0.1},
    "cube": {"line": 0.25, "arc": 0.15, "zigzag": 0.15, "bounce": 0.2, "depth": 0.15, "still": 0.1},
    "figure": {"walk": 0.45, "line": 0.1, "arc": 0.1, "zigzag": 0.1, "depth": 0.15, "still": 0.1},
    "car": {"line": 0.4, "arc": 0.1, "zigzag": 0.15, "bounce": 0.05, "depth": 0.2, "still": 0.1},
}
_SCALE_RANGE = {"ball": (0.15, 0.28), "cube": (0.16, 0.28), "figure": (0.25, 0.38), "car": (0.26, 0.38)}
_FRAME_MARGIN = 0.03


def _sample_colour(rng: np.random.Generator, background: str) -> str:
    if background == "blockout" and rng.random() < _BLOCKOUT_NEUTRAL_PROBABILITY:
        return _BLOCKOUT_MANNEQUIN[rng.integers(len(_BLOCKOUT_MANNEQUIN))]
    names = [name for name in COLOURS if name not in EXCLUDED_COLOURS[background]]
    return names[rng.integers(len(names))]


def _sample_motion(rng: np.random.Generator, subject: str, allow_still: bool) -> str:
    weights = {m: w for m, w in _MOTION_WEIGHTS[subject].items() if allow_still or m != "still"}
    names = list(weights)
    probabilities = np.array([weights[m] for m in names])
    return names[rng.choice(len(names), p=probabilities / probabilities.sum())]


def _sample_scale(rng: np.random.Generator, subject: str, motion: str, direction: float) -> float:
    low, high = _SCALE_RANGE[subject]
    if motion == "depth":  # start small when approaching, large when receding, so both ends stay in range
        middle = (low + high) / 2
        low, high = (low * 0.85, middle) if direction > 0 else (middle, high * 1.1)
    return float(rng.uniform(low, high))


def sample_clip_spec(rng: np.random.Generator) -> ClipSpec:
    """Draw a random clip spec whose subject stays inside the frame and on the ground for the whole clip."""
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    colour = _sample_colour(rng, background)
    if rng.random() < CAMERA_MOTION_PROBABILITY:
        camera = CAMERA_MOTIONS[1 + rng.integers(len(CAMERA_MOTIONS) - 1)]
        # Half of the camera-motion clips have a still subject: the motion is then the camera's alone.
        motion = "still" if rng.random() < 0.5 else _sample_motion(rng, subject, allow_still=False)
    else:
        camera = "static"
        motion = _sample_motion(rng, subject, allow_still=True)
    direction = float(rng.choice([-1.0, 1.0]))
    speed = float(rng.uniform(0.6, 1.4))
    phase = float(rng.random())
    scale = _sample_scale(rng, subject, motion, direction)
    seed = int(rng.integers(2**31 - 1))
    horizon = scene_horizon(seed)
    spec = ClipSpec(subject, colour, background, motion, camera, direction, speed, (0.5, 0.8), scale, phase, seed)
    for attempt in range(60):
        if attempt and attempt % 12 == 0:  # a long path or a big subject may not fit: shrink both a little
            spec = replace(spec, speed=spec.speed * 0.85, scale=spec.scale * 0.92)
        start = (float(rng.uniform(0.06, 0.94)), float(rng.uniform(horizon + 0.06, 0.97)))
        candidate = replace(spec, start=start)
        if _fits(candidate, horizon):
            return candidate
    # Practically unreachable; a centred subject with little travel always fits.
    return replace(spec, speed=0.6, scale=_SCALE_RANGE[subject][0], start=(0.5, min(0.9, horizon + 0.3)))


def _fits(spec: ClipSpec, horizon: float) -> bool:
    """Whether the subject stays inside the frame (with a margin) and on the ground for the whole clip."""
    t = np.linspace(0.0, 1.0, 17)
    path = subject_path(spec, t, horizon)
    ox, oy, zoom = camera_path(spec.camera, spec.speed, t)
    width, height = EXTENT[spec.subject]
    u = 0.5 + (path.x - 0.5 - ox) * zoom
    bottom = 0.5 + (path.y - 0.5 - oy) * zoom
    half = 0.5 * width * path.scale * zoom
    top = bottom - (path.lift + height * path.scale) * zoom
    low, high = _FRAME_MARGIN, 1.0 - _FRAME_MARGIN
    inside = (u - half >= low).all() and (u + half <= high).all() and (top >= low).all() and (bottom <= high).all()
    return bool(inside and (path.y >= horizon + 0.04).all())
