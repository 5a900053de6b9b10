"""Render the demo blockout (`blender_addon.demo_scene`) as a benchmark reference. bpy and numpy only, no torch.

Usage: python scripts/bench_blender_render.py --kind object|camera --out DIR [--frames 16] [--size 64]

Run by `scripts/bench_fidelity.py` in a child process, so that Blender and torch never share a process. Builds the
scene exactly as the demo does (the scene file is not changed), renders every frame with Workbench from the scene
camera through the add-on's own `render_camera_frames` (the path the Generate button takes), and writes:

    DIR/frames.npy   uint8 (frames, size, size, 3), top row first
    DIR/info.json    the scene kind, size, frame count, Blender version, and for "object" the walking figure's
                     projected size per frame (fractions of the frame) so a reader can tell whether it is tiny

The add-on is imported, never enabled: `demo_scene` and `reference` need only bpy.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `blender_addon` comes from this checkout, as in the add-on tests

from blender_addon import demo_scene, reference  # noqa: E402


def figure_extent(scene: bpy.types.Scene, camera: bpy.types.Object, frame: int) -> dict[str, float] | None:
    """The figure's screen bounding box on one frame, as fractions of the frame (x to the right, y downwards).

    None when the scene has no figure (the camera-motion kind).
    """
    parts = [obj for obj in scene.objects if obj.name.startswith("Figure ") and obj.type == "MESH"]
    if not parts:
        return None
    scene.frame_set(frame)
    points = []
    for obj in parts:
        for corner in obj.bound_box:
            projected = world_to_camera_view(scene, camera, obj.matrix_world @ _vector(corner))
            points.append((projected.x, 1.0 - projected.y))  # camera view has y up; images have y down
    xs, ys = zip(*points, strict=True)
    left, right, top, bottom = min(xs), max(xs), min(ys), max(ys)
    return {
        "left": round(left, 4),
        "top": round(top, 4),
        "width": round(right - left, 4),
        "height": round(bottom - top, 4),
    }


def _vector(values: Any) -> Any:
    from mathutils import Vector

    return Vector(tuple(values))


def render(kind: str, frames: int, size: int, out: Path) -> dict[str, Any]:
    """Build the demo scene of this kind in a fresh empty file, render it, and write frames.npy and info.json."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    camera = demo_scene.build_blockout_scene(scene, kind, frames)
    scene_frames = list(range(1, frames + 1))  # one scene frame per model frame, as the demo's scene is set up
    pixels = reference.render_camera_frames(scene, scene_frames, size, size, engine="WORKBENCH")
    extents = [figure_extent(scene, camera, frame) for frame in scene_frames]
    known = [e for e in extents if e is not None]
    info: dict[str, Any] = {
        "kind": kind,
        "frames": frames,
        "size": size,
        "engine": "WORKBENCH",
        "blender": bpy.app.version_string,
        "figure_bbox": extents if known else None,
        "figure_height_fraction": (
            {"min": min(e["height"] for e in known), "max": max(e["height"] for e in known)} if known else None
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "frames.npy", pixels)
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the demo blockout as a benchmark reference (frames.npy).")
    parser.add_argument("--kind", choices=demo_scene.SCENE_KINDS, required=True, help="object or camera motion")
    parser.add_argument("--out", type=Path, required=True, help="folder for frames.npy and info.json")
    parser.add_argument("--frames", type=int, default=16, help="frames to render (default 16)")
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels (default 64)")
    args = parser.parse_args(argv)
    info = render(args.kind, args.frames, args.size, args.out)
    print(json.dumps({"kind": info["kind"], "figure_height_fraction": info["figure_height_fraction"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if "--" not in sys.argv else sys.argv[sys.argv.index("--") + 1 :]))
