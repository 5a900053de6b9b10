"""The `motionclone` command line: parses arguments, calls the library, maps errors to exit codes. No bpy.

Exit codes: 0 success, 2 invalid arguments or parameters, 3 model not found, 4 unreadable reference video,
5 other backend error, 130 interrupted.
"""

import argparse
import contextlib
import dataclasses
import difflib
import json
import logging
import math
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from ..protocol.endpoints import DEFAULT_ENDPOINT
from ..protocol.errors import BackendUnavailable, JobCancelledError, JobFailed
from .argument_types import at_least
from .errors import (
    JobCancelled,
    ModelNotFoundError,
    MotionCloneError,
    ParameterError,
    ResultFolderInUse,
    ResultNotStored,
    VideoInputError,
    VideoInputWarning,
    out_of_memory_summary,
)

EXIT_PARAMETERS = 2
EXIT_MODEL = 3
EXIT_VIDEO = 4
EXIT_BACKEND = 5
EXIT_INTERRUPTED = 130

MAX_PORT = 65535
JOB_ID = re.compile(r"[0-9a-f]{32}")  # a uuid4().hex, as the server makes them
HEADER_ALLOWANCE = 64 << 10  # bytes a Submit's header may add to its frames (the protocol's header limit)
MAX_FPS = 240.0  # the highest `fps` validate_params takes

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
    "motion_source": "motion_source",
    "inversion_prompt": "inversion_prompt",
    "inversion_steps": "inversion_steps",
    "object_pair": "semantic_object_pair",
    "parity_prev_timestep": "inversion_parity_prev_timestep",
}


def with_flag(error: ParameterError) -> str:
    """A parameter's error with the flag that sets it, for a parameter that has one (`num_frames`: --frames)."""
    flags = {name: "--" + flag.replace("_", "-") for flag, name in PARAMETER_FLAGS.items()}
    flags.update(
        prompt="--prompt",
        frame_step="--frame-step",
        out="--out",
        condition="--condition",
        condition_frames="--condition-frames",
        condition_type="--condition-type",
    )
    flag = flags.get(error.name)
    return f"{error} (set with {flag})" if flag else str(error)


def build_parser(commands_with_arguments: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `motionclone` parser. Only the subcommands in `commands_with_arguments` (None: all) get their arguments;
    the others are listed by name and help only.

    Some arguments take their choices and defaults from modules that import torch and diffusers (seconds); `info`
    must answer fast, `serve` must print its endpoint before the ML stack loads, and `motionclone --help` must work
    where only the protocol's dependencies are installed, so `main` builds only the command that runs.
    """
    parser = argparse.ArgumentParser(
        prog="motionclone", description="Clone the motion of a reference video onto a new, text-prompted video."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in COMMANDS.items():
        subparser = commands.add_parser(name, help=help_text)
        if commands_with_arguments is None or name in commands_with_arguments:
            add_arguments(subparser)
    return parser


OVERWRITE_HELP = "replace a result already in --out (frames, video, metadata, evaluation); without it, one is refused"


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--cache-dir", type=Path, help="folder for cached motion representations")
    add_condition_arguments(parser)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind", help=f"ZeroMQ endpoint to listen on (default {DEFAULT_ENDPOINT}); not together with --port"
    )
    parser.add_argument(
        "--port",
        type=int,
        help="listen on tcp://127.0.0.1:PORT; 0: a free port the system picks (the first line printed names the "
        "endpoint); not together with --bind",
    )
    parser.add_argument("--results-dir", type=Path, default=Path("motionclone-results"), help="where results wait")
    parser.add_argument("--keys", type=Path, help="CurveZMQ key folder written by `motionclone keygen`")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without keys (unsafe)")
    parser.add_argument("--retention-hours", type=float, default=24.0, help="keep unfetched results this long")
    parser.add_argument("--max-queue", type=int, default=64, help="most queued jobs")
    parser.add_argument(
        "--max-queued-mb",
        type=int,
        default=4096,
        help="most MiB of reference and condition frames that waiting jobs hold together (default 4096)",
    )
    parser.add_argument("--preview-every", type=int, default=5, help="preview image every N steps (0: none)")
    parser.add_argument(
        "--parent-pid",
        type=int,
        metavar="PID",
        help="stop cleanly (as on SIGTERM) within about 2 s after process PID has exited, e.g. the Blender that "
        "started this backend; checked once the model is loaded",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        metavar="PATH",
        help="once listening, write PATH atomically: JSON with endpoint, pid, server_version, preset, device, "
        "results_dir and started_at, so a later launcher can find and reuse this backend; removed on a clean stop "
        "while it still names this process",
    )
    parser.add_argument(
        "--workers",
        default="local",
        metavar="local|ray[:ADDRESS]",
        help="where jobs run: local (default: one job at a time in this process), ray (a local Ray instance with a "
        "pool of worker actors), ray:auto or ray:HOST:PORT (a running Ray cluster; see docs/scaling.md); needs "
        "the ray extra (pip install -e '.[ray]' in the repository)",
    )
    parser.add_argument(
        "--ray-workers",
        type=int,
        metavar="N",
        help="with --workers ray: number of worker actors (default: the cluster's GPUs with --device cuda, else 1)",
    )
    parser.add_argument(
        "--ray-cpus-per-worker",
        type=float,
        default=1.0,
        metavar="N",
        help="with --workers ray and --device cpu: CPUs each worker actor reserves (default 1)",
    )
    add_model_arguments(parser)


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    add_job_arguments(parser)
    add_condition_arguments(parser)


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job id `submit` printed (32 lowercase hex characters)")
    parser.add_argument("--out", type=Path, required=True, help="result folder to write")
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument(
        "--wait", type=seconds(0.0), help="seconds to wait for a job still running (default: until it ends)"
    )
    add_server_arguments(parser)


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job id `submit` printed (32 lowercase hex characters)")
    add_server_arguments(parser)


def add_keygen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path)
    parser.add_argument("--client", action="append", default=[], help="client key name (repeatable; default client)")


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    """`info` takes no arguments."""


def add_condition_arguments(parser: argparse.ArgumentParser) -> None:
    """Image- and sketch-to-video: SparseCtrl condition images and the frames they stand on."""
    parser.add_argument(
        "--condition",
        type=Path,
        action="append",
        help="SparseCtrl condition image (repeatable: one per condition frame, or one for all of them)",
    )
    parser.add_argument(
        "--condition-frames", default="0", help="frames the condition images stand on, e.g. 0,15 (default 0)"
    )
    parser.add_argument(
        "--condition-type",
        choices=("rgb", "scribble"),
        help="keyframes (rgb) or sketches (scribble) (default: the --sparsectrl kind, else rgb)",
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the server is and how to reach it."""
    parser.add_argument("--server", default="tcp://127.0.0.1:5555", help="server endpoint")
    parser.add_argument("--server-key", type=Path, help="the server's public key file (server.key) for CurveZMQ")
    parser.add_argument("--client-key", type=Path, help="this client's secret key file (clients/NAME.key_secret)")
    parser.add_argument(
        "--timeout",
        type=seconds(0.1),
        default=10.0,
        help="seconds without an answer before the server counts as unreachable: when connecting, for `status`, and "
        "during a job",
    )


def seconds(minimum: float) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, at least `minimum`."""
    return at_least(minimum, float, unit="seconds")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """What `motionclone evaluate` compares, and how."""
    from .evaluation.adherence import COLOURS, DEFAULT_SUBJECT_REGION, SUBJECT_REGIONS, SUBJECTS
    from .evaluation.motion_fidelity import DEFAULT_MOVING_FRACTION, DEFAULT_REGION, DEFAULT_STILL_STEP, REGIONS
    from .evaluation.tracks import DEFAULT_GRID, TrackerSettings

    tracker = TrackerSettings()
    parser.add_argument("--reference", required=True, help="the reference video file or folder of frames")
    parser.add_argument("--result", required=True, help="a result folder (result.mp4, frames/, result.json) or video")
    parser.add_argument("--prompt", help="the result's prompt (default: the prompt in result.json)")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for metrics.json and tracks.png, replaced there (default: RESULT/evaluation or VIDEO-evaluation)",
    )
    parser.add_argument(
        "--grid", type=int, default=DEFAULT_GRID, help=f"tracking grid points per side (default {DEFAULT_GRID})"
    )
    parser.add_argument(
        "--region",
        choices=REGIONS,
        default=DEFAULT_REGION,
        help="tracks entering motion fidelity: moving (default: tracks that move, in each clip), all, or box",
    )
    parser.add_argument(
        "--box",
        type=float,
        nargs=4,
        metavar=("X0", "Y0", "X1", "Y1"),
        help="region box: grid box in result pixels (default: around the reference's moving tracks on frame 0)",
    )
    parser.add_argument(
        "--moving-threshold",
        type=float,
        default=DEFAULT_MOVING_FRACTION,
        help="region moving: a moving track gets this far from its start, as a fraction of the longer side "
        f"(default {DEFAULT_MOVING_FRACTION})",
    )
    parser.add_argument(
        "--still-step",
        type=float,
        default=DEFAULT_STILL_STEP,
        help=f"MF: steps shorter than this (pixels) count as no motion (default {DEFAULT_STILL_STEP}; 0: bare formula)",
    )
    parser.add_argument(
        "--window", type=int, default=tracker.window, help=f"Lucas-Kanade window in pixels (default {tracker.window})"
    )
    parser.add_argument(
        "--levels", type=int, default=tracker.levels, help=f"Lucas-Kanade pyramid levels (default {tracker.levels})"
    )
    parser.add_argument(
        "--fb-threshold",
        type=float,
        default=tracker.fb_threshold,
        help=f"forward-backward error limit, pixels per 256 px of the longer side (default {tracker.fb_threshold}, "
        f"at least {tracker.fb_min_px} px)",
    )
    parser.add_argument("--clip-model", help="local CLIP folder (transformers layout); without it CLIP is not measured")
    parser.add_argument("--cotracker", help="local CoTracker checkpoint; needs the `cotracker` package installed")
    parser.add_argument("--subject-colour", help=f"expected colour, overriding the prompt: {', '.join(COLOURS)}")
    parser.add_argument("--subject-class", help=f"expected subject, overriding the prompt: {', '.join(SUBJECTS)}")
    parser.add_argument(
        "--subject-region",
        choices=SUBJECT_REGIONS,
        default=DEFAULT_SUBJECT_REGION,
        help="where colour and class are read. network (default): the region the subject-mask network marks; "
        "moving: the region that differs from the clip's per-pixel median (misses a subject under a moving camera "
        "or one that stays put)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for CLIP and CoTracker (default cpu)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which weights run, and where."""
    from .models.presets import PRESET_NAMES

    parser.add_argument(
        "--preset",
        choices=sorted(PRESET_NAMES),
        help="model preset (default: blocks, the built-in trained model, on a CPU; sd15-animatediff-v3 on CUDA)",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model dtype (preset default)")
    parser.add_argument("--base", help="SD-1.5 base: diffusers folder or hub id")
    parser.add_argument("--checkpoint", help="DreamBooth single-file checkpoint (.safetensors)")
    parser.add_argument("--motion-adapter", help="AnimateDiff v3 motion adapter: folder or hub id")
    parser.add_argument("--local-files-only", action="store_true", help="never contact the model hub")
    parser.add_argument(
        "--sparsectrl",
        choices=("rgb", "scribble"),
        help="load a SparseCtrl model of this kind for image- (rgb) or sketch-to-video (scribble); "
        "`generate --condition` implies it",
    )
    parser.add_argument(
        "--sparsectrl-model",
        help="SparseCtrl weights: diffusers folder or hub id, or the official v3_sd15_sparsectrl_{rgb,scribble}.ckpt "
        "(default guoyww/animatediff-sparsectrl-rgb or -scribble)",
    )
    parser.add_argument(
        "--motion-lora",
        metavar="PATH[:SCALE]",
        help="AnimateDiff v3 domain-adapter LoRA (v3_sd15_adapter.ckpt or the animatediff-motion-lora-v1-5-3 "
        "folder), fused into the UNet at SCALE (default 1.0)",
    )
    parser.add_argument(
        "--lora",
        metavar="PATH[:SCALE]",
        action="append",
        default=[],
        help="image-model LoRA (kohya or diffusers .safetensors), fused into the UNet and text encoder at SCALE "
        "(default 1.0); repeatable",
    )


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """What to generate: shared by `generate` and `submit`."""
    from .engine.parameters import CONFIG_PRESETS

    parser.add_argument("--reference", required=True, help="reference video file or folder of frames")
    parser.add_argument("--prompt", required=True, help="what the new video shows")
    parser.add_argument(
        "--negative-prompt", help="negative prompt (default: the config's; the official one, empty for blocks)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument(
        "--config",
        choices=sorted(CONFIG_PRESETS),
        help="official MotionClone config: camera (100 steps, 50 guided) or object (300, 180); "
        "camera-fast (40, 20) or object-fast (80, 48): the same in 40%% or less of the work; "
        "inversion-{astronaut,fox,street,walk,wolf}: the five example configs of the inversion-based method; "
        "blocks: the built-in model's config (default with the blocks preset; camera otherwise)",
    )
    parser.add_argument("--frames", type=int, help="number of frames (default: the preset's native 16)")
    parser.add_argument(
        "--frame-step",
        type=int,
        help="take every Nth reference frame (a long shot at its own pace: 24 fps with step 2 gives 12 fps); "
        "without --frames as many as the clip holds (up to 256), without --fps at the clip's rate / N; clips longer "
        "than --set context_length=16 frames run in context windows",
    )
    parser.add_argument(
        "--width", type=int, help="width in pixels, a multiple of 8 (default: the preset's native size; blocks 64)"
    )
    parser.add_argument(
        "--height", type=int, help="height in pixels, a multiple of 8 (default: the preset's native size; blocks 64)"
    )
    parser.add_argument("--steps", type=int, help="denoising steps (config default)")
    parser.add_argument("--guidance-steps", type=int, help="motion-guided steps (config default)")
    parser.add_argument(
        "--guidance-weight", type=float, help="motion guidance weight (default: the config's; camera 2000, blocks 4000)"
    )
    parser.add_argument(
        "--cfg-scale", type=float, help="classifier-free guidance scale (default: the config's; 7.5, blocks 4)"
    )
    parser.add_argument("--seed", type=int, help="seed (default: the config's; 2025, the i2v configs 76739)")
    parser.add_argument("--motion-seed", type=int, help="separate seed for the motion extraction (default: --seed)")
    parser.add_argument("--fps", type=float, help="frame rate of result.mp4 (default 8)")
    parser.add_argument(
        "--motion-source",
        choices=["single-step", "inversion"],
        help="single-step extraction (current method, default) or DDIM inversion (paper v1-v3)",
    )
    parser.add_argument("--inversion-prompt", help="inversion mode: a prompt describing the reference video")
    parser.add_argument("--inversion-steps", type=int, help="inversion mode: DDIM inversion steps (default 1000)")
    parser.add_argument(
        "--object-pair",
        nargs=2,
        metavar=("REF_WORD", "NEW_WORD"),
        help="inversion mode: word of the inversion prompt and word of the prompt for location-aware guidance",
    )
    parser.add_argument(
        "--parity-prev-timestep",
        action="store_const",
        const=True,
        help="inversion mode: the official off-by-one previous timestep t - 1000//N (bug B12)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other parameter, value in JSON (e.g. --set motion_norm='\"cross-frame\"')",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def params_from_args(
    args: argparse.Namespace,
    preset: str | None = None,
    native_size: dict[str, int] | None = None,
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """The job's parameters from the command line. What the flags leave out comes from `preset`: its native frame
    count and size and its default config, or, from a server, the `native_size` and `config` it announced.
    `overrides` is `flag_overrides(args)` when it was made already (with --frame-step it reads the clip)."""
    from .engine import MotionCloneParams
    from .models.presets import default_config

    overrides = dict(flag_overrides(args) if overrides is None else overrides)
    if native_size is None and preset is not None:
        from .models.registry import NATIVE_SIZES

        native_size = NATIVE_SIZES.get(preset, {})
    for name, value in (native_size or {}).items():
        overrides.setdefault(name, value)
    return MotionCloneParams.from_config(args.config or config or default_config(preset), **overrides)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters the command line sets: the prompt, the parameter flags, --set, and what --frame-step implies."""
    overrides: dict[str, Any] = {"prompt": args.prompt}
    for flag, field_name in PARAMETER_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[field_name] = value
    assignments = parse_assignments(args.set)
    overrides.update(assignments)
    if args.frame_step is not None:
        check_step_not_set_twice(assignments)
        overrides.update(step_overrides(args, overrides))
    return overrides


def check_step_not_set_twice(assignments: dict[str, Any]) -> None:
    """--frame-step sets frame_sampling and frame_step together; a --set of either would leave one of them
    contradicting the frame count and fps derived from the other, so the pair is refused rather than guessed."""
    both = sorted({"frame_step", "frame_sampling"} & set(assignments))
    if both:
        raise ParameterError(
            "--frame-step",
            f"cannot be combined with --set {both[0]}=...: --frame-step N sets frame_sampling=step and frame_step=N; "
            "keep one of the two",
        )


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`--set NAME=VALUE` arguments as parameter overrides; VALUE is JSON, or a bare word such as cross-frame.

    Raises:
        ParameterError: an argument without "=".
    """
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        name, separator, raw = assignment.partition("=")
        if not separator:
            raise ParameterError("--set", f"expects NAME=VALUE, got {assignment!r}")
        try:
            overrides[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[name.strip()] = raw
    return overrides


def step_overrides(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `--frame-step N`: every Nth frame, the clip's frame count and rate unless given."""
    from .video_io import check_frame_step, probe_clip

    step = args.frame_step
    check_frame_step(step)  # before the clip is read, with the bounds every other caller holds
    chosen: dict[str, Any] = {"frame_sampling": "step", "frame_step": step}
    if "num_frames" in overrides and "fps" in overrides:
        return chosen
    total, source_fps = probe_clip(args.reference)
    if "num_frames" not in overrides:
        chosen["num_frames"] = stepped_frame_count(total, step)
    if "fps" not in overrides:
        chosen["fps"] = stepped_fps(source_fps, step)
    return chosen


def stepped_frame_count(total: int, step: int) -> int:
    """The frames `--frame-step` takes from a clip of `total` frames, refused (naming --frame-step, not --frames,
    which the user did not type) below 2, and capped, with a warning, at the longest windowed clip."""
    from ..protocol.windows import sampled_count
    from .engine.parameters import MAX_WINDOWED_FRAMES

    count = sampled_count(total, step)
    if count < 2:
        raise ParameterError(
            "frame_step",
            f"{step} takes {count} frame of the reference's {total}; a video needs at least 2: use a step of at most "
            f"{max(1, total - 1)}, or a longer reference",
        )
    if count > MAX_WINDOWED_FRAMES:
        print(
            f"warning: --frame-step {step} takes {count} frames of the reference's {total}; only the first "
            f"{MAX_WINDOWED_FRAMES} are used: raise --frame-step to span the whole clip, or set --frames to choose "
            "how many",
            file=sys.stderr,
        )
    return min(count, MAX_WINDOWED_FRAMES)


def stepped_fps(source_fps: float, step: int) -> float:
    """The clip's rate / `step`, refused (naming --frame-step, not --fps, which the user did not type) above what
    result.mp4 takes."""
    fps = source_fps / step
    if not 0 < fps <= MAX_FPS:
        raise ParameterError(
            "frame_step",
            f"{step} of the reference's {source_fps:g} fps gives {fps:g} fps, and result.mp4 takes at most "
            f"{MAX_FPS:g}: use a larger --frame-step, or set the rate with --fps",
        )
    return fps


def resolve_preset(args: argparse.Namespace) -> tuple[str, str]:
    """(preset, device): the named ones, else the machine's default device and that device's default preset."""
    from .generate import default_device
    from .models.registry import default_preset

    device = args.device or default_device()
    # With Ray workers the GPUs may be on other nodes: this machine only needs to know the device's name.
    check_device_flag(device, here=getattr(args, "workers", "local") == "local")
    return args.preset or default_preset(device), device


def check_device_flag(device: str, here: bool = True) -> None:
    """`--device`: a torch device (one this machine has, when `here`): a missing GPU is said before the model loads."""
    from .devices import unusable_device

    if (reason := unusable_device(device, here)) is not None:
        raise ParameterError("--device", reason)


def condition_from_args(args: argparse.Namespace, params: Any) -> Any:
    """The SparseCtrl condition of `--condition`, `--condition-frames` and `--condition-type`, at the video's size;
    None without `--condition`."""
    import numpy as np

    from .engine.sparsectrl import SparseCondition
    from .video_io import read_clip, resize_frames

    if not args.condition:
        return None
    try:
        frames = tuple(int(part) for part in str(args.condition_frames).split(","))
    except ValueError as error:
        text = f"must be frame numbers like 0,15, got {args.condition_frames!r}"
        raise ParameterError("condition_frames", text) from error
    paths = list(args.condition)
    if len(paths) == 1:
        paths = paths * len(frames)
    if len(paths) != len(frames):
        raise ParameterError("condition", f"{len(paths)} images for {len(frames)} condition frames")
    for path in paths:
        if not Path(path).expanduser().exists():
            raise VideoInputError(f"--condition {path} does not exist: check the path of the condition image")
    first_frames = np.stack([read_clip(path).frames[0] for path in paths])
    images = resize_frames(first_frames, params.height, params.width, sampling="image")  # as the official code
    return SparseCondition(args.condition_type or getattr(args, "sparsectrl", None) or "rgb", images, frames)


# Presets whose weights are built in, so SD-1.5 weight flags have nothing to replace.
BUILT_IN_PRESETS = {
    "blocks": "the built-in model, the default on a CPU",
    "tiny": "random weights for tests",
}


def preset_options_from_args(
    args: argparse.Namespace, preset: str, condition_kind: str | None = None
) -> dict[str, Any]:
    """The preset options of the model flags: LoRAs for every preset, the SparseCtrl kind (`--sparsectrl`, or that
    of a `generate --condition`) where the preset has SparseCtrl, and the weight sources of sd15-animatediff-v3."""
    from .models.lora import MOTION_LORA_FLAG, parse_lora_spec

    if args.sparsectrl and condition_kind and args.sparsectrl != condition_kind:
        raise ParameterError(
            "--sparsectrl", f"is {args.sparsectrl!r} but the condition is {condition_kind!r} (--condition-type)"
        )
    kind = args.sparsectrl or condition_kind
    options: dict[str, Any] = {"loras": [absolute_lora(parse_lora_spec(text)) for text in args.lora]}
    if args.motion_lora:
        options["motion_lora"] = absolute_lora(parse_lora_spec(args.motion_lora, MOTION_LORA_FLAG))
    if preset in BUILT_IN_PRESETS:
        for flag in ("base", "checkpoint", "motion_adapter", "sparsectrl_model"):
            if getattr(args, flag):  # silently running a built-in model instead of the weights given would mislead
                raise ParameterError(
                    "--" + flag.replace("_", "-"),
                    f"gives SD-1.5 weights, but the preset is {preset!r} ({BUILT_IN_PRESETS[preset]}): "
                    "choose SD-1.5 with --preset sd15-animatediff-v3 (and --device cuda for a GPU)",
                )
        # tiny builds a random SparseCtrl model of that kind; blocks has none, and its loader refuses it by name.
        return {**options, "sparsectrl": kind} if kind else options
    options["local_files_only"] = args.local_files_only
    for flag in ("base", "checkpoint", "motion_adapter", "sparsectrl_model"):
        if getattr(args, flag):
            options[flag] = absolute_if_local(getattr(args, flag))
    if kind:
        options["sparsectrl"] = kind
    return options


def absolute_if_local(value: str) -> str:
    """A weights path that exists here, made absolute (with ~ expanded): Ray workers load it in other working folders,
    and the model loaders do not expand ~. Anything else (a hub id) as written."""
    path = Path(value).expanduser()
    # absolute(), not resolve(): a file in the Hugging Face cache links to a blob without its suffix, which the
    # loaders read the format from.
    return str(path.absolute()) if path.exists() else value


def absolute_lora(spec: Any) -> Any:
    return dataclasses.replace(spec, path=absolute_if_local(spec.path))


def hide_loading_bars(wanted: bool = True) -> None:
    """transformers draws a bar of its own while it loads weights (diffusers too, for some models): keep it to a
    terminal, where it is read, and out of logs, pipes and `--no-progress` runs."""
    if wanted and sys.stderr.isatty():
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


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
    from .engine.parameters import validate_params
    from .generate import GenerateJob, run_generate_job
    from .results import check_result_folder
    from .video_io import existing_path

    # What the user can fix is refused before the model loads.
    existing_path(args.reference)
    check_result_folder(args.out, args.overwrite)
    hide_loading_bars(wanted=not args.no_progress)
    preset, device = resolve_preset(args)
    params = params_from_args(args, preset)
    validate_params(params)
    condition = condition_from_args(args, params)
    options = preset_options_from_args(args, preset, condition.kind if condition is not None else None)
    job = GenerateJob(
        reference=args.reference,
        params=params,
        out_dir=args.out,
        preset=preset,
        preset_options=options,
        device=device,
        dtype=args.dtype,
        cache_dir=checked_folder("--cache-dir", args.cache_dir),
        condition=condition,
        overwrite=args.overwrite,
    )
    bar = ProgressBar(enabled=not args.no_progress)
    started = time.perf_counter()
    try:
        output, paths = run_generate_job(job, progress=bar)
    finally:
        bar.close()
    print(f"Wrote {paths['video']} ({len(output.frames)} frames) in {time.perf_counter() - started:.1f} s")
    print(f"Frames: {paths['frames']}  Metadata: {paths['metadata']}")
    show_result_warnings(output.metadata)
    return 0


def show_result_warnings(metadata: dict[str, Any]) -> None:
    """What the engine noted about a finished job (a prompt cut at the text encoder's length), "warning: ..."."""
    for warning in metadata.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)


# `evaluate`'s arguments whose flags have other names, so that an error names what the user typed.
EVALUATE_FLAGS = {
    "moving_fraction": "--moving-threshold",
    "still_step_px": "--still-step",
    "window": "--window",
    "levels": "--levels",
    "fb_threshold": "--fb-threshold",
    "grid": "--grid",
    "region": "--region",
    "box": "--box",
    "subject_colour": "--subject-colour",
    "subject_class": "--subject-class",
    "subject_region": "--subject-region",
    "device": "--device",
    "out": "--out",
}


def command_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import default_out_dir, evaluate
    from .evaluation.tracks import TrackerSettings

    out_dir = args.out if args.out is not None else default_out_dir(args.result)
    if args.clip_model is not None:  # the only model it loads through transformers
        hide_loading_bars()
    try:
        report = evaluate(
            args.reference,
            args.result,
            prompt=args.prompt,
            out_dir=out_dir,
            grid=args.grid,
            region=args.region,
            box=tuple(args.box) if args.box else None,
            moving_fraction=args.moving_threshold,
            still_step_px=args.still_step,
            tracker=TrackerSettings(window=args.window, levels=args.levels, fb_threshold=args.fb_threshold),
            cotracker=args.cotracker,
            clip_model=args.clip_model,
            subject_colour=args.subject_colour,
            subject_class=args.subject_class,
            subject_region=args.subject_region,
            device=args.device,
        )
    except ParameterError as error:  # name the flag that was typed, not the function's argument
        if error.name not in EVALUATE_FLAGS:
            raise
        raise ParameterError(EVALUATE_FLAGS[error.name], error.detail) from error
    metrics = report["metrics"]
    fidelity = metrics["motion_fidelity"]
    tracks = fidelity["tracks"]
    # A degenerate score is a number by the formula, not a measure of the result: say so next to it.
    status = "" if fidelity["status"] == "measured" else f" [{fidelity['status']}: {fidelity['reason']}]"
    print(
        f"Motion fidelity {report['motion_fidelity']:.4f}{status} (symmetric; released-code variant "
        f"{report['motion_fidelity_released']:.4f}) with {fidelity['tracker']['name']}, grid {args.grid}x{args.grid}, "
        f"{fidelity['frames']} frames at {fidelity['resolution']['width']}x{fidelity['resolution']['height']}, "
        f"region {args.region}: {tracks['reference']['used']} reference / {tracks['result']['used']} result tracks"
    )
    for name, label in (
        ("colour_adherence", "Colour adherence"),
        ("class_adherence", "Class adherence"),
        ("clip_text_alignment", "CLIP text alignment"),
        ("clip_temporal_consistency", "CLIP temporal consistency"),
    ):
        entry = metrics[name]
        if entry["status"] == "measured":
            expected = f" ({entry['expected']})" if "expected" in entry else ""
            print(f"{label}: {entry['value']:.4f}{expected}")
        else:
            print(f"{label}: not measured ({entry['reason']})")
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Wrote {report['files']['metrics']} and {report['files']['tracks_image']}")
    return 0


def command_serve(args: argparse.Namespace) -> int:
    from .server.config import ServerConfig
    from .server.listener import open_listener

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = ServerConfig(
        bind=endpoint_from_args(args),
        results_dir=checked_folder("--results-dir", args.results_dir),
        keys_dir=checked_folder("--keys", args.keys, must_exist=True),
        insecure=args.insecure,
        retention_s=checked_positive("--retention-hours", args.retention_hours) * 3600.0,
        max_queue=checked_at_least("--max-queue", args.max_queue, 1),
        max_queued_bytes=checked_at_least("--max-queued-mb", args.max_queued_mb, 1) << 20,
        preview_every=checked_at_least("--preview-every", args.preview_every, 0),
        parent_pid=checked_parent_pid(args.parent_pid),
        state_file=args.state_file,
        workers=checked_workers(args.workers),
        ray_workers=checked_positive("--ray-workers", args.ray_workers),
        ray_cpus_per_worker=checked_positive("--ray-cpus-per-worker", args.ray_cpus_per_worker),
    )
    listener = open_listener(config)
    # The first line, before torch loads: a launcher learns the endpoint (also the port `--port 0` got) at once.
    # Clients may connect now; their Welcome comes once the model is loaded.
    print(f"MotionClone backend starting on {listener.endpoint}", flush=True)
    try:
        config = config_with_model(config, args)
        hide_loading_bars()  # after the first line, which must not wait for transformers and diffusers to import
        from .server import serve
    except BaseException:
        listener.close()
        raise

    def announce(server: Any) -> None:
        print(f"MotionClone backend listening on {server.endpoint} ({config.preset} on {config.device})", flush=True)

    serve(config, ready=announce, listener=listener)
    print("MotionClone backend stopped.", flush=True)
    return 0


def checked_workers(workers: str) -> str:
    """`--workers`: "local", "ray", or "ray:ADDRESS" (ADDRESS "auto" or HOST:PORT)."""
    kind, _, address = workers.partition(":")
    if workers == "local" or (kind == "ray" and (address == "" or address.strip())):
        return workers
    raise ParameterError(
        "--workers",
        f"must be local, ray, ray:auto or ray:HOST:PORT, got {workers!r} (local: one in-process worker; ray: a local "
        "Ray instance; ray:auto / ray:HOST:PORT: a running Ray cluster)",
    )


def checked_positive(flag: str, value: float | None) -> Any:
    """`value` of `flag` when it is None or a finite number above 0."""
    if value is not None and not (0 < value < math.inf):
        raise ParameterError(flag, f"must be a number above 0, got {value}")
    return value


def checked_at_least(flag: str, value: int, minimum: int) -> int:
    """`value` of `flag` when it is at least `minimum`."""
    if value < minimum:
        raise ParameterError(flag, f"must be at least {minimum}, got {value}")
    return value


def checked_folder(flag: str, path: Path | None, must_exist: bool = False) -> Path | None:
    """`path` of `flag` unless a file stands where the folder goes (or, with `must_exist`, nothing is there)."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise ParameterError(flag, f"{path} is a file: give a folder")
    if must_exist and not path.is_dir():
        raise ParameterError(flag, f"{path} does not exist: give the folder `motionclone keygen` wrote")
    return path


def endpoint_from_args(args: argparse.Namespace) -> str:
    """The endpoint of `--port` or `--bind` (never both), else the default one."""
    if args.port is None:
        if args.bind is not None:
            check_bind_endpoint(args.bind)
            check_endpoint_port("--bind", args.bind)
        return args.bind or DEFAULT_ENDPOINT
    if args.bind is not None:
        raise ParameterError(
            "--port",
            f"cannot be combined with --bind (got --port {args.port} and --bind {args.bind}): use --port N for "
            "tcp://127.0.0.1:N, or --bind ENDPOINT for any other endpoint, not both",
        )
    if not 0 <= args.port <= MAX_PORT:
        raise ParameterError("--port", f"must be 0 to {MAX_PORT}, got {args.port} (0: a free port the system picks)")
    # ZeroMQ's spelling of "any free port" is *; the real port is read back from the bound socket.
    return f"tcp://127.0.0.1:{args.port or '*'}"


def check_bind_endpoint(endpoint: str) -> None:
    """`--bind`: tcp://HOST:PORT (PORT a number or *), ipc://PATH or inproc://NAME; anything else would reach the
    encryption check or ZeroMQ, whose errors do not say what an endpoint looks like."""
    scheme, _, rest = endpoint.partition("://")
    host, _, port = rest.rpartition(":")
    if (scheme in ("ipc", "inproc") and rest) or (scheme == "tcp" and host and (port == "*" or port.isdigit())):
        return
    raise ParameterError(
        "--bind",
        f"must be a ZeroMQ endpoint such as tcp://127.0.0.1:5555, tcp://0.0.0.0:5555 (every interface, with --keys), "
        f"tcp://[::1]:5555 or ipc:///tmp/motionclone.sock, got {endpoint!r}; or use --port N for tcp://127.0.0.1:N",
    )


def check_endpoint_port(flag: str, endpoint: str) -> None:
    """A tcp:// endpoint's port, when it is a number, must be a TCP port (ZeroMQ would quietly take it modulo 65536)."""
    transport, _, address = endpoint.partition("://")
    port = address.rpartition(":")[2]
    if transport == "tcp" and port.isdigit() and not 0 <= int(port) <= MAX_PORT:
        raise ParameterError(flag, f"port must be 0 to {MAX_PORT}, got {port} in {endpoint}")


def checked_parent_pid(pid: int | None) -> int | None:
    """`--parent-pid`, refused unless it names a running process (a parent gone already would stop us at once)."""
    if pid is None:
        return None
    from .server.parent import process_exists

    if pid <= 0:
        raise ParameterError("--parent-pid", f"must be a positive process id, got {pid}")
    if not process_exists(pid):
        raise ParameterError(
            "--parent-pid",
            f"{pid} is not a running process: pass the pid of the program this backend should stop with (such as "
            "Blender), or leave the flag out",
        )
    return pid


def config_with_model(config: Any, args: argparse.Namespace) -> Any:
    """`config` with the model flags: preset, its options, device and dtype (this imports torch)."""
    preset, device = resolve_preset(args)
    options = preset_options_from_args(args, preset)
    return dataclasses.replace(config, preset=preset, preset_options=options, device=device, dtype=args.dtype)


def command_info(args: argparse.Namespace) -> int:
    """Print one JSON object about this backend and machine (`info.collect_info`); loads no model."""
    from .info import collect_info

    print(json.dumps(collect_info(), indent=2), flush=True)
    return 0


def command_keygen(args: argparse.Namespace) -> int:
    from ..protocol.keys import client_key_paths, server_key_paths, write_client_keys, write_server_keys

    names = args.client or ["client"]
    directory = Path(args.directory)
    if directory.exists() and not directory.is_dir():
        raise ParameterError("directory", f"{directory} is a file: give a folder for the keys")
    lowered = [name.lower() for name in names]  # file names may not tell case apart
    twice = sorted({name for name, low in zip(names, lowered, strict=True) if lowered.count(low) > 1})
    if twice:
        raise ParameterError("--client", f"{', '.join(twice)} given more than once: give each client its own name")
    server_pair = server_key_paths(directory)
    if sum(path.exists() for path in server_pair) == 1:
        there, missing = sorted(server_pair, key=lambda path: not path.exists())
        raise ParameterError(
            "directory", f"{directory} holds {there.name} but not {missing.name}: use a new folder for new keys"
        )
    for name in names:  # every name is checked before anything is written
        try:
            taken = [path for path in client_key_paths(directory, name) if path.exists()]
        except ValueError as error:
            raise ParameterError("--client", str(error)) from error
        if taken:
            raise ParameterError("--client", f"{taken[0]} exists already: give client '{name}' another name")
    server_public = server_pair[0]
    if server_public.exists():  # a folder made before: its server keys stay, so its clients keep working
        print(f"Server keys: {server_public} is kept (clients that hold it still connect); adding clients.")
    else:
        server_public, _ = write_server_keys(directory)
        print(f"Server keys: {server_public} (give this file to clients) and its secret next to it (keep it private).")
    for name in names:
        client_public, client_secret = write_client_keys(directory, name)
        print(f"Client '{name}': give {client_secret} to that client; {client_public} stays with the server.")
    print(f"Start the server with: motionclone serve --keys {args.directory} --bind tcp://0.0.0.0:5555")
    return 0


def server_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The CurveZMQ keys of `--server-key` and `--client-key`, as `Client` takes them."""
    from ..protocol.keys import load_key_pair, load_public_key

    keys: dict[str, Any] = {}
    try:
        if args.server_key:
            keys["server_public_key"] = load_public_key(args.server_key)
    except (ValueError, OSError) as error:
        raise ParameterError("--server-key", str(error)) from error
    try:
        if args.client_key:
            keys["client_public_key"], keys["client_secret_key"] = load_key_pair(args.client_key)
    except (ValueError, OSError) as error:
        raise ParameterError("--client-key", str(error)) from error
    return keys


def open_client(args: argparse.Namespace, keys: dict[str, Any]) -> Any:
    """A protocol client for `--server` (not started); a malformed endpoint is an error naming the flag."""
    from ..protocol.client import Client

    check_endpoint_port("--server", args.server)
    try:
        # The timeout is also how long the server may stay silent during a job (heartbeats at a third of it).
        liveness = {"dead_after": args.timeout, "heartbeat_interval": min(1.0, args.timeout / 3)}
        return Client(args.server, client_name="motionclone-cli", **liveness, **keys)
    except ValueError as error:
        raise ParameterError("--server", str(error).removeprefix("`endpoint` ")) from error


def server_options(args: argparse.Namespace) -> str:
    """The flags that reach the same server again, for a command the user can copy."""
    options = [f"--server {args.server}"]
    if args.server_key:
        options.append(f"--server-key {args.server_key}")
    if args.client_key:
        options.append(f"--client-key {args.client_key}")
    return " ".join(options)


def command_status(args: argparse.Namespace) -> int:
    from ..protocol.errors import UNKNOWN_TYPE, JobFailed

    with open_client(args, server_keys(args)) as client:
        welcome = client.wait_connected(args.timeout)
        try:
            status = client.server_status(args.timeout)
        except JobFailed as error:
            if error.code != UNKNOWN_TYPE:
                raise
            status = None  # a backend older than the status message
    print(f"MotionClone backend {welcome.server_version} at {args.server}")
    print(f"Device: {welcome.device}")
    print(f"Model presets: {', '.join(welcome.presets)} (default {welcome.default_preset})")
    native = welcome.limits.get("native_size")
    if isinstance(native, dict) and {"num_frames", "width", "height"} <= set(native):
        config = welcome.limits.get("default_config", "camera")
        print(f"Jobs that leave them out: {native['num_frames']} frames of {native['width']} x {native['height']}, "
              f"config {config}")  # fmt: skip
    one_pass, windowed = welcome.limits.get("max_output_frames"), welcome.limits.get("max_windowed_frames")
    if isinstance(one_pass, int) and isinstance(windowed, int):
        print(f"Frames per job: up to {windowed}; one pass of its motion model takes up to {one_pass}, so longer jobs "
              "run in overlapping context windows")  # fmt: skip
    kinds = welcome.limits.get("condition_types") or []
    print(f"Conditions: {', '.join(kinds) if kinds else 'none (text-to-video only)'}")
    if status is None:
        print("Queue: unknown (this backend does not answer status requests)")
    else:
        print(f"Queue: {status.running} running, {status.queued} waiting; {status.completed} done since the start")
        for worker in status.workers:
            print(f"Worker {worker.get('name')}: {worker.get('state')} on {worker.get('device')}")
    shown = ("condition_types", "native_size", "default_config", "max_output_frames", "max_windowed_frames")
    limits = ", ".join(f"{key} {value}" for key, value in sorted(welcome.limits.items()) if key not in shown)
    print(f"Limits: {limits}")
    return 0


def command_fetch(args: argparse.Namespace) -> int:
    from ..protocol.errors import JobFailed
    from .results import check_result_folder

    checked_job_id(args.job_id)
    check_result_folder(args.out, args.overwrite)
    with open_client(args, server_keys(args)) as client:
        client.wait_connected(args.timeout)
        try:
            event = client.fetch_result(args.job_id, args.wait)
        except JobFailed as error:
            if error.code == "unknown_job":
                raise JobFailed(
                    error.code,
                    f"{args.server} does not know job {args.job_id}: it never finished there (a server that stopped "
                    "drops queued and running jobs, and a job cancelled or stopped with Ctrl+C on submit leaves no "
                    "result), its result was already fetched and acknowledged, or it expired after the server's "
                    "retention time",
                ) from error
            raise
        except TimeoutError as error:
            raise TimeoutError(
                f"{error}: it is still queued or running; fetch it again later with the same command"
            ) from error
        store_result(client, event, args.out, args.overwrite, args)
    return 0


def checked_job_id(job_id: str) -> str:
    """`job_id` when it has the form of a job id: anything else is a typo the server need not be asked about."""
    if not JOB_ID.fullmatch(job_id):
        raise ParameterError(
            "job_id",
            f'must be the 32 lowercase hex characters that `motionclone submit` printed after "Job", got {job_id!r}',
        )
    return job_id


def command_cancel(args: argparse.Namespace) -> int:
    job_id = checked_job_id(args.job_id)
    with open_client(args, server_keys(args)) as client:
        client.wait_connected(args.timeout)
        outcome = cancel_outcome(client, job_id, args.timeout)
    if outcome == "finished":
        print(f"Job {job_id} had already finished: get its result with motionclone fetch {job_id} "
              f"{server_options(args)} --out FOLDER")  # fmt: skip
    elif outcome == "cancelled":
        print(f"Cancelled job {job_id}.")
    else:
        print(f"Job {job_id} is cancelled: a queued job is dropped at once, a running one stops before its next step.")
    return 0


def cancel_outcome(client: Any, job_id: str, timeout: float) -> str:
    """Cancel `job_id`: "cancelled", "finished" (its result is being stored), or "requested" (queued or running).

    The server answers a Cancel only for a finished or unknown job; a queued or running one is stopped and its
    "cancelled" goes to the connection that follows it. A Status request sent right after the Cancel is answered
    after it, so its answer coming first means the job was queued or running.

    Raises:
        JobFailed: the server does not have the job queued or running.
        TimeoutError: no answer within `timeout`.
    """
    from ..protocol.errors import UNKNOWN_JOB

    request_id = client.cancel(job_id)
    probe_id = client.status()
    deadline = time.monotonic() + timeout
    while (event := client.next_event(max(0.0, deadline - time.monotonic()))) is not None:
        if event.kind == "disconnected":
            raise BackendUnavailable(f"lost the connection to the server while cancelling job {job_id}")
        if event.kind == "cancelled" and event.job_id == job_id:
            return "cancelled"
        if event.request_id == probe_id:
            return "requested"
        if event.request_id != request_id:
            continue
        if event.kind == "job_status":
            return "finished"
        if event.kind == "error":
            message = event.message
            if message.code == UNKNOWN_JOB:
                raise JobFailed(
                    UNKNOWN_JOB,
                    f"the server has no queued or running job {job_id}: it has ended (a finished result waits for "
                    "`motionclone fetch`), it was never submitted to this server, or the server has restarted since",
                )
            raise JobFailed(message.code, message.message, message.hint, message.field)
    raise TimeoutError(f"the server did not answer the cancel of job {job_id} within {timeout:g} s")


def command_submit(args: argparse.Namespace) -> int:
    from ..protocol.client import Condition
    from ..protocol.errors import BackendUnavailable
    from .engine.parameters import validate_params
    from .results import check_result_folder
    from .video_io import existing_path, prepare_reference

    # Refuse bad parameters, a missing reference and an unreadable condition before connecting. The reference is
    # decoded once it is sampled at the server's size (a file that exists but does not decode is reported then).
    existing_path(args.reference)
    check_result_folder(args.out, args.overwrite)
    overrides = flag_overrides(args)
    early = params_from_args(args, overrides=overrides)
    check_before_connecting(early, overrides, config_given=args.config is not None)
    condition_from_args(args, early)
    keys = server_keys(args)
    bar = ProgressBar(enabled=not args.no_progress)

    accepted: list[str] = []

    def show(event: Any) -> None:
        if event.kind == "accepted":
            accepted.append(event.job_id)
            print(f"Job {event.job_id} accepted, queue position {event.message.queue_position}", flush=True)
        elif event.kind == "queued":
            print(f"Queue position {event.message.queue_position}", flush=True)
        elif event.kind == "progress" and event.message.preview is None:
            bar(event.message.stage, event.message.step, event.message.total)

    with open_client(args, keys) as client:
        welcome = client.wait_connected(args.timeout)
        # Size, frame count and config left out are the server's model's, as for `generate` with that preset.
        params = params_from_args(
            args,
            welcome.default_preset,
            native_size=welcome.limits.get("native_size"),
            config=welcome.limits.get("default_config"),
            overrides=overrides,
        )
        validate_params(params)  # before the reference is read and sent
        check_message_size(client, params, args)
        clip = prepare_reference(
            args.reference,
            params.num_frames,
            params.height,
            params.width,
            params.resize_mode,
            params.frame_sampling,
            params.frame_step,
        )
        sparse = condition_from_args(args, params)
        condition = None if sparse is None else Condition(sparse.kind, sparse.images, sparse.frames)
        # Only the sampled frames travel, so the server takes all of them in order (linspace over exactly
        # num_frames frames) and records this command's sampling in result.json, for `motionclone evaluate`.
        sent = dataclasses.replace(params, frame_sampling="linspace", frame_step=1)
        sampling = {
            "frame_sampling": params.frame_sampling,
            "frame_step": params.frame_step,
            "indices": [int(i) for i in clip.indices],
        }
        try:
            with terminate_as_interrupt():
                event = client.run_job(
                    clip.frames,
                    sent.to_dict(),
                    fps=clip.fps,
                    on_event=show,
                    condition=condition,
                    reference_sampling=sampling,
                )
        except BackendUnavailable as error:
            if error.job_id is None:
                raise
            raise BackendUnavailable(
                f"{error} Once the server answers, try: motionclone fetch {error.job_id} {server_options(args)} "
                f"--out {args.out}",
                error.job_id,
            ) from error
        except KeyboardInterrupt:
            # Ctrl+C stops the job, not only this command: it would hold the server's queue.
            stop_interrupted_job(client, accepted[0] if accepted else None)
            raise
        finally:
            bar.close()
        store_result(client, event, args.out, args.overwrite, args)
    return 0


def check_before_connecting(params: Any, overrides: dict[str, Any], config_given: bool) -> None:
    """Refuse, before connecting, the parameters that are wrong whatever the server's config: the ones the command
    line set, and all of them with --config. Without --config, a value the check fails on may come from a config the
    server replaces (`--steps 30` fails against the 50 guided steps of the camera config, not against the blocks
    config of a CPU server), so that check waits for the server's parameters."""
    from .engine.parameters import validate_params

    try:
        validate_params(params)
    except ParameterError as error:
        if config_given or error.name in overrides:
            raise


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (a `kill`, a stopping service) raises KeyboardInterrupt, as Ctrl+C does, so the
    job is cancelled on the server rather than left running there."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_interrupted_job(client: Any, job_id: str | None, wait_s: float = 5.0) -> None:
    """Cancel the job of an interrupted `submit`. Before the server accepted it (during the upload, say), wait up to
    `wait_s` for the acceptance, which names the job."""
    try:
        if job_id is None:
            job_id = accepted_job(client, wait_s)
        if job_id is not None:
            cancel_on_server(client, job_id, wait_s)
    except Exception as error:  # the connection is gone, say: the interrupt still ends the command
        print(f"Could not ask the server to cancel job {job_id}: {error}", file=sys.stderr)


def accepted_job(client: Any, wait_s: float) -> str | None:
    """The id of the job this client submitted, once the server accepts it within `wait_s`; None when the server
    refused it or did not answer (said on stderr). The CLI submits one job per client, so its "accepted" is ours."""
    deadline = time.monotonic() + wait_s
    while (event := client.next_event(max(0.0, deadline - time.monotonic()))) is not None:
        if event.kind == "accepted":
            print(f"Job {event.job_id} accepted as this command was interrupted; cancelling it.", file=sys.stderr)
            return event.job_id
        if event.kind == "error" and event.request_id is not None:
            return None  # the server refused the job: nothing runs there
    print(
        f"The server did not answer within {wait_s:g} s: the job may have reached it and be queued or running. "
        "`motionclone status` shows its queue; a job you cannot name runs to its end and its result expires unfetched.",
        file=sys.stderr,
    )
    return None


def check_message_size(client: Any, params: Any, args: argparse.Namespace) -> None:
    """Refuse, before the reference is decoded, a reference larger than the server takes in one message."""
    limit = client.max_message_bytes()
    size = params.num_frames * params.height * params.width * 3
    if args.condition:
        size += len(args.condition_frames.split(",")) * params.height * params.width * 3
    # The request's header (its parameters) takes up to some kilobytes of the same message.
    if size + HEADER_ALLOWANCE > limit:
        raise ParameterError(
            "--frames/--width/--height",
            f"{params.num_frames} frames of {params.width} x {params.height} make a {size / 2**20:.0f} MiB "
            f"request; the server takes at most {limit / 2**20:.0f} MiB in one: lower --frames, --width or --height",
        )


def cancel_on_server(client: Any, job_id: str, wait_s: float = 5.0) -> None:
    """Ask the server to cancel `job_id` and wait a little for its answer, saying what happened."""
    client.cancel(job_id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        event = client.next_event(0.1)
        if event is not None and event.job_id == job_id and event.kind in ("cancelled", "result", "error"):
            if event.kind == "cancelled":
                print(f"Cancelled job {job_id} on the server.", file=sys.stderr)
            else:
                print(
                    f"Job {job_id} had ended on the server ({event.kind}); fetch it with motionclone fetch.",
                    file=sys.stderr,
                )
            return
    print(
        f"Asked the server to cancel job {job_id}; it did not answer within {wait_s:g} s. `motionclone status` shows "
        "whether it still runs; if it finished meanwhile, `motionclone fetch` gets its result.",
        file=sys.stderr,
    )


def store_result(client: Any, event: Any, out: Path, overwrite: bool, args: argparse.Namespace) -> None:
    """Write a "result" event as a result folder, then acknowledge it so the server may delete its copy (a result
    that could not be written stays on the server, for `motionclone fetch`)."""
    from .results import write_result_folder

    frames = event.frames()
    try:
        paths = write_result_folder(frames, event.message.metadata, out, fps=event.message.fps, overwrite=overwrite)
    except ResultFolderInUse:
        raise  # says to choose another --out or add --overwrite
    except OSError as error:  # a full disk, say: the server keeps the result (it is not acknowledged)
        again = f"motionclone fetch {event.job_id} {server_options(args)} --out {out}"
        raise ResultNotStored(
            f"{error}. The result stays on the server: once that is fixed, {again}"
            + (" --overwrite" if overwrite else "")
        ) from error
    client.ack(event.job_id)
    print(f"Wrote {paths['video']} ({len(frames)} frames); job {event.job_id}")
    print(f"Frames: {paths['frames']}  Metadata: {paths['metadata']}")
    show_result_warnings(event.message.metadata)


def mistyped_option(parser: argparse.ArgumentParser, command: str, words: list[str]) -> str | None:
    """An error for the first `--option` that `command` (a subcommand of `parser`, built with its arguments) does
    not have, with the nearest one it has, or None.

    argparse reports `--promt` as a missing `--prompt`, or as an unrecognized argument, without relating the two.
    """
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    actions = subcommands.choices[command]._actions
    known = [option for action in actions for option in action.option_strings if option.startswith("--")]
    for typed in option_words(actions, words):
        # argparse also takes any unambiguous prefix of an option (`--guid` for `--guidance-steps`).
        if any(option.startswith(typed) for option in known):
            continue
        nearest = difflib.get_close_matches(typed, known, n=1, cutoff=0.7)
        hint = f": did you mean {nearest[0]}?" if nearest else f"; `motionclone {command} --help` lists them"
        return f"motionclone {command}: error: it has no option {typed}{hint}"
    return None


def option_words(actions: list[argparse.Action], words: list[str]) -> Iterator[str]:
    """The `--name` of each word that argparse reads as an option: the words after an option that takes values are
    its values (`--negative-prompt "--no text"`), whatever they start with."""
    values_left = 0
    for word in words:
        if word == "--":  # everything after it is positional
            return
        if values_left:
            values_left -= 1
            continue
        if not word.startswith("--"):
            continue
        typed, assigned, _ = word.partition("=")
        yield typed
        action = option_action(actions, typed)
        if action is not None and not assigned:
            values_left = action.nargs if isinstance(action.nargs, int) else 1 if action.nargs is None else 0


def option_action(actions: list[argparse.Action], typed: str) -> argparse.Action | None:
    """The action of option `typed`, or of the one option it is a prefix of (as argparse matches), else None."""
    exact = [action for action in actions if typed in action.option_strings]
    if exact:
        return exact[0]
    matching = [action for action in actions if any(option.startswith(typed) for option in action.option_strings)]
    return matching[0] if len(matching) == 1 else None


def _show_warning(show_other: Callable[..., None]) -> Callable[..., None]:
    """warnings.showwarning that writes our own warnings (a reference video cut short) as the command's other
    messages, "warning: ...", once each and above a progress bar, and leaves the rest to `show_other`."""
    shown: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *where: Any, **more: Any) -> None:
        if not issubclass(category, VideoInputWarning):
            show_other(message, category, *where, **more)
        elif str(message) not in shown:  # a reference is read more than once (counted, then sampled)
            shown.add(str(message))
            from tqdm import tqdm

            tqdm.write(f"warning: {message}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # during start-up, while the command's arguments import torch and diffusers
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(argv: list[str]) -> int:
    """Parse `argv` and run its command, mapping errors to exit codes."""
    # The command is the first word (the top level has no options but --help); build only its arguments.
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser([command] if command else ())
    if command is not None and (mistyped := mistyped_option(parser, command, argv[1:])) is not None:
        print(mistyped, file=sys.stderr)
        return EXIT_PARAMETERS
    args = parser.parse_args(argv)
    handlers = {
        "generate": command_generate,
        "serve": command_serve,
        "submit": command_submit,
        "fetch": command_fetch,
        "cancel": command_cancel,
        "status": command_status,
        "keygen": command_keygen,
        "evaluate": command_evaluate,
        "info": command_info,
    }
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(warnings.showwarning)
            return handlers[args.command](args)
    except ParameterError as error:
        print(f"error: {with_flag(error) if args.command in ('generate', 'submit') else error}", file=sys.stderr)
        return EXIT_PARAMETERS
    except ResultFolderInUse as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_PARAMETERS
    except ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MODEL
    except (VideoInputError, VideoInputWarning) as error:  # the warning, when `-W error` makes warnings errors
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
    except (BackendUnavailable, JobFailed, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_PARAMETERS if getattr(error, "code", None) == "invalid_parameter" else EXIT_BACKEND
    except JobCancelledError as error:
        print(f"cancelled: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # writing the result (a full disk, say): an earlier result there is left as it was
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BACKEND
    except Exception as error:
        if not is_out_of_memory(error):
            raise  # a bug: its traceback says where
        print(f"error: {out_of_memory_message(error)}", file=sys.stderr)
        return EXIT_BACKEND


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is torch's out-of-memory error (torch is imported only by the commands that use it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def out_of_memory_message(error: BaseException) -> str:
    return (
        f"{out_of_memory_summary(error)}. Lower --width, --height or --frames (or the windows' --set "
        "context_length), or give --dtype float16."
    )


# Subcommand -> (help, the function that adds its arguments), in the order `motionclone --help` lists them.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "generate": ("generate a video in this process", add_generate_arguments),
    "serve": ("run the backend server", add_serve_arguments),
    "submit": ("send a job to a running server and write its result", add_submit_arguments),
    "fetch": ("get a job's result from a server by job id and write it", add_fetch_arguments),
    "cancel": ("stop a job on a server by job id (queued or running)", add_cancel_arguments),
    "status": ("show what a server runs: version, device, model presets, limits", add_server_arguments),
    "evaluate": (
        "score a result against its reference: motion fidelity, subject adherence, CLIP metrics",
        add_evaluate_arguments,
    ),
    "keygen": ("write CurveZMQ keys for a remote server and its clients", add_keygen_arguments),
    "info": (
        "print one JSON object: version, model presets, Python, torch and CUDA (loads no model)",
        add_info_arguments,
    ),
}
