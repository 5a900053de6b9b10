"""Write a sample reference clip as an mp4: a procedural clip of the benchmark set, made in code, nothing downloaded.

Usage: python scripts/make_sample_reference.py OUT.mp4 [--clip ball_line] [--frames 16] [--size 128]

The clips are the procedural references of `scripts/bench_fidelity.py` (ball_line: a blue ball rolling right on the
grass; figure_walk, car_zigzag, cube_bounce, car_pan, cube_closer), drawn by the built-in model's data generator:
textured enough for `motionclone evaluate` to track, and in the built-in model's world. Prints the clip's own caption
and the prompt the benchmark uses with it (the same motion, another colour and scene).
"""

import argparse
import sys
from pathlib import Path

from motionclone.backend.evaluation.benchmark_references import REFERENCE_FPS, render_procedural, select_references
from motionclone.backend.video_io import write_mp4


def main() -> int:
    procedural = [reference for reference in select_references(blender=False)]
    names = [reference.name for reference in procedural]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the mp4 file to write")
    parser.add_argument("--clip", choices=names, default="ball_line", help="which clip (default ball_line)")
    parser.add_argument("--frames", type=int, default=16, help="frames (default 16, 2-256)")
    parser.add_argument("--size", type=int, default=128, help="width and height in pixels (default 128, 16-1024)")
    args = parser.parse_args()
    if not 2 <= args.frames <= 256:
        parser.error(f"--frames must be between 2 and 256, got {args.frames}")
    if not 16 <= args.size <= 1024:
        parser.error(f"--size must be between 16 and 1024, got {args.size}")
    reference = procedural[names.index(args.clip)]
    path = write_mp4(render_procedural(reference, args.size, args.frames), args.out, fps=REFERENCE_FPS)
    print(f"Wrote {path}: {reference.reference_caption}")
    print(f'Try: --prompt "{reference.prompt}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
