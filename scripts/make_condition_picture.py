"""Picture for the docs: the condition sources "Render Frame" and "Line Art" of the demo blockout, side by side.

Usage: python scripts/make_condition_picture.py [--frame 8] [--size 256] [--out docs/images/condition_sources.png]

Builds the demo scene (`blender_addon.demo_scene`, the walking figure), then renders one frame through the add-on's
own code: a Workbench camera render (what the "Render Frame" source sends as an RGB keyframe) and the line-art
render (what "Line Art" sends to the scribble model). bpy and numpy only; the add-on is imported, never enabled.
"""

import argparse
import sys
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `blender_addon` comes from this checkout

from blender_addon import demo_scene, line_art, png, reference  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=int, default=8, help="scene frame to render (default 8)")
    parser.add_argument("--size", type=int, default=256, help="width and height of each picture (default 256)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "condition_sources.png")
    args = parser.parse_args()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    demo_scene.build_blockout_scene(scene, "object", 16)
    keyframe = reference.render_camera_frames(scene, [args.frame], args.size, args.size)[0]
    sketch = line_art.render_line_art(scene, args.frame, args.size, args.size)[0]
    gap = np.full((args.size, 8, 3), 255, dtype=np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png.write_png(args.out, np.concatenate([keyframe, gap, sketch], axis=1))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
