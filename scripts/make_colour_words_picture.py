"""Picture for the docs: single frames of a `blocks` model's image UNet, one row per colour word, same noises per row.

Usage: python scripts/make_colour_words_picture.py [--model-folder DIR] [--prompt "a {colour} cube ..."]
       [--cfg-scale 4] [--out FILE]

Shows which colour words the image model draws as asked, apart from motion, guidance and the sampler's config: each
row samples the prompt with one of the ten colour words from the same noises (20 DDIM steps, CFG 4 as the `blocks`
config samples and the training's colour-words check measures, or --cfg-scale). Prints, per colour, the share of
pixels near that colour's training RGB, and how many words the colour-words check counts as drawn (each word's own
colour more than under any other word), so that a newly trained model can be compared with the shipped one.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image, ImageDraw
from transformers import CLIPTextModel

from motionclone.backend.errors import ModelNotFoundError
from motionclone.backend.models.blocks import BLOCKS_MODEL_DIR
from motionclone.backend.models.manifest import verify_manifest
from motionclone.backend.training.checks import (
    COLOUR_WORDS_CAPTION,
    COLOUR_WORDS_CFG_SCALE,
    colour_share,
    colour_word_frames,
    colour_words_drawn,
)
from motionclone.backend.training.data import COLOURS
from motionclone.backend.training.word_tokenizer import load_word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CELL = 64  # the model's native frame size
LABEL_WIDTH = 70
SAMPLES = 6
DOCS_PICTURE = "blocks_colour_words.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-folder", type=Path, help="a trained blocks model folder (default: the shipped one)")
    parser.add_argument("--prompt", default=COLOUR_WORDS_CAPTION, help="with {colour}")
    parser.add_argument(
        "--cfg-scale", type=float, default=COLOUR_WORDS_CFG_SCALE, help=f"default {COLOUR_WORDS_CFG_SCALE}, the check's"
    )
    parser.add_argument("--seed", type=int, default=3, help="seed of the noises every row shares (default 3)")
    parser.add_argument(
        "--out",
        type=Path,
        help="picture to write (default: docs/images/blocks_colour_words.png for the shipped model, else "
        "colour_words.png in the current folder, so that trying another model leaves the docs' picture alone)",
    )
    args = parser.parse_args()
    try:
        filled = args.prompt.format(colour="red")
    except (KeyError, IndexError, ValueError):
        filled = args.prompt
    if "{colour}" not in args.prompt or filled == args.prompt:
        parser.error("--prompt must contain {colour}, where each colour word goes, and no other {...}")
    if not 1.0 <= args.cfg_scale <= 30.0:
        parser.error(f"--cfg-scale must be between 1 and 30, got {args.cfg_scale}")

    folder = args.model_folder or BLOCKS_MODEL_DIR
    out = args.out or (Path("colour_words.png") if args.model_folder else ROOT / "docs" / "images" / DOCS_PICTURE)
    try:
        verify_manifest(folder)
    except ModelNotFoundError as error:
        parser.error(f"--model-folder: {error}")
    float32 = {"torch_dtype": torch.float32}
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", **float32).eval()  # the image UNet alone
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **float32).eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae", **float32).eval()
    tokenizer = load_word_tokenizer(folder / "tokenizer")
    frames_by_word = colour_word_frames(
        unet, text_encoder, tokenizer, vae, args.prompt, args.cfg_scale, samples=SAMPLES, seed=args.seed
    )
    sheet = Image.new("RGB", (LABEL_WIDTH + SAMPLES * CELL, len(COLOURS) * CELL), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (colour, frames) in enumerate(frames_by_word.items()):
        for column, frame in enumerate(frames):
            sheet.paste(Image.fromarray(frame), (LABEL_WIDTH + column * CELL, row * CELL))
        draw.text((6, row * CELL + CELL // 2 - 6), colour, fill="black")
        print(f"{colour:>7}: {float(np.mean(colour_share(frames, colour))):.3f} of the pixels near its RGB")
    drawn, _ = colour_words_drawn(frames_by_word)
    missed = [colour for colour in COLOURS if colour not in drawn]
    print(f"colour words drawn (own colour more than under any other word): {len(drawn)} of {len(COLOURS)}", end="")
    print(f"; not: {', '.join(missed)}" if missed else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)  # full RGB: a palette would shift the very colours the picture is about
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
