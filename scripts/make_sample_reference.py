"""Write a small synthetic reference clip (a square sliding across a gradient) as an mp4.

Usage: python scripts/make_sample_reference.py OUT.mp4 [--frames N] [--size PIXELS]
"""

import argparse
from pathlib import Path

from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import write_mp4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    path = write_mp4(make_moving_square_clip(args.frames, args.size, args.size), args.out, fps=8.0)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
