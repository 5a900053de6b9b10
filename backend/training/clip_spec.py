"""ClipSpec, everything that determines one procedural "blocks" clip, and the vocabularies of its fields. No bpy.

Coordinates. Positions are normalised "world" coordinates: with a static camera the frame shows x in [0, 1] (left to
right) and y in [0, 1] (top to bottom), whatever the pixel size. A subject's position is its ground-contact point
(bottom centre). The horizon (where ground or floor meets sky or wall) lies at 42-56 % of the height. Camera motion
moves a view window over the world: a pan shifts it horizontally, a tilt vertically, a zoom scales it about its centre.

Spec fields (see ClipSpec):
- direction: +1.0 or -1.0. For line, arc, zigzag, bounce and walk it is the sign of the horizontal travel (+1 = to the
  right on screen); for depth +1 means approaching the camera (growing) and -1 receding; for still it is only the way
  the figure or car faces.
- speed: 0.6-1.4; the subject travels BASE_TRAVEL * speed of the frame width over the clip (bounce: 70 % of that).
- scale: the subject's largest extent as a fraction of the frame side (height of ball, cube and figure; length of car).
- phase: in [0, 1), a per-motion shape parameter: line = vertical slope, arc = jump height, zigzag = number of turns
  and amplitude, bounce = number of bounces and their phase, walk = gait phase.
- seed: background details (horizon height, texture, clouds, stars, boxes; see scene_rng).

Motions always span the whole clip (time runs from 0 at the first frame to 1 at the last), so the same spec renders at
any frame count and any size.
"""

import json
from dataclasses import asdict, dataclass

import numpy as np

SUBJECTS = ("ball", "cube", "figure", "car")
COLOURS: dict[str, tuple[int, int, int]] = {
    # Brightest channel <= ~236 so that the +10 % shading highlight keeps the hue instead of clipping at 255.
    "red": (210, 40, 40),
    "orange": (235, 125, 25),
    "yellow": (230, 205, 35),
    "green": (45, 165, 60),
    "blue": (40, 90, 215),
    "purple": (130, 60, 190),
    "pink": (235, 105, 170),
    "white": (236, 236, 236),
    "black": (34, 34, 38),
    "grey": (128, 128, 128),
}
BACKGROUNDS = ("grass", "snow", "desert", "night", "water", "blockout")
MOTIONS = ("line", "arc", "zigzag", "bounce", "walk", "depth", "still")
CAMERA_MOTIONS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")

BASE_TRAVEL = 0.5  # fraction of the frame width travelled at speed 1.0

# Bounding box of a subject in units of its scale (width, height), used to keep it inside the frame (and to bound its
# drawing and shadow).
EXTENT = {"ball": (1.0, 1.0), "cube": (1.0, 1.0), "figure": (0.55, 1.0), "car": (1.0, 0.52)}
WHEEL_RADIUS = 0.1  # of the car's length; dark wheels stay a small part of the car's mask


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip (see the module docstring for the meaning of each field)."""

    subject: str
    colour: str
    background: str
    motion: str
    camera: str
    direction: float
    speed: float
    start: tuple[float, float]
    scale: float
    phase: float
    seed: int


def validate_spec(spec: ClipSpec) -> None:
    """Raise ValueError when a field names something outside its vocabulary."""
    for value, allowed, name in (
        (spec.subject, SUBJECTS, "subject"),
        (spec.colour, tuple(COLOURS), "colour"),
        (spec.background, BACKGROUNDS, "background"),
        (spec.motion, MOTIONS, "motion"),
        (spec.camera, CAMERA_MOTIONS, "camera"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


def spec_to_json(spec: ClipSpec) -> str:
    """The spec as a JSON object (as stored in a data set's specs array)."""
    return json.dumps(asdict(spec), sort_keys=True)


def spec_from_json(text: str) -> ClipSpec:
    """The inverse of spec_to_json."""
    fields = json.loads(text)
    return ClipSpec(**{**fields, "start": tuple(fields["start"])})


def scene_rng(seed: int) -> tuple[np.random.Generator, float]:
    """The background's random generator and its horizon height (the generator's first draw)."""
    rng = np.random.default_rng(seed)
    return rng, float(rng.uniform(0.42, 0.56))


def scene_horizon(seed: int) -> float:
    """The horizon height (world y) of the background with this seed."""
    return scene_rng(seed)[1]
