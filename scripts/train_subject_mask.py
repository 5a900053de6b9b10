"""Train the subject-mask network that `motionclone evaluate` reads subject colour and class with.

Usage: python scripts/train_subject_mask.py [--out backend/models/subject_mask] [--seed 3] [--clips 3000]
       [--steps 2500] [--batch 32] [--threads 2] [--device cpu]

The defaults are the recipe of the shipped network (docs/evaluation.md says how long it took and on what). It trains
on the blocks generator's frames and their exact subject masks, checks the mean IoU on frames of another seed, and
writes the weights, config.json (with the training record) and SHA256SUMS only when that check passes.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from motionclone.backend.devices import unusable_device
from motionclone.backend.evaluation.subject_mask import SUBJECT_MASK_DIR
from motionclone.backend.training.arguments import COUNT, SEED
from motionclone.backend.training.subject_mask_training import MaskTrainingSettings, train_subject_mask


def main() -> int:
    recipe = MaskTrainingSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SUBJECT_MASK_DIR, help="output folder (default: the shipped one)")
    parser.add_argument("--seed", type=SEED, default=recipe.seed, help=f"data and weight seed (default {recipe.seed})")
    parser.add_argument("--clips", type=COUNT, default=recipe.clips, help=f"training clips (default {recipe.clips})")
    parser.add_argument("--steps", type=COUNT, default=recipe.steps, help=f"optimiser steps (default {recipe.steps})")
    parser.add_argument("--batch", type=COUNT, default=recipe.batch, help=f"frames per step (default {recipe.batch})")
    parser.add_argument("--threads", type=COUNT, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args()
    if (reason := unusable_device(args.device)) is not None:
        parser.error(f"argument --device: {reason}")
    if args.seed == recipe.held_out_seed:
        parser.error(f"argument --seed: {recipe.held_out_seed} is the held-out check's seed; choose another")
    torch.set_num_threads(args.threads)
    settings = replace(recipe, seed=args.seed, clips=args.clips, steps=args.steps, batch=args.batch)
    try:
        record = train_subject_mask(settings, args.out, device=args.device)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"Wrote {args.out} in {record['seconds']:.0f} s: held-out IoU {record['held_out_iou']:.3f} clean, "
        f"{record['held_out_iou_degraded']:.3f} degraded (loss {record['first_loss']:.3f} -> {record['last_loss']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
