"""Train the built-in `blocks` model: procedural clips, VAE, text encoder, image UNet, motion modules, cross-attention.

    .venv/bin/python scripts/train_blocks_model.py --work-dir train-work --out backend/models/blocks_model

The run is resumable: run the same command again after a stop and it continues from the last checkpoint (every
100 steps) in --work-dir. --device cuda trains on a GPU. Each stage is gated on a check of what it learned (see
backend/training/checks.py); a failed check stops the run with the numbers it measured.

--motion-low-res-steps N starts the motion stage with N steps of --motion-low-res-batch clips on latents pooled
2 x 2 (16 x 16 positions instead of 32 x 32, about a quarter of the time per clip, the image UNet frozen), then runs
its --motion-steps at full resolution.

--unet-channels and --unet-layers-per-block shape a new model's UNet and motion modules (default: 16 64 96 128
and 2, the shipped model's; 32 64 96 128, SD-1.5's doubling of widths, takes about a third more time per
motion-stage step, and one layer per block about a third less).

--init-from MODEL_DIR continues a trained model (for example the shipped one) instead: --motion-low-res-steps and
--motion-steps more motion-stage steps on the same clips, then --colour-steps steps of the cross-attention stage,
with its VAE, text encoder and tokenizer kept (the --vae-*, --text-* and --image-* settings do not apply;
--motion-steps 0 runs the cross-attention stage alone), for example on a GPU:

    .venv/bin/python scripts/train_blocks_model.py --init-from backend/models/blocks_model \
        --work-dir train-more --out blocks-model-longer --motion-steps 20000 --device cuda
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from motionclone.backend.devices import unusable_device
from motionclone.backend.errors import ModelNotFoundError
from motionclone.backend.training.architecture import check_unet_shape
from motionclone.backend.training.arguments import COUNT, RATE, SEED, STEPS
from motionclone.backend.training.continuation import continue_training
from motionclone.backend.training.stages import CheckpointUnreadable, StageSettings
from motionclone.backend.training.train import TrainingCheckFailed, TrainingPlan, train_blocks_model

STAGES = ("vae", "text", "image", "motion_low_res", "motion", "colour")
STEP_HELP = {
    "motion_low_res": "motion-stage steps on latents pooled 2 x 2, before the --motion-steps at full resolution "
    "(the image UNet frozen; about a quarter of the time per clip; default 0: none)"
}


def main() -> int:
    defaults = TrainingPlan(work_dir=Path("."), out_dir=Path("."))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="data, checkpoints and latents (resumable)")
    parser.add_argument("--out", type=Path, required=True, help="the exported model folder")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--data-seed", type=SEED, default=defaults.data_seed, help="seed of the procedural clips")
    parser.add_argument("--clips", type=COUNT, default=defaults.clips, help="number of training clips")
    parser.add_argument(
        "--unet-channels",
        type=COUNT,
        nargs=4,
        metavar=("FULL", "HALF", "QUARTER", "EIGHTH"),
        help="the UNet's width at each of its four resolutions, multiples of 8 "
        f"(default: {' '.join(map(str, defaults.unet_channels))})",
    )
    parser.add_argument(
        "--unet-layers-per-block",
        type=COUNT,
        help=f"ResNet blocks (each with a motion module) per down block (default: {defaults.unet_layers_per_block})",
    )
    parser.add_argument("--seed", type=SEED, default=defaults.seed, help="seed of initialisation and batches")
    for stage in STAGES:
        settings: StageSettings = getattr(defaults, stage)
        flag = stage.replace("_", "-")
        parser.add_argument(f"--{flag}-steps", type=STEPS, default=settings.steps, help=STEP_HELP.get(stage))
        parser.add_argument(f"--{flag}-batch", type=COUNT, default=settings.batch_size)
        parser.add_argument(f"--{flag}-lr", type=RATE, default=settings.learning_rate)
        if stage in ("image", "motion_low_res", "motion", "colour"):
            parser.add_argument(f"--{flag}-subject-weight", type=RATE, default=settings.subject_weight)
            parser.add_argument(f"--{flag}-subject-weight-from", type=STEPS, default=settings.subject_weight_from)
    parser.add_argument(
        "--motion-spatial-lr",
        type=RATE,
        default=defaults.motion.spatial_learning_rate,
        help="learning rate of the image UNet's weights in the motion stage (0 freezes them)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL_DIR",
        help="continue this trained model folder: --motion-steps more motion-stage steps, then --colour-steps",
    )
    parser.add_argument("--threads", type=COUNT, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--skip-checks", action="store_true", help="continue even when a stage's check fails")
    args = parser.parse_args()
    if (reason := unusable_device(args.device)) is not None:
        parser.error(f"argument --device: {reason}")
    if args.init_from and args.init_from.resolve() == args.out.resolve():
        parser.error(f"--out must be another folder than --init-from ({args.init_from}): the source is read from")
    if args.init_from and args.motion_steps <= 0 and args.motion_low_res_steps <= 0 and args.colour_steps <= 0:
        parser.error("--motion-steps, --motion-low-res-steps and --colour-steps are all 0: there is nothing to train")
    shape = {}  # the UNet's shape where the flags give it; the plan's defaults otherwise
    if args.unet_channels is not None:
        shape["unet_channels"] = tuple(args.unet_channels)
    if args.unet_layers_per_block is not None:
        shape["unet_layers_per_block"] = args.unet_layers_per_block
    if args.init_from and shape:
        flags = " and ".join("--" + name.replace("_", "-") for name in shape)
        parser.error(f"{flags}: only a new model takes a shape; --init-from continues {args.init_from} with its own")
    try:
        check_unet_shape(shape.get("unet_channels", defaults.unet_channels), defaults.unet_layers_per_block)
    except ValueError as error:  # the only value the flags' types let through unchecked: a UNet width
        parser.error(f"argument --unet-channels: {error}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    def stage(name: str) -> StageSettings:
        return StageSettings(
            steps=getattr(args, f"{name}_steps"),
            batch_size=getattr(args, f"{name}_batch"),
            learning_rate=getattr(args, f"{name}_lr"),
            subject_weight=getattr(args, f"{name}_subject_weight", 0.0),
            subject_weight_from=getattr(args, f"{name}_subject_weight_from", 0),
            spatial_learning_rate=args.motion_spatial_lr if name == "motion" else 0.0,
            latent_pool=getattr(defaults, name).latent_pool,
        )

    plan = TrainingPlan(
        work_dir=args.work_dir,
        out_dir=args.out,
        data_seed=args.data_seed,
        clips=args.clips,
        **shape,
        vae=stage("vae"),
        text=stage("text"),
        image=stage("image"),
        motion_low_res=stage("motion_low_res"),
        motion=stage("motion"),
        colour=stage("colour"),
        device=args.device,
        seed=args.seed,
        run_checks=not args.skip_checks,
    )
    started = time.perf_counter()
    try:
        folder = continue_training(plan, args.init_from) if args.init_from else train_blocks_model(plan)
    except (TrainingCheckFailed, ModelNotFoundError, CheckpointUnreadable) as error:
        print(f"Stopped: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {folder} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
