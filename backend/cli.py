"""The `motionclone` command line: parses arguments, calls the library, maps errors to exit codes. No bpy.

Exit codes: 0 success, 2 invalid arguments or parameters, 3 model not found, 4 unreadable reference video,
5 other backend error, 130 interrupted.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import JobCancelled, ModelNotFoundError, MotionCloneError, ParameterError, VideoInputError

EXIT_PARAMETERS = 2
EXIT_MODEL = 3
EXIT_VIDEO = 4
EXIT_BACKEND = 5
EXIT_INTERRUPTED = 130

# CLI flag -> MotionCloneParams field, for the flags that have their own short names.
PARAMETER_FLAGS = {
    "frames": "num_frames",
    "width": "width",
    "height": "height",
    "steps": "num_inference_steps",
    "guidance_steps": "guidance_steps",
    "guidance_weight": "motion_guidance_weight",
    "cfg_scale": "cfg_scale",
    "seed": "seed",
    "motion_seed": "motion_seed",
    "negative_prompt": "negative_prompt",
    "fps": "fps",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motionclone", description="Clone the motion of a reference video onto a new, text-prompted video."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="generate a video in this process")
    add_generate_arguments(generate)
    return parser


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `generate` (and, later, `submit`)."""
    from .engine.parameters import CONFIG_PRESETS
    from .models.registry import PRESETS

    parser.add_argument("--reference", required=True, help="reference video file or folder of frames")
    parser.add_argument("--prompt", required=True, help="what the new video shows")
    parser.add_argument("--negative-prompt", help="negative prompt (default: the official one)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--preset", default="sd15-animatediff-v3", choices=sorted(PRESETS), help="model preset")
    parser.add_argument(
        "--config",
        default="camera",
        choices=sorted(CONFIG_PRESETS),
        help="official MotionClone config: camera (100 steps, 50 guided) or object (300, 180)",
    )
    parser.add_argument("--frames", type=int, help="number of frames (default 16)")
    parser.add_argument("--width", type=int, help="width in pixels, a multiple of 8 (default 512)")
    parser.add_argument("--height", type=int, help="height in pixels, a multiple of 8 (default 512)")
    parser.add_argument("--steps", type=int, help="denoising steps (config default)")
    parser.add_argument("--guidance-steps", type=int, help="motion-guided steps (config default)")
    parser.add_argument("--guidance-weight", type=float, help="motion guidance weight (default 2000)")
    parser.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default 7.5, official form)")
    parser.add_argument("--seed", type=int, help="seed (default 2025)")
    parser.add_argument("--motion-seed", type=int, help="separate seed for the motion extraction (default: --seed)")
    parser.add_argument("--fps", type=float, help="frame rate of result.mp4 (default 8)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other parameter, value in JSON (e.g. --set motion_norm='\"cross-frame\"')",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model dtype (preset default)")
    parser.add_argument("--base", help="SD-1.5 base: diffusers folder or hub id")
    parser.add_argument("--checkpoint", help="DreamBooth single-file checkpoint (.safetensors)")
    parser.add_argument("--motion-adapter", help="AnimateDiff v3 motion adapter: folder or hub id")
    parser.add_argument("--local-files-only", action="store_true", help="never contact the model hub")
    parser.add_argument("--cache-dir", type=Path, help="folder for cached motion representations")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def params_from_args(args: argparse.Namespace) -> Any:
    from .engine import MotionCloneParams

    overrides: dict[str, Any] = {"prompt": args.prompt}
    for flag, field_name in PARAMETER_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[field_name] = value
    for assignment in args.set:
        name, separator, raw = assignment.partition("=")
        if not separator:
            raise ParameterError("--set", f"expects NAME=VALUE, got {assignment!r}")
        try:
            overrides[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[name.strip()] = raw  # a bare word such as cross-frame
    return MotionCloneParams.from_config(args.config, **overrides)


def preset_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.preset == "tiny":
        return {}
    options: dict[str, Any] = {"local_files_only": args.local_files_only}
    for flag in ("base", "checkpoint", "motion_adapter"):
        if getattr(args, flag):
            options[flag] = getattr(args, flag)
    return options


class ProgressBar:
    """A tqdm bar per stage on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, step: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, tqdm(total=total, desc=f"{stage:>8}", unit="step", leave=True)
        self.bar.total = total
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def command_generate(args: argparse.Namespace) -> int:
    from .generate import GenerateJob, default_device, run_generate_job

    job = GenerateJob(
        reference=args.reference,
        params=params_from_args(args),
        out_dir=args.out,
        preset=args.preset,
        preset_options=preset_options_from_args(args),
        device=args.device or default_device(),
        dtype=args.dtype,
        cache_dir=args.cache_dir,
    )
    bar = ProgressBar(enabled=not args.no_progress)
    started = time.perf_counter()
    try:
        output, paths = run_generate_job(job, progress=bar)
    finally:
        bar.close()
    print(f"Wrote {paths['video']} ({len(output.frames)} frames) in {time.perf_counter() - started:.1f} s")
    print(f"Frames: {paths['frames']}  Metadata: {paths['metadata']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"generate": command_generate}
    try:
        return handlers[args.command](args)
    except ParameterError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_PARAMETERS
    except ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MODEL
    except VideoInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_VIDEO
    except JobCancelled as error:
        print(f"cancelled: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MotionCloneError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BACKEND
