"""Drawing primitives: signed distances in pixels (negative inside), anti-aliased by a one-pixel ramp. No bpy."""

from collections.abc import Sequence

import numpy as np


def rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.array([r, g, b], dtype=np.float32) / 255.0


DARK = rgb(28, 28, 30)  # wheels, hub bolts and outlines


def circle(px: np.ndarray, py: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.sqrt((px - cx) ** 2 + (py - cy) ** 2) - r


def capsule(px: np.ndarray, py: np.ndarray, a: tuple[float, float], b: tuple[float, float], r: float) -> np.ndarray:
    pax, pay = px - a[0], py - a[1]
    bax, bay = b[0] - a[0], b[1] - a[1]
    h = np.clip((pax * bax + pay * bay) / (bax * bax + bay * bay + 1e-9), 0.0, 1.0)
    return np.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2) - r


def box(px: np.ndarray, py: np.ndarray, cx: float, cy: float, hw: float, hh: float, r: float = 0.0) -> np.ndarray:
    qx = np.abs(px - cx) - hw + r
    qy = np.abs(py - cy) - hh + r
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def polygon(px: np.ndarray, py: np.ndarray, points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Distance to a convex polygon as the largest distance to its edge lines: exact along edges, which is all the
    anti-aliasing needs."""
    pts = [(float(x), float(y)) for x, y in points]
    area = sum(ax * by - bx * ay for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1], strict=True))
    sign = 1.0 if area > 0 else -1.0  # makes the distance positive outside, whichever way the points wind
    result = None
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1], strict=True):
        ex, ey = bx - ax, by - ay
        scale = sign / (np.hypot(ex, ey) + 1e-9)
        d = ((px - ax) * ey - (py - ay) * ex) * np.float32(scale)
        result = d if result is None else np.maximum(result, d)
    assert result is not None
    return result


def coverage(d: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - d, 0.0, 1.0)


def paint(region: np.ndarray, d: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-blend colour (3,) or (h, w, 3) into region where the shape with distance d lies."""
    alpha = coverage(d)[..., None]
    region += (colour - region) * alpha


class Canvas:
    """A pixel region of an image with its pixel-centre coordinates, for drawing one shape group."""

    def __init__(self, image: np.ndarray, box: tuple[float, float, float, float]) -> None:
        height, width = image.shape[:2]
        self.x0, self.y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        self.x1, self.y1 = min(width, int(np.ceil(box[2])) + 1), min(height, int(np.ceil(box[3])) + 1)
        self.empty = self.x1 <= self.x0 or self.y1 <= self.y0
        self.region = image[self.y0 : self.y1, self.x0 : self.x1]
        self.px = (np.arange(self.x0, self.x1, dtype=np.float32) + 0.5)[None, :]
        self.py = (np.arange(self.y0, self.y1, dtype=np.float32) + 0.5)[:, None]
