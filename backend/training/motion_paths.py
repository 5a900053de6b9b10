"""Subject and camera paths over a clip's normalised time (0 = first frame, 1 = last): position, height above the
ground, scale, gait and wheel rotation of the subject; view offset and zoom of the camera. No bpy.
"""

from dataclasses import dataclass

import numpy as np

from .clip_spec import BASE_TRAVEL, WHEEL_RADIUS, ClipSpec

_DEPTH_GROWTH = {1.0: 0.75, -1.0: -0.45}  # relative scale change over the clip when approaching / receding


@dataclass(frozen=True)
class SubjectPath:
    """Per-frame subject state in world units: contact point (x, y), height above ground, scale, leg swing, wheel
    rotation (radians)."""

    x: np.ndarray
    y: np.ndarray
    lift: np.ndarray
    scale: np.ndarray
    swing: np.ndarray
    roll: np.ndarray


def _zigzag_offsets(t: np.ndarray, phase: float) -> np.ndarray:
    """Vertical offsets of a zigzag: straight runs between alternating turning points, starting at 0."""
    turns = 2 + int(phase * 2)  # 2 or 3 changes of vertical direction
    amplitude = 0.06 + 0.05 * ((phase * 2) % 1.0)
    knots = np.linspace(0.0, 1.0, turns + 2)
    values = amplitude * np.where(np.arange(turns + 2) % 2 == 0, -0.5, 0.5)
    return np.interp(t, knots, values) - values[0]


def _gait(spec: ClipSpec, t: np.ndarray) -> np.ndarray:
    """Leg swing angle of the figure (radians): legs swing in opposite phase, arms opposite to legs."""
    motion = spec.motion
    if motion in ("walk", "zigzag", "depth") or (motion == "line" and spec.subject != "figure"):
        cycles, amplitude = 1.2 + spec.speed, 0.45
    elif motion == "line":  # a figure on a line runs: more steps, wider swing
        cycles, amplitude = 2.0 + spec.speed, 0.7
    elif motion == "arc":
        return 0.45 * np.sin(np.pi * t)  # legs open during the jump
    elif motion == "bounce":
        return np.zeros_like(t)
    else:
        return np.full_like(t, 0.1)  # standing, feet slightly apart
    return amplitude * np.sin(2.0 * np.pi * (cycles * t + spec.phase))


def subject_path(spec: ClipSpec, t: np.ndarray, horizon: float) -> SubjectPath:
    """The subject's world-space path over normalised time t (0 = first frame, 1 = last frame)."""
    sx, sy = spec.start
    travel = spec.direction * BASE_TRAVEL * spec.speed
    x = sx + travel * t
    y = np.full_like(t, sy)
    lift = np.zeros_like(t)
    scale = np.full_like(t, spec.scale)
    if spec.motion == "line":
        y = sy + (spec.phase - 0.5) * 0.5 * abs(travel) * t  # mostly horizontal, sometimes diagonal
    elif spec.motion == "arc":
        lift = (0.12 + 0.12 * spec.phase) * 4.0 * t * (1.0 - t)
    elif spec.motion == "zigzag":
        y = sy + _zigzag_offsets(t, spec.phase)
    elif spec.motion == "bounce":
        x = sx + 0.7 * travel * t
        bounces = 2 + int(spec.phase * 2)
        offset = (spec.phase * 2) % 1.0 * 0.5
        lift = (0.1 + 0.04 * spec.speed) * np.abs(np.sin(np.pi * (bounces * t + offset)))
    elif spec.motion == "depth":
        growth = 1.0 + _DEPTH_GROWTH[1.0 if spec.direction > 0 else -1.0] * t
        # Perspective: moving along a ray from the vanishing point, the contact point's distance from the horizon
        # and from the centre line grow in proportion to the subject's size.
        scale = spec.scale * growth
        y = horizon + (sy - horizon) * growth
        x = 0.5 + (sx - 0.5) * growth
    elif spec.motion == "still":
        x = np.full_like(t, sx)
    travelled = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    roll = travelled / (WHEEL_RADIUS * scale)
    return SubjectPath(x, y, lift, scale, _gait(spec, t), roll)


def camera_path(camera: str, speed: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """View-centre offset (ox, oy) from (0.5, 0.5) and zoom factor per frame. Camera moves at a speed tied to the
    spec's speed, but gentler (0.8-1.2 of a base amount)."""
    strength = 0.8 + 0.5 * (speed - 0.6)
    ox, oy, zoom = np.zeros_like(t), np.zeros_like(t), np.ones_like(t)
    if camera in ("pan_left", "pan_right"):
        # Panning left shows what is left of the view: the view centre moves left, the scene slides right.
        ox = (-1.0 if camera == "pan_left" else 1.0) * 0.28 * strength * t
    elif camera in ("tilt_up", "tilt_down"):
        oy = (-1.0 if camera == "tilt_up" else 1.0) * 0.16 * strength * t
    elif camera in ("zoom_in", "zoom_out"):
        factor = 1.0 + 0.35 * strength
        zoom = factor**t if camera == "zoom_in" else factor ** (-t)
    return ox, oy, zoom
