"""Write the procedural "blocks" training set (captioned clips of coloured subjects) to one .npz file.

Usage: python scripts/make_blocks_dataset.py --out blocks.npz [--seed 1] [--count 3000] [--size 64] [--frames 16]
       [--workers 2] [--preview preview.png]

The defaults write the training recipe's own data set (scripts/train_blocks_model.py).
"""

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from motionclone.backend.training.architecture import FRAME_SIZE, NUM_FRAMES
from motionclone.backend.training.arguments import COUNT, SEED, at_least
from motionclone.backend.training.data import MIN_SIZE, clip_at, write_dataset
from motionclone.backend.training.train import TrainingPlan

PREVIEW_CLIPS = 8
PREVIEW_FRAMES = 8
CAPTION_STRIP = 14  # pixels under each row of the preview for the caption


def write_preview(path: Path, seed: int, size: int, frames: int) -> Path:
    """A grid of the data set's first clips (rows), each shown at evenly spaced frames, with its caption below."""
    picks = np.linspace(0, frames - 1, min(PREVIEW_FRAMES, frames)).round().astype(int)
    row_height = size + CAPTION_STRIP
    sheet = Image.new("RGB", (len(picks) * size, PREVIEW_CLIPS * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row in range(PREVIEW_CLIPS):
        clip = clip_at(seed, row, size, frames)
        for column, frame in enumerate(picks):
            sheet.paste(Image.fromarray(clip.frames[frame]), (column * size, row * row_height))
        draw.text((4, row * row_height + size + 1), clip.caption, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output .npz file")
    recipe = TrainingPlan(work_dir=Path("."), out_dir=Path("."))
    parser.add_argument("--seed", type=SEED, default=recipe.data_seed, help="data seed (default: the recipe's)")
    parser.add_argument("--count", type=COUNT, default=recipe.clips, help="clips (default: the recipe's)")
    parser.add_argument("--size", type=at_least(MIN_SIZE), default=FRAME_SIZE, help="frame width and height, pixels")
    parser.add_argument("--frames", type=COUNT, default=NUM_FRAMES, help="frames per clip")
    parser.add_argument("--workers", type=COUNT, default=2, help="processes rendering clips")
    parser.add_argument("--preview", type=Path, help="also write a PNG grid of the first 8 clips")
    args = parser.parse_args()

    begin = time.perf_counter()
    path = write_dataset(args.out, args.seed, args.count, args.size, args.frames, args.workers, progress=True)
    seconds = time.perf_counter() - begin
    megabytes = path.stat().st_size / 2**20
    rate = args.count / max(seconds, 1e-9)
    print(f"Wrote {args.count} clips to {path} in {seconds:.1f} s ({rate:.1f} clips/s), {megabytes:.1f} MiB")
    if args.preview is not None:
        print(f"Preview: {write_preview(args.preview, args.seed, args.size, args.frames)}")


if __name__ == "__main__":
    main()
