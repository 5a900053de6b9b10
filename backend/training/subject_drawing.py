"""The subjects (ball, cube, figure, car) drawn into a frame in a pose, with their shadow; each gives its mask and
centre. No bpy.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .clip_spec import EXTENT, WHEEL_RADIUS
from .drawing import DARK, Canvas, box, capsule, circle, coverage, paint, polygon, rgb


@dataclass(frozen=True)
class Pose:
    """A subject in one frame, in pixels: ground contact point (x, y), height above ground, size (largest extent)."""

    x: float
    y: float
    lift: float
    size: float
    swing: float
    roll: float
    facing: float


def _shade(colour: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    return np.clip(colour * factor, 0.0, 1.0)


def _ball(c: Canvas, pose: Pose, colour: np.ndarray) -> np.ndarray:
    r = pose.size / 2
    cx, cy = pose.x, pose.y - pose.lift - r
    d = circle(c.px, c.py, cx, cy, r)
    nx, ny = (c.px - cx) / r, (c.py - cy) / r
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    lambert = np.clip(-0.45 * nx - 0.55 * ny + 0.70 * nz, 0.0, 1.0)  # light from the upper left, towards the viewer
    shading = (0.74 + 0.36 * lambert)[..., None]
    highlight = (np.clip(-0.25 * nx - 0.3 * ny + 0.92 * nz, 0.0, 1.0) ** 40 * 0.6)[..., None]
    base = colour * shading
    paint(c.region, d, base + (1.0 - base) * highlight)
    return d


def _cube_points(pose: Pose) -> dict[str, list[tuple[float, float]]]:
    front = pose.size / 1.3
    depth = 0.3 * front  # oblique projection: the top and right faces recede up and to the right
    x0, bottom = pose.x - (front + depth) / 2, pose.y - pose.lift
    top = bottom - front
    x1 = x0 + front
    return {
        "outline": [
            (x0, bottom),
            (x0, top),
            (x0 + depth, top - depth),
            (x1 + depth, top - depth),
            (x1 + depth, bottom - depth),
            (x1, bottom),
        ],
        "top": [(x0, top), (x1, top), (x1 + depth, top - depth), (x0 + depth, top - depth)],
        "side": [(x1, top), (x1 + depth, top - depth), (x1 + depth, bottom - depth), (x1, bottom)],
    }


def _cube(c: Canvas, pose: Pose, colour: np.ndarray) -> np.ndarray:
    points = _cube_points(pose)
    front = pose.size / 1.3
    top_y = pose.y - pose.lift - front
    gradient = (0.98 - 0.14 * np.clip((c.py - top_y) / front, 0.0, 1.0))[..., None]
    # The whole silhouette first, so that the anti-aliased seams between faces blend with the cube, not the ground.
    silhouette = polygon(c.px, c.py, points["outline"])
    paint(c.region, silhouette, colour * gradient)
    paint(c.region, polygon(c.px, c.py, points["top"]), _shade(colour, 1.1))
    paint(c.region, polygon(c.px, c.py, points["side"]), _shade(colour, 0.76))
    return silhouette


def _figure(c: Canvas, pose: Pose, colour: np.ndarray) -> np.ndarray:
    h, x, f = pose.size, pose.x, pose.facing
    leg, foot = 0.40 * h, 0.055 * h
    swing = pose.swing
    # The lower foot touches the ground (or the jump height): the hip bobs as the legs swing.
    hip_y = pose.y - pose.lift - foot - leg * np.cos(swing)
    hip = (x, hip_y)
    shoulder = (x + 0.02 * h * f, hip_y - 0.28 * h)
    arm = 0.30 * h

    def limb_end(start: tuple[float, float], length: float, angle: float) -> tuple[float, float]:
        return start[0] + length * np.sin(angle) * f, start[1] + length * np.cos(angle)

    parts = [
        (capsule(c.px, c.py, shoulder, limb_end(shoulder, arm, 0.8 * swing), 0.042 * h), 0.72),  # back arm
        (capsule(c.px, c.py, hip, limb_end(hip, leg, -swing), foot), 0.74),  # back leg
        (box(c.px, c.py, x, hip_y - 0.15 * h, 0.115 * h, 0.19 * h, 0.05 * h), 1.0),  # torso
        (capsule(c.px, c.py, hip, limb_end(hip, leg, swing), foot), 0.9),  # front leg
        (capsule(c.px, c.py, shoulder, limb_end(shoulder, arm, -0.8 * swing), 0.042 * h), 0.92),  # front arm
        (circle(c.px, c.py, x + 0.015 * h * f, hip_y - 0.445 * h, 0.1 * h), 1.06),  # head
    ]
    union = None
    for d, factor in parts:
        paint(c.region, d, _shade(colour, factor))
        union = d if union is None else np.minimum(union, d)
    assert union is not None
    return union


def _car(c: Canvas, pose: Pose, colour: np.ndarray) -> np.ndarray:
    length, x, f = pose.size, pose.x, pose.facing
    ground = pose.y - pose.lift
    wheel_r = WHEEL_RADIUS * length
    body_bottom, body_top = ground - 0.08 * length, ground - 0.32 * length
    cabin_top = body_top - 0.18 * length
    rear = x - f * 0.06 * length  # the cabin sits towards the rear, the bonnet is in front

    def trapezoid(bottom_y: float, top_y: float, bottom_half: float, top_half: float) -> list[tuple[float, float]]:
        lean = 0.03 * length * f  # the cabin leans forward: the rear window slopes more than the windscreen
        return [
            (rear - bottom_half, bottom_y),
            (rear + bottom_half, bottom_y),
            (rear + top_half + lean, top_y),
            (rear - top_half + lean, top_y),
        ]

    d_cabin = polygon(c.px, c.py, trapezoid(body_top + 1.0, cabin_top, 0.28 * length, 0.19 * length))
    d_window = polygon(c.px, c.py, trapezoid(body_top, cabin_top + 0.035 * length, 0.23 * length, 0.15 * length))
    body_half = (body_bottom - body_top) / 2
    d_body = box(c.px, c.py, x, body_top + body_half, 0.5 * length, body_half, 0.07 * length)
    gradient = (1.08 - 0.26 * np.clip((c.py - body_top) / (body_bottom - body_top), 0.0, 1.0))[..., None]
    paint(c.region, d_cabin, _shade(colour, 0.95))
    paint(c.region, d_window, rgb(72, 80, 92))
    paint(c.region, d_body, _shade(colour, 1.0) * gradient)
    union = np.minimum(d_body, d_cabin)
    for side in (-1.0, 1.0):
        wx, wy = x + side * 0.3 * length, ground - wheel_r
        d_wheel = circle(c.px, c.py, wx, wy, wheel_r)
        paint(c.region, d_wheel, DARK)
        paint(c.region, circle(c.px, c.py, wx, wy, 0.45 * wheel_r), rgb(150, 150, 155))
        # A bolt on the hub turns with the wheels, so driving reads as rolling.
        angle = pose.roll * f
        bolt_x, bolt_y = wx + 0.25 * wheel_r * np.cos(angle), wy + 0.25 * wheel_r * np.sin(angle)
        paint(c.region, circle(c.px, c.py, bolt_x, bolt_y, 0.12 * wheel_r), DARK)
        union = np.minimum(union, d_wheel)
    return union


_SUBJECT_DRAW: dict[str, Callable[[Canvas, Pose, np.ndarray], np.ndarray]] = {
    "ball": _ball,
    "cube": _cube,
    "figure": _figure,
    "car": _car,
}


def _subject_box(subject: str, pose: Pose) -> tuple[float, float, float, float]:
    """A pixel box that contains the whole subject (generous, cheap to compute)."""
    width, height = EXTENT[subject]
    half = 0.5 * width * pose.size + 2.0
    if subject == "figure":
        half = 0.6 * pose.size + 2.0  # swinging limbs reach further than the standing width
    bottom = pose.y - pose.lift + 2.0
    return pose.x - half, bottom - height * pose.size - 4.0, pose.x + half, bottom


def _subject_centre(subject: str, pose: Pose) -> tuple[float, float]:
    height = EXTENT[subject][1]
    return pose.x, pose.y - pose.lift - 0.5 * height * pose.size


def _draw_shadow(image: np.ndarray, subject: str, pose: Pose) -> None:
    """A soft dark ellipse on the ground under the subject, smaller and lighter when it is in the air."""
    width = EXTENT[subject][0] * pose.size
    air = min(pose.lift / max(pose.size, 1e-6), 1.0)
    rx, ry = (0.55 - 0.2 * air) * width, (0.12 - 0.04 * air) * width + 1.0
    c = Canvas(image, (pose.x - rx, pose.y - ry, pose.x + rx, pose.y + ry))
    if c.empty:
        return
    q = np.sqrt(((c.px - pose.x) / rx) ** 2 + ((c.py - pose.y) / ry) ** 2)
    strength = np.clip((1.0 - q) / 0.4, 0.0, 1.0) * (0.4 * (1.0 - 0.6 * air))
    c.region *= 1.0 - strength[..., None]


def draw_subject(
    image: np.ndarray, subject: str, pose: Pose, colour: np.ndarray, outline: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """Draw the subject (and its shadow) into image; return its mask and centre in pixels."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    _draw_shadow(image, subject, pose)
    c = Canvas(image, _subject_box(subject, pose))
    if not c.empty:
        union = _SUBJECT_DRAW[subject](c, pose, colour)
        if outline > 0:  # Workbench draws a dark object outline just inside the silhouette
            ring = coverage(union) - coverage(union + outline)
            c.region += (DARK - c.region) * (0.85 * ring)[..., None]
        mask[c.y0 : c.y1, c.x0 : c.x1] = union < 0.0
    return mask, _subject_centre(subject, pose)
