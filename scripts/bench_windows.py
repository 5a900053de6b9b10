"""Context windows, measured: memory of long clips, and how a 64-frame result follows its 64-frame reference.

Usage:
    python scripts/bench_windows.py memory [--preset tiny] [--size 64] [--frames 16 64] [--steps 4]
    python scripts/bench_windows.py fidelity [--frames 64] [--reference NAME] [--seed 2025] [--out DIR]

memory: runs one job per frame count, each in a fresh child process, with windows of 16 frames overlapping by 4, and
prints the peak resident memory of each (the whole process, and above the process after loading the model), the
seconds, and the ratios to the first count. Windows run one after another, so a 64-frame job should need little more
than a 16-frame one: the target is at most 1.5x.

fidelity: the built-in `blocks` model generates `--frames` frames from a procedural benchmark reference of as many
frames (a clip it never saw), guided and unguided (weight 0), with the blocks config and windows 16/4, and scores
each with `motionclone evaluate` (motion fidelity). It also compares the frame-to-frame change of the result at window
borders (neighbouring frames that different windows dominate) with the change inside windows, each divided by the
reference's change at the same frame pairs: a seam shows as a border ratio well above the inside ratio. Writes
DIR/windows.json, the reference clip (DIR/reference-NAME-FRAMES/) and the result folders (default
bench-output/windows/), replacing those of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from motionclone.protocol.windows import context_windows, frame_weights

WINDOW, OVERLAP = 16, 4


def child(args: argparse.Namespace) -> int:
    """One job in this (fresh) process; prints its measurements as JSON."""
    from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
    from motionclone.backend.models import load_preset
    from motionclone.backend.samples import make_moving_square_clip

    pipe = MotionClonePipeline.from_bundle(load_preset(args.preset))
    reference = make_moving_square_clip(num_frames=args.frames, height=args.size, width=args.size)
    params = MotionCloneParams(
        prompt="a red ball on grass",
        num_frames=args.frames,
        height=args.size,
        width=args.size,
        num_inference_steps=args.steps,
        guidance_steps=args.steps // 2,
        warm_up_steps=0,
        cool_down_steps=0,
        context_length=WINDOW,
        context_overlap=OVERLAP,
    )
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    pipe(reference, params)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    windows = len(context_windows(args.frames, WINDOW, OVERLAP))
    print(
        json.dumps(
            {
                "frames": args.frames,
                "windows": windows,
                "peak_rss": peak,
                "above_model": peak - loaded_rss,
                "seconds": round(seconds, 2),
            }
        )
    )
    return 0


def memory(args: argparse.Namespace) -> int:
    rows = []
    for frames in args.frames:
        command = [
            sys.executable,
            __file__,
            "child",
            "--preset",
            args.preset,
            "--size",
            str(args.size),
            "--frames",
            str(frames),
            "--steps",
            str(args.steps),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = rows[0]
    print(f"preset {args.preset}, {args.size}x{args.size}, {args.steps} steps, windows {WINDOW}/{OVERLAP}")
    print("frames  windows  peak RSS MiB  above model MiB  seconds  peak ratio  above-model ratio  time ratio")
    for row in rows:
        print(
            f"{row['frames']:>6}  {row['windows']:>7}  {row['peak_rss'] / 2**20:>12.1f}  "
            f"{row['above_model'] / 2**20:>15.1f}  {row['seconds']:>7.1f}  "
            f"{row['peak_rss'] / first['peak_rss']:>10.2f}  "
            f"{row['above_model'] / max(first['above_model'], 1):>17.2f}  {row['seconds'] / first['seconds']:>10.2f}"
        )
    return 0


def border_pairs(num_frames: int) -> tuple[list[int], list[int]]:
    """Frame pairs (f, f + 1) split by whether a different window dominates each frame (border) or not (inside)."""
    windows = context_windows(num_frames, WINDOW, OVERLAP)
    best = np.zeros(num_frames)
    owner = np.zeros(num_frames, dtype=int)
    for index, (frames, weights) in enumerate(zip(windows, frame_weights(num_frames, windows, OVERLAP), strict=True)):
        for frame, weight in zip(frames, weights, strict=True):
            if weight > best[frame]:
                best[frame], owner[frame] = weight, index
    border = [f for f in range(num_frames - 1) if owner[f] != owner[f + 1]]
    inside = [f for f in range(num_frames - 1) if owner[f] == owner[f + 1]]
    return border, inside


def change_ratios(reference: np.ndarray, result: np.ndarray) -> dict[str, float]:
    """Mean frame-to-frame change of the result over that of the reference, at window borders and inside windows."""

    def change(frames: np.ndarray, pairs: list[int]) -> float:
        video = frames.astype(np.float32) / 255
        return float(np.mean([np.abs(video[f + 1] - video[f]).mean() for f in pairs]))

    border, inside = border_pairs(len(result))
    return {
        "border_pairs": len(border),
        "border_ratio": change(result, border) / max(change(reference, border), 1e-6),
        "inside_ratio": change(result, inside) / max(change(reference, inside), 1e-6),
    }


def fidelity(args: argparse.Namespace) -> int:
    from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
    from motionclone.backend.evaluation import evaluate
    from motionclone.backend.evaluation.benchmark_references import render_procedural, select_references
    from motionclone.backend.models import load_preset
    from motionclone.backend.models.blocks import NATIVE_SIZE
    from motionclone.backend.results import write_result_folder
    from motionclone.backend.video_io import write_png_sequence

    (reference,) = select_references([args.reference], blender=False)
    size = NATIVE_SIZE["height"]
    pixels = render_procedural(reference, size, args.frames)
    out = args.out
    # Named by clip and length and written every run: a cached clip from an earlier run with another --reference or
    # --frames would be scored against instead of the one generated from.
    reference_dir = out / f"reference-{reference.name}-{args.frames}"
    write_png_sequence(pixels, reference_dir, overwrite=True)
    pipe = MotionClonePipeline.from_bundle(load_preset("blocks"))
    runs = []
    for weight in (0.0, None):
        overrides = {} if weight is None else {"motion_guidance_weight": weight}
        params = MotionCloneParams.from_config(
            "blocks",
            prompt=reference.prompt,
            num_frames=args.frames,
            height=size,
            width=size,
            seed=args.seed,
            context_length=WINDOW,
            context_overlap=OVERLAP,
            **overrides,
        )
        started = time.perf_counter()
        output = pipe(pixels, params)
        seconds = time.perf_counter() - started
        folder = out / f"w{params.motion_guidance_weight:g}"
        # The benchmark's own folder: a rerun replaces the previous run's result instead of refusing after generating.
        write_result_folder(output.frames, output.metadata, folder, fps=params.fps, overwrite=True)
        report = evaluate(reference_dir, folder, prompt=params.prompt, out_dir=folder / "evaluation")
        runs.append(
            {
                "weight": params.motion_guidance_weight,
                "seconds": round(seconds, 1),
                "motion_fidelity": report["motion_fidelity"],
                **change_ratios(pixels, output.frames),
            }
        )
    summary: dict[str, Any] = {
        "reference": reference.name,
        "frames": args.frames,
        "size": size,
        "seed": args.seed,
        "windows": context_windows(args.frames, WINDOW, OVERLAP),
        "runs": runs,
    }
    (out / "windows.json").write_text(json.dumps(summary, indent=2))
    for run in runs:
        print(
            f"weight {run['weight']:>6g}: MF {run['motion_fidelity']:.3f}, change vs reference at window borders "
            f"{run['border_ratio']:.2f} ({run['border_pairs']} pairs), inside windows {run['inside_ratio']:.2f}, "
            f"{run['seconds']:.0f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    mem = modes.add_parser("memory")
    mem.add_argument("--preset", default="tiny")
    mem.add_argument("--size", type=int, default=64)
    mem.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    mem.add_argument("--steps", type=int, default=4)
    one = modes.add_parser("child")
    one.add_argument("--preset", default="tiny")
    one.add_argument("--size", type=int, default=64)
    one.add_argument("--frames", type=int, default=16)
    one.add_argument("--steps", type=int, default=4)
    fid = modes.add_parser("fidelity")
    fid.add_argument("--frames", type=int, default=64)
    fid.add_argument("--reference", default="car_zigzag")
    fid.add_argument("--seed", type=int, default=2025)
    fid.add_argument("--out", type=Path, default=Path("bench-output/windows"))
    args = parser.parse_args(argv)
    if args.mode == "fidelity":
        args.out.mkdir(parents=True, exist_ok=True)
    return {"memory": memory, "child": child, "fidelity": fidelity}[args.mode](args)


if __name__ == "__main__":
    raise SystemExit(main())
