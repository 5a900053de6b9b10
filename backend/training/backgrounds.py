"""Backgrounds, rendered as functions of world coordinates on a canvas that covers every frame's view, and each
frame's view of that canvas (pans, tilts and zooms). No bpy.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .clip_spec import ClipSpec, scene_rng
from .drawing import DARK, Canvas, box, coverage, paint, polygon, rgb


class _Noise:
    """Smooth value noise on a periodic random lattice (period 64), evaluated at any coordinates."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.table = rng.random((64, 64), dtype=np.float32)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        fu, fv = np.floor(u), np.floor(v)
        su, sv = u - fu, v - fv
        su, sv = su * su * (3.0 - 2.0 * su), sv * sv * (3.0 - 2.0 * sv)
        i0, j0 = fu.astype(np.int64) & 63, fv.astype(np.int64) & 63
        i1, j1 = (i0 + 1) & 63, (j0 + 1) & 63
        t = self.table
        top = t[j0, i0] + (t[j0, i1] - t[j0, i0]) * su
        bottom = t[j1, i0] + (t[j1, i1] - t[j1, i0]) * su
        return (top + (bottom - top) * sv).astype(np.float32)

    def fbm(self, u: np.ndarray, v: np.ndarray, octaves: int = 2) -> np.ndarray:
        total, weight, norm = 0.0, 1.0, 0.0
        for octave in range(octaves):
            total = total + weight * self(u * 2**octave + 17.0 * octave, v * 2**octave + 31.0 * octave)
            norm += weight
            weight *= 0.5
        return total / norm


@dataclass(frozen=True)
class _World:
    """Canvas pixel-centre world coordinates x (1, W) and y (H, 1), the horizon, and the pixel size in world units."""

    x: np.ndarray
    y: np.ndarray
    horizon: float
    pixel: float

    def ground(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Perspective ground-plane coordinates (lateral, distance) and a 0..1 fade towards the horizon, where
        texture detail would alias."""
        gap = np.maximum(self.y - self.horizon, 0.0)
        distance = 1.0 / (gap + 0.03)
        lateral = (self.x - 0.5) * distance
        fade = np.clip(gap / 0.12, 0.0, 1.0)
        return lateral, np.broadcast_to(distance, lateral.shape), fade


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    s = np.clip((x - a) / (b - a), 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _vertical_gradient(w: _World, top: np.ndarray, bottom: np.ndarray, y0: float, y1: float) -> np.ndarray:
    s = np.clip((w.y - y0) / (y1 - y0), 0.0, 1.0)[..., None]
    return (top + (bottom - top) * s).astype(np.float32)


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image + (colour - image) * alpha[..., None]


def _ridge(
    w: _World, noise: _Noise, height: float, variation: float, frequency: float
) -> tuple[np.ndarray, np.ndarray]:
    """A distant range of hills, dunes or mountains along the horizon: its top edge (world y, per column) and its
    anti-aliased coverage."""
    top = w.horizon - height - variation * noise.fbm(w.x * frequency, np.full_like(w.x, 5.5), 3)
    return top, np.clip((w.y - top) / w.pixel + 0.5, 0.0, 1.0) * (w.y < w.horizon)


def _blades(w: _World, noise: _Noise, density: float, height: float) -> np.ndarray:
    """Upright grass-blade texture in 0..1. A ground texture would stretch blades along rays from the vanishing point;
    instead the ground is cut into depth bands, each with one lateral scale, so blades stay vertical on screen."""
    rise = np.log(np.maximum(w.y - w.horizon, 0.0) + 0.03) * height  # one noise cell per band, shrinking with depth
    band = np.floor(rise)
    distance = np.exp(-(band + 0.5) / height)  # ground distance at the band's centre (see _World.ground)
    return noise((w.x - 0.5) * distance * density + band * 13.7, rise)


def _sky_and_ground(w: _World, sky: np.ndarray, ground: np.ndarray) -> np.ndarray:
    shape = (w.y.shape[0], w.x.shape[1], 3)
    return np.where((w.y < w.horizon)[..., None], np.broadcast_to(sky, shape), np.broadcast_to(ground, shape))


def _clouds(w: _World, noise: _Noise, image: np.ndarray, colour: np.ndarray, amount: float) -> np.ndarray:
    c = noise.fbm(w.x * 3.0 + 40.0, w.y * 7.0, 3)
    alpha = _smoothstep(0.55, 0.78, c) * amount * (w.y < w.horizon - 0.02)
    return _blend(image, colour, alpha)


def _background_grass(w: _World, noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    sky = _vertical_gradient(w, rgb(70, 130, 215), rgb(175, 210, 240), w.horizon - 0.6, w.horizon)
    lateral, distance, fade = w.ground()
    blades = _blades(w, noise, 16.0, 4.0)
    patches = noise.fbm(lateral * 1.5 + 9.0, distance * 0.7, 2)
    near = np.clip((w.y - w.horizon) / 0.45, 0.0, 1.0)[..., None]
    base = rgb(110, 165, 80) + (rgb(70, 150, 50) - rgb(110, 165, 80)) * near
    ground = base * (0.8 + 0.25 * patches[..., None]) * (1.0 + 0.22 * fade * (blades - 0.5))[..., None]
    image = _sky_and_ground(w, sky, ground)
    image = _clouds(w, noise, image, rgb(250, 250, 252), 0.9)
    _, hills = _ridge(w, noise, 0.015, 0.06, 4.0)
    return _blend(image, rgb(55, 110, 60) * (0.9 + 0.2 * noise(w.x * 30.0, w.y * 30.0))[..., None], hills)


def _background_snow(w: _World, noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    sky = _vertical_gradient(w, rgb(170, 195, 225), rgb(228, 234, 242), w.horizon - 0.6, w.horizon)
    lateral, distance, fade = w.ground()
    drifts = _smoothstep(0.35, 0.75, noise.fbm(lateral * 2.0, distance * 1.2, 2))
    ground = _blend(np.broadcast_to(rgb(236, 240, 248), (*lateral.shape, 3)), rgb(180, 195, 222), 0.7 * drifts)
    sparkle = _smoothstep(0.86, 0.92, noise(lateral * 30.0, distance * 10.0)) * fade
    ground = _blend(ground, rgb(255, 255, 255), sparkle)
    stones = _smoothstep(0.93, 0.97, noise(lateral * 12.0 + 3.0, distance * 5.0)) * fade
    ground = _blend(ground, rgb(110, 115, 130), 0.8 * stones)
    image = _sky_and_ground(w, sky, ground)
    ridge, mountains = _ridge(w, noise, 0.03, 0.16, 2.5)
    cap = _smoothstep(0.05, 0.02, w.y - ridge) * mountains  # snow caps near the ridge
    rock = rgb(120, 135, 165) * (0.92 + 0.16 * noise(w.x * 20.0, w.y * 8.0))[..., None]
    image = _blend(image, rock, mountains)
    return _blend(image, rgb(240, 244, 250), cap)


def _background_desert(w: _World, noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    sky = _vertical_gradient(w, rgb(225, 150, 95), rgb(250, 220, 165), w.horizon - 0.6, w.horizon)
    sun_x, sun_y = rng.uniform(0.1, 0.9), w.horizon - rng.uniform(0.2, 0.35)
    sun = np.hypot(w.x - sun_x, w.y - sun_y)
    sky = _blend(sky, rgb(255, 245, 215), _smoothstep(0.07, 0.055, sun))
    lateral, distance, fade = w.ground()
    warp = noise.fbm(lateral * 0.8, distance * 0.6, 2)
    stripes = 0.5 + 0.5 * np.sin(distance * 7.0 + lateral * 1.5 + 9.0 * warp)
    sand = _blend(np.broadcast_to(rgb(228, 192, 135), (*lateral.shape, 3)), rgb(190, 145, 90), 0.75 * stripes)
    grain = 1.0 + 0.12 * fade * (noise(lateral * 25.0, distance * 10.0) - 0.5)
    image = _sky_and_ground(w, sky, sand * grain[..., None])
    _, dunes = _ridge(w, noise, 0.01, 0.07, 2.0)
    return _blend(image, rgb(205, 150, 95), dunes)


def _stars(w: _World, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Point stars, at most one per square cell of the world, each at a random spot inside its cell."""
    table = rng.random((4, 64, 64), dtype=np.float32)
    ix, iy = np.floor(w.x / cell).astype(np.int64) & 63, np.floor(w.y / cell).astype(np.int64) & 63
    sx = (np.floor(w.x / cell) + 0.2 + 0.6 * table[0, iy, ix]) * cell
    sy = (np.floor(w.y / cell) + 0.2 + 0.6 * table[1, iy, ix]) * cell
    present = table[2, iy, ix] < 0.3
    radius = w.pixel * (0.6 + 0.8 * table[3, iy, ix])
    glow = np.exp(-(((w.x - sx) ** 2 + (w.y - sy) ** 2) / radius**2))
    return (glow * present * (0.5 + 0.5 * table[3, iy, ix])).astype(np.float32)


def _background_night(w: _World, noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    sky = _vertical_gradient(w, rgb(8, 12, 40), rgb(35, 45, 95), w.horizon - 0.6, w.horizon)
    sky = _blend(sky, rgb(250, 250, 235), _stars(w, rng, 0.05))
    moon_x, moon_y = rng.uniform(0.1, 0.9), w.horizon - rng.uniform(0.22, 0.36)
    moon = np.hypot(w.x - moon_x, w.y - moon_y)
    sky = _blend(sky, rgb(110, 120, 160), 0.35 * _smoothstep(0.12, 0.05, moon))
    sky = _blend(sky, rgb(240, 238, 215), _smoothstep(0.05, 0.045, moon))
    lateral, distance, fade = w.ground()
    tufts = _blades(w, noise, 12.0, 3.0)
    patches = noise.fbm(lateral * 1.5, distance * 0.8, 2)
    ground = rgb(30, 42, 48) * (0.7 + 0.5 * patches + 0.4 * fade * (tufts - 0.5))[..., None]
    image = _sky_and_ground(w, sky, ground)
    _, hills = _ridge(w, noise, 0.015, 0.08, 3.0)
    return _blend(image, rgb(14, 18, 34), hills)


def _background_water(w: _World, noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    sky = _vertical_gradient(w, rgb(100, 160, 225), rgb(205, 228, 245), w.horizon - 0.6, w.horizon)
    lateral, distance, fade = w.ground()
    near = np.clip((w.y - w.horizon) / 0.45, 0.0, 1.0)[..., None]
    water = rgb(90, 150, 205) + (rgb(25, 85, 160) - rgb(90, 150, 205)) * near
    water = np.broadcast_to(water, (*lateral.shape, 3))
    warp = noise.fbm(lateral * 1.2, distance * 0.5, 2)
    waves = np.sin(distance * 16.0 + 6.0 * warp)
    dashes = _smoothstep(0.4, 0.6, noise(lateral * 5.0, distance * 1.5)) * fade
    water = _blend(water, rgb(200, 225, 245), _smoothstep(0.75, 0.95, waves) * dashes)
    water = _blend(water, rgb(15, 55, 115), _smoothstep(-0.75, -0.95, waves) * dashes * 0.8)
    image = _sky_and_ground(w, sky, water)
    image = _clouds(w, noise, image, rgb(250, 250, 252), 0.8)
    _, shore = _ridge(w, noise, 0.004, 0.025, 6.0)
    return _blend(image, rgb(45, 95, 70), shore)


def _grey(value: float) -> np.ndarray:
    return np.full(3, value, dtype=np.float32)


def _blockout_boxes(w: _World, image: np.ndarray, rng: np.random.Generator) -> None:
    """Static grey boxes standing on the floor near the wall, drawn like a Workbench render (outlined, flat shaded)."""
    unit = 1.0 / w.pixel  # pixels per world unit
    x_origin, y_origin = w.x[0, 0] - 0.5 * w.pixel, w.y[0, 0] - 0.5 * w.pixel
    slots = np.linspace(-0.5, 1.5, 9)
    boxes = []
    for slot in slots:
        if rng.random() < 0.3:
            continue
        width, height = rng.uniform(0.07, 0.17), rng.uniform(0.08, 0.3)
        base = w.horizon + rng.uniform(0.0, 0.07)
        boxes.append((base, slot + rng.uniform(-0.07, 0.07), width, height, rng.uniform(0.2, 0.5)))
    for base, x, width, height, shade in sorted(boxes):  # far (higher on screen) first
        left, right = (x - width / 2 - x_origin) * unit, (x + width / 2 - x_origin) * unit
        bottom, top = (base - y_origin) * unit, (base - height - y_origin) * unit
        depth = 0.35 * width * unit
        side = 1.0 if x < 0.5 else -1.0  # we see the side facing the centre of view
        edge = right if side > 0 else left
        far = edge + side * depth
        top_back = top - 0.5 * depth
        shadow_box = (min(left, far) - 2, bottom - 3, max(right, far) + 2, bottom + 0.25 * depth + 3)
        shadow = Canvas(image, shadow_box)
        if not shadow.empty:
            d = box(shadow.px, shadow.py, (left + right) / 2, bottom + 1, (right - left) / 2, 0.2 * depth + 1.5)
            shadow.region *= 1.0 - 0.15 * coverage(d - 1.5)[..., None]
        c = Canvas(image, (min(left, far) - 2, top_back - 2, max(right, far) + 2, bottom + 2))
        if c.empty:
            continue
        front = box(c.px, c.py, (left + right) / 2, (top + bottom) / 2, (right - left) / 2, (bottom - top) / 2)
        top_quad = [(left, top), (right, top), (right + side * depth, top_back), (left + side * depth, top_back)]
        side_quad = [(edge, top), (far, top_back), (far, bottom - 0.5 * depth), (edge, bottom)]
        d_top, d_side = polygon(c.px, c.py, top_quad), polygon(c.px, c.py, side_quad)
        union = np.minimum(front, np.minimum(d_top, d_side))
        paint(c.region, union, _grey(shade))
        paint(c.region, d_top, _grey(min(shade + 0.14, 0.7)))
        paint(c.region, d_side, _grey(shade * 0.75))
        ring = coverage(union) - coverage(union + max(1.0, unit / 128.0))
        c.region += (DARK - c.region) * (0.85 * ring)[..., None]


def _background_blockout(w: _World, noise: _Noise, rng: np.random.Generator) -> np.ndarray:
    wall = _vertical_gradient(w, _grey(0.86), _grey(0.82), w.horizon - 0.6, w.horizon)
    # The wall darkens slightly just above the floor, like Workbench's cavity/ambient shading.
    wall = wall * (1.0 - 0.05 * _smoothstep(w.horizon - 0.08, w.horizon, w.y))[..., None]
    lateral, distance, fade = w.ground()
    near = np.clip((w.y - w.horizon) / 0.45, 0.0, 1.0)[..., None]
    floor = _grey(0.58) + (_grey(0.64) - _grey(0.58)) * near
    # A faint floor grid (one line per world unit in ground coordinates) so that pans and zooms read on the floor.
    gu, gv = lateral * 3.0, distance * 1.5
    line_width = 0.04
    grid = (np.abs(gu - np.round(gu)) < line_width) | (np.abs(gv - np.round(gv)) < line_width * 2.0)
    floor = floor * (1.0 - 0.07 * grid * fade)[..., None]
    image = np.ascontiguousarray(_sky_and_ground(w, wall, floor), dtype=np.float32)
    _blockout_boxes(w, image, rng)
    return image


_BACKGROUND_DRAW: dict[str, Callable[[_World, _Noise, np.random.Generator], np.ndarray]] = {
    "grass": _background_grass,
    "snow": _background_snow,
    "desert": _background_desert,
    "night": _background_night,
    "water": _background_water,
    "blockout": _background_blockout,
}


@dataclass(frozen=True)
class Backdrop:
    """The rendered background canvas and the world coordinate of its top-left pixel corner."""

    image: np.ndarray
    x_origin: float
    y_origin: float


def render_backdrop(spec: ClipSpec, ox: np.ndarray, oy: np.ndarray, zoom: np.ndarray, size: int) -> Backdrop:
    """Render the background over the union of all frames' views (one pixel margin), at size pixels per unit."""
    rng, horizon = scene_rng(spec.seed)
    noise = _Noise(rng)
    half = 0.5 / zoom
    x_origin = np.floor((0.5 + ox - half).min() * size - 1) / size
    y_origin = np.floor((0.5 + oy - half).min() * size - 1) / size
    width = int(np.ceil(((0.5 + ox + half).max() - x_origin) * size)) + 2
    height = int(np.ceil(((0.5 + oy + half).max() - y_origin) * size)) + 2
    pixel = 1.0 / size
    xs = (x_origin + (np.arange(width, dtype=np.float32) + 0.5) * pixel)[None, :]
    ys = (y_origin + (np.arange(height, dtype=np.float32) + 0.5) * pixel)[:, None]
    image = _BACKGROUND_DRAW[spec.background](_World(xs, ys, horizon, pixel), noise, rng)
    return Backdrop(np.ascontiguousarray(image, dtype=np.float32), float(x_origin), float(y_origin))


def _sample_axis(n: int, offset: float, zoom: float, origin: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Canvas index and interpolation weight along one axis for each output pixel of a view."""
    world = 0.5 + offset + ((np.arange(n) + 0.5) / n - 0.5) / zoom
    position = (world - origin) * n - 0.5
    index = np.clip(np.floor(position).astype(np.int64), 0, limit - 2)
    weight = np.clip(position - index, 0.0, 1.0).astype(np.float32)
    return index, weight


def view(backdrop: Backdrop, size: int, ox: float, oy: float, zoom: float) -> np.ndarray:
    """One frame's view of the backdrop, bilinearly resampled (separably: rows, then columns)."""
    canvas = backdrop.image
    iy, wy = _sample_axis(size, oy, zoom, backdrop.y_origin, canvas.shape[0])
    ix, wx = _sample_axis(size, ox, zoom, backdrop.x_origin, canvas.shape[1])
    rows = canvas[iy] + (canvas[iy + 1] - canvas[iy]) * wy[:, None, None]
    return rows[:, ix] + (rows[:, ix + 1] - rows[:, ix]) * wx[None, :, None]
