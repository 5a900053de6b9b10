"""Compare shortened step schedules with the official camera and object configs, on the built-in `blocks` model.

Usage:
    python scripts/bench_fast_configs.py --family camera --candidates 40:20 25:12 --only ball_line --only car_pan
    python scripts/bench_fast_configs.py --family object --candidates 80:48 50:30 --only cube_closer

For each benchmark reference (see `scripts/bench_fidelity.py`), the `blocks` model generates with the official
family's schedule (camera: 100 steps, 50 guided, fraction 0.3; object: 300 / 180, fraction 0.4; warm-up and cool-down
10 each) and with each candidate N:G (the fraction kept, the ramps scaled with G), all with the same seed, prompt and
the `blocks` config's weight, norm and negative prompt, and once unguided (weight 0, official schedule) for scale.
Each result is scored by:

- `motion_distance`: the motion loss of the finished video against the reference's motion representation, measured
  the way the engine measures it (the result is encoded, noised to t* with the same ε and run to the last guided
  block; Σ_m MSE of its attention at the reference's top-k entries). Lower is closer; the unguided run shows where
  "no motion transfer" lies.
- `motion_fidelity`: `motionclone evaluate`'s DMT motion fidelity against the reference.
- `frame_difference`: mean absolute difference from the official schedule's frames (0-1 scale).
- the denoising time, and the work relative to the official schedule: G guided and N - G unguided steps, each priced
  at the mean seconds per guided and per unguided step measured in this reference's guided runs (not the unguided
  run), divided by the official schedule priced the same way.

Writes `OUT/fast-configs-FAMILY.json` and prints a markdown table.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionclone.backend.cli import parse_assignments
from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.engine.attention_capture import capture_temporal_attention, guided_module_names
from motionclone.backend.engine.partial_unet import last_block, run_unet_until
from motionclone.backend.engine.pipeline_motionclone import VAE_SEED_OFFSET
from motionclone.backend.engine.representation import encode_reference, motion_loss, noise_latents
from motionclone.backend.evaluation import evaluate
from motionclone.backend.evaluation.benchmark_references import ensure_references, select_references
from motionclone.backend.models import load_preset
from motionclone.backend.models.registry import NATIVE_SIZES
from motionclone.backend.results import write_result_folder
from motionclone.backend.video_io import read_clip

OFFICIAL = {
    "camera": {"num_inference_steps": 100, "guidance_steps": 50, "guidance_fraction": 0.3},
    "object": {"num_inference_steps": 300, "guidance_steps": 180, "guidance_fraction": 0.4},
}
OFFICIAL_RAMP = 10  # warm-up and cool-down steps of both official configs, out of 50 and 180 guided steps
SEED = 2025
SCHEDULE_KEYS = {"num_inference_steps", "guidance_steps", "guidance_fraction", "warm_up_steps", "cool_down_steps"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(OFFICIAL), required=True)
    parser.add_argument(
        "--candidates",
        nargs="+",
        required=True,
        metavar="N:G[:xS]",
        help="total:guided step counts, optionally with the guidance weight scaled by S (40:20:x2.5)",
    )
    parser.add_argument("--only", action="append", required=True, help="benchmark reference (repeatable)")
    parser.add_argument("--references-dir", type=Path, default=Path("bench-output/references"))
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument(
        "--reuse", action="store_true", help="reuse results this script already wrote under OUT (same settings)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a parameter of the blocks config in every run, value in JSON (the tables in docs/performance.md "
        "were made with --set noise_frame_correlation=0 --set cfg_scale=7.5 --set subject_placement=free)",
    )
    args = parser.parse_args(argv)
    args.overrides = parse_assignments(args.set)
    fixed = SCHEDULE_KEYS & args.overrides.keys() | {"prompt", "seed", "motion_guidance_weight"} & args.overrides.keys()
    if fixed:
        parser.error(f"--set {', '.join(sorted(fixed))}: the script sets these (use --candidates)")
    return args


def schedule(family: str, steps: int, guided: int) -> dict[str, Any]:
    """The family's schedule with N and G replaced; the ramps keep their share of the guided steps."""
    official = OFFICIAL[family]
    ramp = max(1, round(OFFICIAL_RAMP * guided / official["guidance_steps"]))
    return {
        "num_inference_steps": steps,
        "guidance_steps": guided,
        "guidance_fraction": official["guidance_fraction"],
        "warm_up_steps": ramp,
        "cool_down_steps": ramp,
    }


def blocks_params(
    prompt: str, steps: dict[str, Any], weight_scale: float = 1.0, overrides: dict[str, Any] | None = None
) -> MotionCloneParams:
    """The `blocks` config (with `overrides`) at the model's native size, with another schedule and its guidance
    weight times `weight_scale` (0: an unguided baseline)."""
    native = NATIVE_SIZES["blocks"]
    params = MotionCloneParams.from_config("blocks", prompt=prompt, seed=SEED, **native, **(overrides or {}), **steps)
    return params.replace(motion_guidance_weight=params.motion_guidance_weight * weight_scale)


@torch.no_grad()
def motion_distance(pipe: MotionClonePipeline, frames: np.ndarray, params: MotionCloneParams, reference: Any) -> float:
    """Σ_m MSE of the result's attention at the reference's top-k entries, extracted as the engine extracts."""
    generator = torch.Generator(device=pipe.vae.device).manual_seed(params.effective_motion_seed + VAE_SEED_OFFSET)
    z0 = encode_reference(pipe.vae, frames, params.vae_posterior, generator).to(pipe.unet.dtype)
    noise = pipe.prepare_noise(params.effective_motion_seed, params)
    x_t = noise_latents(z0, noise, params.add_noise_step, pipe.scheduler.alphas_cumprod)
    names = guided_module_names(pipe.unet, params.motion_guidance_blocks)
    embeds = pipe.encode_prompt("").repeat_interleave(params.num_frames, dim=0)
    with capture_temporal_attention(pipe.unet, names, params.attention_precision) as store:
        store.recording = True
        block = last_block(pipe.unet, params.motion_guidance_blocks)
        run_unet_until(pipe.unet, block, x_t, params.add_noise_step, encoder_hidden_states=embeds)
        return float(motion_loss(dict(store.probs), reference))


def generate(
    pipe: MotionClonePipeline, cached: Any, params: MotionCloneParams, out: Path, reuse: bool
) -> dict[str, Any]:
    """One result: frames, per-step times and its motion fidelity (from OUT when `reuse` and the settings match)."""
    summary_path = out / "summary.json"
    if reuse and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary["parameters"] == params.to_dict():
            return {**summary, "frames": read_clip(out / "frames").frames}
    stamps: list[float] = []

    def progress(stage: str, step: int, total: int) -> None:
        if stage == "denoise":
            stamps.append(time.perf_counter())

    started = time.perf_counter()
    output = pipe(str(cached.frames_dir), params, progress=progress)
    seconds = time.perf_counter() - started
    if out.exists():
        for file in sorted(out.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
    write_result_folder(output.frames, output.metadata, out, fps=params.fps)
    report = evaluate(cached.frames_dir, out, prompt=params.prompt, out_dir=out / "evaluation")
    steps = np.diff(stamps)
    guided = params.guidance_steps if params.motion_guidance_weight > 0 else 0
    summary = {
        "parameters": params.to_dict(),
        "seconds": seconds,
        "denoise_seconds": float(steps.sum()),
        "guided_step_s": float(steps[:guided].mean()) if guided else None,
        "unguided_step_s": float(steps[guided:].mean()) if len(steps) > guided else None,
        "motion_fidelity": report["motion_fidelity"],
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "frames": output.frames}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(True)
    references = select_references(args.only, blender=False)
    cached = ensure_references(args.references_dir, references)
    pipe = MotionClonePipeline.from_bundle(load_preset("blocks", "cpu"))
    official = OFFICIAL[args.family]
    runs = [("official", schedule(args.family, official["num_inference_steps"], official["guidance_steps"]), 1.0)]
    for text in args.candidates:
        fields = text.split(":")
        scale = float(fields[2].lstrip("x")) if len(fields) > 2 else 1.0
        runs.append((text, schedule(args.family, int(fields[0]), int(fields[1])), scale))

    rows: list[dict[str, Any]] = []
    for reference in cached:
        prompt = reference.reference.prompt
        base = blocks_params(prompt, runs[0][1], overrides=args.overrides)
        frames_reference = reference.frames()
        noise = pipe.prepare_noise(base.effective_motion_seed, base)
        representation, _, _ = pipe.obtain_representation(frames_reference, noise, pipe.encode_prompt(""), base, None)
        results: dict[str, dict[str, Any]] = {}
        for label, steps, scale in [*runs, ("unguided", runs[0][1], 0.0)]:
            params = blocks_params(prompt, steps, scale, args.overrides)
            folder = args.out / "fast-configs" / args.family / reference.reference.name / label.replace(":", "-")
            result = generate(pipe, reference, params, folder, args.reuse)
            result["motion_distance"] = motion_distance(pipe, result["frames"], params, representation)
            results[label] = result
            print(
                f"{reference.reference.name} {label}: {result['seconds']:.0f} s, distance "
                f"{result['motion_distance']:.5f}, MF {result['motion_fidelity']:.3f}",
                flush=True,
            )
        reference_frames = results["official"]["frames"].astype(np.float32) / 255
        unguided = results["unguided"]
        # Per-step costs measured on this machine: the mean guided and unguided step over the guided runs.
        guided_runs = [result for label, result in results.items() if label != "unguided"]
        guided_cost = float(np.mean([r["guided_step_s"] for r in guided_runs if r["guided_step_s"]]))
        unguided_cost = float(np.mean([r["unguided_step_s"] for r in guided_runs if r["unguided_step_s"]]))
        for label, steps, scale in runs:
            result = results[label]
            work = (
                steps["guidance_steps"] * guided_cost
                + (steps["num_inference_steps"] - steps["guidance_steps"]) * unguided_cost
            )
            official_work = (
                official["guidance_steps"] * guided_cost
                + (official["num_inference_steps"] - official["guidance_steps"]) * unguided_cost
            )
            rows.append(
                {
                    "reference": reference.reference.name,
                    "schedule": label,
                    "steps": steps,
                    "weight_scale": scale,
                    "denoise_seconds": round(result["denoise_seconds"], 1),
                    "work_vs_official": round(work / official_work, 3),
                    "motion_distance": round(result["motion_distance"], 6),
                    "unguided_motion_distance": round(unguided["motion_distance"], 6),
                    "motion_fidelity": round(result["motion_fidelity"], 3),
                    "unguided_motion_fidelity": round(unguided["motion_fidelity"], 3),
                    "frame_difference": round(float(np.abs(result["frames"] / 255 - reference_frames).mean()), 4),
                }
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"fast-configs-{args.family}.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(
        "| reference | schedule N:G | work vs official | denoise s | motion distance (unguided) | MF (unguided) | "
        "frame diff vs official |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        steps = row["steps"]
        print(
            f"| {row['reference']} | {row['schedule']} | "
            f"{row['work_vs_official']:.2f} | {row['denoise_seconds']:.0f} | {row['motion_distance']:.5f} "
            f"({row['unguided_motion_distance']:.5f}) | {row['motion_fidelity']:.3f} "
            f"({row['unguided_motion_fidelity']:.3f}) | {row['frame_difference']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
