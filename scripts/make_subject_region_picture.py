"""Picture for the docs: where colour adherence reads the subject, by the moving region and by the subject-mask network.

Usage: python scripts/make_subject_region_picture.py RESULT_DIR [RESULT_DIR ...] [--frames 8] [--out FILE]

For each result folder (a `motionclone generate` or benchmark result, with result.mp4 or frames/ and result.json),
two rows of evenly spaced frames: the region `motionclone evaluate --subject-region moving` reads (magenta box) and
the region of the subject-mask network, the default (cyan box), each frame labelled with the colour named there.
Prints the colour and class adherence each region gives, for the prompt in result.json.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from motionclone.backend.comparison import write_png
from motionclone.backend.evaluation import load_result
from motionclone.backend.evaluation.adherence import SubjectRegion, class_adherence, colour_adherence, name_colour
from motionclone.backend.evaluation.evaluate import subject_region_finder

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2  # the blocks model's 64 x 64 frames, drawn at 128 x 128
LABEL_WIDTH = 150
BOX_COLOURS = {"moving": (255, 0, 255), "network": (0, 220, 255)}  # per --subject-region


def row(frames: np.ndarray, regions: list[SubjectRegion | None], colour: tuple[int, int, int]) -> Image.Image:
    """Frames side by side, each with its region's box and the colour named there."""
    tiles = []
    for frame, region in zip(frames, regions, strict=True):
        tile = Image.fromarray(cv2.resize(frame, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST))
        draw = ImageDraw.Draw(tile)
        if region is None:
            draw.text((3, 2), "none", fill=colour, stroke_width=1, stroke_fill=(0, 0, 0))
        else:
            x, y, w, h = (v * SCALE for v in region.bbox)
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=2)
            draw.text((3, 2), name_colour(region.mean_rgb), fill=colour, stroke_width=1, stroke_fill=(0, 0, 0))
        tiles.append(np.asarray(tile))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def _score(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="result folders")
    parser.add_argument("--frames", type=int, default=8, help="frames shown per row (default 8)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "subject_regions.png")
    args = parser.parse_args()

    finders = {name: subject_region_finder(name) for name in BOX_COLOURS}  # the network is checked and loaded once
    rows: list[tuple[str, Image.Image]] = []
    for folder in args.results:
        loaded = load_result(folder)
        prompt = loaded.parameters.get("prompt")
        picks = np.round(np.linspace(0, len(loaded.frames) - 1, args.frames)).astype(int)
        for name, box_colour in BOX_COLOURS.items():
            find_regions, found_by = finders[name]
            regions = find_regions(loaded.frames)
            colour = colour_adherence(loaded.frames, prompt, None, regions, found_by)["value"]
            shape = class_adherence(loaded.frames, prompt, None, regions, found_by)["value"]
            print(f"{folder}: {name} region: colour {_score(colour)}, class {_score(shape)} ({prompt})")
            label = f"{name} region\ncolour {_score(colour)}\nclass {_score(shape)}"
            rows.append((label, row(loaded.frames[picks], [regions[i] for i in picks], box_colour)))
    width = LABEL_WIDTH + max(image.width for _, image in rows)
    sheet = Image.new("RGB", (width, sum(image.height for _, image in rows)), (255, 255, 255))
    draw, top = ImageDraw.Draw(sheet), 0
    for label, image in rows:
        sheet.paste(image, (LABEL_WIDTH, top))
        draw.multiline_text((6, top + 6), label, fill=(0, 0, 0))
        top += image.height
    print(f"Wrote {write_png(args.out, np.asarray(sheet))}")


if __name__ == "__main__":
    main()
