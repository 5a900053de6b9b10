"""Motion-fidelity benchmark: does motion guidance make the result move like the reference?

Usage: python scripts/bench_fidelity.py [--preset blocks] [--config blocks] [--weights W0 W1] [--seeds 2025 ...]
                                        [--steps N] [--guidance-steps G] [--frames F] [--only NAME ...]
                                        [--no-blender] [--device DEVICE] [--threads N] [--references-dir DIR]
                                        [--out DIR]

For every reference of the fixed set (`motionclone.backend.evaluation.benchmark_references`: six procedural clips the
blocks model never saw, and two Workbench renders of the demo blockout), generates with the reference's prompt at
motion guidance weight W0 (default 0: unguided) and W1 (default: the config's weight), with the same seeds, and
scores each result against the reference with `motionclone evaluate` (symmetric motion fidelity, subject colour
and class adherence in the subject-mask network's region). The model is loaded once. Writes into --out (default
bench-output/):

    fidelity.json   every number, with the settings, the model, the evaluation settings and the machine
    fidelity.md     a table per reference (MF unguided, MF guided, gain, colour and class adherence) and the
                    pass/fail of the targets: guided beats unguided on at least 7 of 8 references, mean gain at least
                    0.1, mean colour adherence at least 0.8
    fidelity.png    one row per reference: reference frames, unguided frames, guided frames (first seed)
    results/NAME/wWEIGHT-seedSEED/   each result folder (result.mp4, frames/, result.json, evaluation/)

References are rendered once into --references-dir (default OUT/references/) and reused while their definition is
unchanged; Blender renders run `scripts/bench_blender_render.py` in a child process (bpy, no torch).

Timing: each generation's seconds are recorded. On a CPU that something else keeps busy (a training run), torch's
default of one thread per core can make generation tens of times slower, as its threads wait on each other; pass
--threads 1 there. Measured on 2 cores next to a training run, --threads 1: about 10 s per generation at 4 steps
(2 guided), about 97 s at the blocks config's 40 (20 guided), so the full set takes about 26 minutes per seed.
On the same 2 cores with nothing else running: about 24 s per generation at 40 steps, 6.5 minutes per seed.

Exit codes: 0 the benchmark ran (whether or not the targets were met: see fidelity.md), 1 it failed (the message
says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from motionclone.backend.cli import parse_assignments
from motionclone.backend.comparison import pick_evenly, write_png
from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.engine.parameters import CONFIG_PRESETS, validate_params
from motionclone.backend.errors import MotionCloneError
from motionclone.backend.evaluation import evaluate, load_result, sample_reference
from motionclone.backend.evaluation.benchmark_references import (
    REFERENCE_FRAMES,
    REFERENCE_SEED,
    REFERENCE_SIZE,
    REFERENCES,
    SET_VERSION,
    TRAINING_SEED,
    BenchmarkReference,
    CachedReference,
    ensure_references,
    reference_names,
    select_references,
)
from motionclone.backend.evaluation.evaluate import recorded_sampling
from motionclone.backend.evaluation.motion_fidelity import (
    DEFAULT_EPSILON,
    DEFAULT_MOVING_FRACTION,
    DEFAULT_REGION,
    DEFAULT_STILL_STEP,
)
from motionclone.backend.evaluation.subject_mask import network_region_settings
from motionclone.backend.evaluation.tracks import DEFAULT_GRID
from motionclone.backend.generate import default_device
from motionclone.backend.models import load_preset
from motionclone.backend.models.registry import NATIVE_SIZES, PRESETS
from motionclone.backend.results import write_result_folder

ROOT = Path(__file__).resolve().parents[1]
BLENDER_HELPER = ROOT / "scripts" / "bench_blender_render.py"
BLENDER_TIMEOUT_S = 300.0
FORMAT = "motionclone-bench-fidelity/1"

# Targets for the full set of eight references (fidelity.md says when a run covers fewer).
TARGET_WIN_FRACTION = 7 / 8
TARGET_MEAN_GAIN = 0.1
TARGET_COLOUR = 0.8

PICTURE_TILE = 128  # px: frames are upscaled with nearest so that pixels stay pixels
PICTURE_FRAMES = 4  # frames shown per clip
PICTURE_GAP, PICTURE_GROUP_GAP, PICTURE_LABEL = 2, 12, 16


class BenchFailed(RuntimeError):
    """A stage of the benchmark could not finish; the message says which and why."""


@dataclass(frozen=True)
class BenchSettings:
    """What one benchmark run does (see `build_parser` for each flag)."""

    preset: str
    model_folder: Path | None
    config: str
    device: str
    weights: tuple[float, float]
    seeds: tuple[int, ...]
    steps: int | None
    guidance_steps: int | None
    frames: int | None
    threads: int | None
    overrides: dict[str, Any]  # --set: parameters changed from the config in both runs (not prompt, seed, weight)
    references: tuple[BenchmarkReference, ...]
    references_dir: Path
    out: Path


# ---- settings --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Generate every benchmark reference unguided and guided, score motion fidelity, write a report.",
    )
    parser.add_argument("--preset", default="blocks", help="model preset (default blocks)")
    parser.add_argument(
        "--model-folder",
        type=Path,
        help="with the blocks preset: another trained model folder than the shipped one (from "
        "scripts/train_blocks_model.py), to compare a retrained or longer-trained model",
    )
    parser.add_argument("--config", default="blocks", help="config the parameters start from (default blocks)")
    parser.add_argument(
        "--weights",
        nargs=2,
        type=float,
        metavar=("W0", "W1"),
        help="unguided and guided motion guidance weights (default: 0 and the config's weight)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[2025], help="seeds, each run at both weights")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the config's)")
    parser.add_argument("--guidance-steps", type=int, help="guided steps (default: the config's, scaled to --steps)")
    parser.add_argument("--frames", type=int, help="frames to generate (default: the preset's native count)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a parameter of the config in both runs, value in JSON "
        '(e.g. --set motion_guidance_blocks=\'["up_blocks.1", "up_blocks.2"]\')',
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=reference_names(),
        help=f"run this reference only (repeatable): {', '.join(reference_names())}",
    )
    parser.add_argument("--no-blender", action="store_true", help="skip the references rendered with Blender")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's own choice; 1 on a busy machine)"
    )
    parser.add_argument("--references-dir", type=Path, help="reference cache (default OUT/references)")
    parser.add_argument("--out", type=Path, default=Path("bench-output"), help="output folder (default bench-output/)")
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Check the arguments against each other and the registries.

    Raises:
        ValueError: an unknown preset or config, a bad count, or a selection that leaves no reference.
    """
    if args.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(sorted(PRESETS))}, got {args.preset!r}")
    if args.model_folder is not None and args.preset != "blocks":
        raise ValueError(f"--model-folder is for the blocks preset only, not {args.preset!r}")
    if args.config not in CONFIG_PRESETS:
        raise ValueError(f"--config must be one of {', '.join(sorted(CONFIG_PRESETS))}, got {args.config!r}")
    config_weight = MotionCloneParams.from_config(args.config, prompt="-").motion_guidance_weight
    weights = tuple(args.weights) if args.weights else (0.0, float(config_weight))
    # The label names each run's result folder; -0 and 0 get two labels but are one weight.
    if weights[0] == weights[1] or weight_label(weights[0]) == weight_label(weights[1]):
        raise ValueError(
            f"--weights must be two different weights, got {weights[0]:g} twice: both runs would write the same "
            "result folders and the summary would count each run as guided and unguided"
        )
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds has repeats: {args.seeds}")
    overrides = parse_assignments(args.set)
    for fixed in ("prompt", "seed", "motion_guidance_weight"):
        if fixed in overrides:
            raise ValueError(f"--set {fixed} is not allowed: the benchmark sets it (use --seeds or --weights)")
    for sized in ("num_frames", "height", "width"):
        if sized in overrides:  # make_params would silently replace it
            raise ValueError(
                f"--set {sized} is not allowed: the benchmark sets the size (use --frames for the frame count; "
                "height and width are the preset's native size)"
            )
    out = args.out.expanduser().resolve()
    settings = BenchSettings(
        preset=args.preset,
        model_folder=args.model_folder.expanduser().resolve() if args.model_folder else None,
        config=args.config,
        device=args.device or default_device(),
        weights=(float(weights[0]), float(weights[1])),
        seeds=tuple(args.seeds),
        steps=args.steps,
        guidance_steps=args.guidance_steps,
        frames=args.frames,
        threads=args.threads,
        overrides=overrides,
        references=tuple(select_references(args.only, blender=not args.no_blender)),
        references_dir=(args.references_dir.expanduser().resolve() if args.references_dir else out / "references"),
        out=out,
    )
    validate_params(make_params(settings, "a red ball rolling right on the grass", settings.seeds[0], weights[1]))
    return settings


def make_params(settings: BenchSettings, prompt: str, seed: int, weight: float) -> MotionCloneParams:
    """The parameters of one generation: the config, the preset's native size, and the run's overrides."""
    native = NATIVE_SIZES.get(settings.preset, {"num_frames": 16, "height": 64, "width": 64})
    config = MotionCloneParams.from_config(settings.config, prompt=prompt, **settings.overrides)
    overrides: dict[str, Any] = {
        **settings.overrides,
        "prompt": prompt,
        "seed": seed,
        "motion_guidance_weight": weight,
        "num_frames": settings.frames or native["num_frames"],
        "height": native["height"],
        "width": native["width"],
    }
    if settings.steps is not None:
        overrides["num_inference_steps"] = settings.steps
        if settings.guidance_steps is None:  # keep the config's share of guided steps
            share = config.guidance_steps / config.num_inference_steps
            overrides["guidance_steps"] = max(1, round(settings.steps * share))
    if settings.guidance_steps is not None:
        overrides["guidance_steps"] = settings.guidance_steps
    return MotionCloneParams.from_config(settings.config, **overrides)


# ---- references ------------------------------------------------------------------------------------------------------
def render_blender(reference: BenchmarkReference, size: int, frames: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Render a demo-scene reference with Blender in a child process (bpy and torch never share a process)."""
    with tempfile.TemporaryDirectory(prefix="motionclone-bench-blender-") as scratch:
        command = [
            sys.executable,
            str(BLENDER_HELPER),
            "--kind",
            str(reference.scene_kind),
            "--out",
            scratch,
            "--frames",
            str(frames),
            "--size",
            str(size),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BLENDER_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as error:
            raise BenchFailed(f"Blender did not render {reference.name} within {BLENDER_TIMEOUT_S:.0f} s") from error
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise BenchFailed(
                f"Blender could not render {reference.name} (exit {done.returncode}; {sys.executable} needs bpy; "
                "--no-blender skips these references): " + " | ".join(tail)
            )
        pixels = np.load(Path(scratch) / "frames.npy")
        info = json.loads((Path(scratch) / "info.json").read_text())
    return pixels, {"blender": info}


def prepare_references(settings: BenchSettings) -> list[CachedReference]:
    """The selected references from the cache, rendering what is missing; says which were reused."""
    started = time.perf_counter()
    cached = ensure_references(settings.references_dir, settings.references, render_blender)
    reused = sum(c.reused for c in cached)
    print(
        f"references: {len(cached)} in {settings.references_dir} ({reused} cached, {len(cached) - reused} rendered, "
        f"{time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    return cached


# ---- runs ------------------------------------------------------------------------------------------------------------
def weight_label(weight: float) -> str:
    return f"w{weight:g}"


def run_one(
    pipe: MotionClonePipeline, cached: CachedReference, params: MotionCloneParams, result_dir: Path
) -> dict[str, Any]:
    """Generate one result into result_dir and score it against its reference."""
    if result_dir.exists():
        shutil.rmtree(result_dir)  # write_result_folder refuses frames left by an earlier run
    started = time.perf_counter()
    output = pipe(str(cached.frames_dir), params)
    seconds = time.perf_counter() - started
    write_result_folder(output.frames, output.metadata, result_dir, fps=params.fps)
    started = time.perf_counter()
    report = evaluate(cached.frames_dir, result_dir, prompt=params.prompt, out_dir=result_dir / "evaluation")
    return {
        "weight": params.motion_guidance_weight,
        "seed": params.seed,
        "seconds": round(seconds, 2),
        "evaluation_seconds": round(time.perf_counter() - started, 2),
        **evaluation_record(report),
        "result_dir": str(result_dir),
    }


def evaluation_record(report: dict[str, Any]) -> dict[str, Any]:
    """What a run keeps of its evaluation. The MF status travels with the value: a degenerate 0 (a reference with
    nothing to compare) is left out of the means, where a result without usable tracks is a measured 0."""
    metrics = report["metrics"]
    fidelity = metrics["motion_fidelity"]
    return {
        "motion_fidelity": report["motion_fidelity"],
        "motion_fidelity_status": fidelity["status"],
        "motion_fidelity_reason": fidelity.get("reason"),
        "motion_fidelity_released": report["motion_fidelity_released"],
        "colour_adherence": metrics["colour_adherence"]["value"],
        "colour_status": metrics["colour_adherence"]["status"],
        "class_adherence": metrics["class_adherence"]["value"],
        "class_status": metrics["class_adherence"]["status"],
        "tracks": fidelity["tracks"],
        "warnings": report["warnings"],
        "_tracker": fidelity["tracker"],
    }


def measured(run: dict[str, Any]) -> bool:
    """Whether a run's MF counts in the means: not when it is degenerate."""
    return run["motion_fidelity_status"] == "measured"


def describe_mf(run: dict[str, Any]) -> str:
    """A run's MF for the progress lines, with its status when it is not measured."""
    value = f"{run['motion_fidelity']:.3f}"
    return value if measured(run) else f"{value} ({run['motion_fidelity_status']}, left out of the means)"


def mean(values: list[float | None]) -> float | None:
    """Mean of the measured values; None when there are none."""
    known = [float(v) for v in values if v is not None]
    return sum(known) / len(known) if known else None


def summarise_reference(runs: list[dict[str, Any]], weights: tuple[float, float]) -> dict[str, Any]:
    """Means over seeds per weight, and the gain of guided over unguided motion fidelity."""
    by_weight = [[r for r in runs if r["weight"] == w] for w in weights]
    unguided, guided = by_weight
    mf_unguided = mean([r["motion_fidelity"] for r in unguided if measured(r)])
    mf_guided = mean([r["motion_fidelity"] for r in guided if measured(r)])
    gain = mf_guided - mf_unguided if mf_guided is not None and mf_unguided is not None else None
    return {
        "mf_unguided": mf_unguided,
        "mf_guided": mf_guided,
        "gain": gain,
        "guided_wins": gain is not None and gain > 0,
        "degenerate_runs": sum(not measured(r) for r in runs),
        "colour_unguided": mean([r["colour_adherence"] for r in unguided]),
        "colour_guided": mean([r["colour_adherence"] for r in guided]),
        "class_unguided": mean([r["class_adherence"] for r in unguided]),
        "class_guided": mean([r["class_adherence"] for r in guided]),
        "seconds_unguided": mean([r["seconds"] for r in unguided]),
        "seconds_guided": mean([r["seconds"] for r in guided]),
    }


def summarise(entries: list[dict[str, Any]], total_seconds: float) -> dict[str, Any]:
    """Wins, mean gain and adherence over the references, and the pass/fail of each target."""
    n = len(entries)
    wins = sum(e["summary"]["guided_wins"] for e in entries)
    mean_gain = mean([e["summary"]["gain"] for e in entries])
    colour = mean([e["summary"]["colour_guided"] for e in entries])
    needed = math.ceil(TARGET_WIN_FRACTION * n - 1e-9)
    seconds = [r["seconds"] for e in entries for r in e["runs"]]
    targets = [
        {
            "name": "guided beats unguided on at least 7 of 8 references",
            "required": f"{needed} of {n}",
            "value": f"{wins} of {n}",
            "passed": wins >= needed,
        },
        {
            "name": f"mean gain at least {TARGET_MEAN_GAIN}",
            "required": TARGET_MEAN_GAIN,
            "value": mean_gain,
            "passed": mean_gain is not None and mean_gain >= TARGET_MEAN_GAIN,
        },
        {
            "name": f"colour adherence at least {TARGET_COLOUR} (guided, mean)",
            "required": TARGET_COLOUR,
            "value": colour,
            "passed": colour is not None and colour >= TARGET_COLOUR,
        },
    ]
    return {
        "references": n,
        "full_set": n == len(REFERENCES),
        "guided_wins": wins,
        "mean_gain": mean_gain,
        "mean_mf_unguided": mean([e["summary"]["mf_unguided"] for e in entries]),
        "mean_mf_guided": mean([e["summary"]["mf_guided"] for e in entries]),
        "mean_colour_guided": colour,
        "mean_colour_unguided": mean([e["summary"]["colour_unguided"] for e in entries]),
        "mean_class_guided": mean([e["summary"]["class_guided"] for e in entries]),
        "degenerate_runs": runs_where(entries, lambda run: not measured(run)),
        "results_without_tracks": runs_where(
            entries, lambda run: measured(run) and run["tracks"]["result"]["none_used_because"] is not None
        ),
        "generations": len(seconds),
        "mean_seconds_per_generation": mean(seconds),
        "min_seconds_per_generation": min(seconds) if seconds else None,
        "max_seconds_per_generation": max(seconds) if seconds else None,
        "total_seconds": round(total_seconds, 1),
        "targets": targets,
        "all_targets_passed": all(t["passed"] for t in targets),
    }


def runs_where(entries: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The runs `keep` picks, named by reference, weight and seed, with why their MF is what it is."""
    return [
        {
            "reference": entry["name"],
            "weight": run["weight"],
            "seed": run["seed"],
            "reason": run["motion_fidelity_reason"] or run["tracks"]["result"]["none_used_because"],
        }
        for entry in entries
        for run in entry["runs"]
        if keep(run)
    ]


def machine() -> dict[str, Any]:
    return {
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def model_training(preset: str, folder: Path | None) -> dict[str, Any] | None:
    """For a blocks model: the training recipe and final losses, so a reader knows which weights scored."""
    if preset != "blocks":
        return None
    from motionclone.backend.models.blocks import BLOCKS_MODEL_DIR

    try:
        training = json.loads(((folder or BLOCKS_MODEL_DIR) / "training.json").read_text())
    except (OSError, ValueError):
        return None
    keys = ("recipe", "final_losses", "seconds_this_run", "torch", "continued_from")
    return {key: training.get(key) for key in keys}


def load_model(settings: BenchSettings) -> Any:
    """The preset's model bundle; for blocks, from `settings.model_folder` when one is given."""
    options = {"folder": settings.model_folder} if settings.model_folder else {}
    return load_preset(settings.preset, settings.device, **options)


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Prepare the references, load the model once, generate and score everything, write the three outputs."""
    run_started = time.perf_counter()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    settings.out.mkdir(parents=True, exist_ok=True)
    cached = prepare_references(settings)

    started = time.perf_counter()
    bundle = load_model(settings)
    pipe = MotionClonePipeline.from_bundle(bundle)
    print(f"model: {settings.preset} on {settings.device} loaded in {time.perf_counter() - started:.1f} s", flush=True)

    total = len(cached) * len(settings.seeds) * 2
    count = 0
    entries = []
    tracker: dict[str, Any] | None = None
    for reference in cached:
        runs = []
        for seed in settings.seeds:
            for weight in settings.weights:
                count += 1
                params = make_params(settings, reference.reference.prompt, seed, weight)
                result_dir = settings.out / "results" / reference.reference.name / f"{weight_label(weight)}-seed{seed}"
                run = run_one(pipe, reference, params, result_dir)
                tracker = run.pop("_tracker")
                runs.append(run)
                print(
                    f"[{count}/{total}] {reference.reference.name} w={weight:g} seed={seed}: {run['seconds']:.1f} s, "
                    f"MF {describe_mf(run)}, colour {fmt(run['colour_adherence'], 2)}, "
                    f"class {fmt(run['class_adherence'], 2)}",
                    flush=True,
                )
        entries.append(reference_entry(reference, runs, settings))

    example = make_params(settings, "-", settings.seeds[0], settings.weights[1])
    parameters = {k: v for k, v in example.to_dict().items() if k not in ("prompt", "seed", "motion_guidance_weight")}
    report = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "preset": settings.preset,
            "config": settings.config,
            "config_values": CONFIG_PRESETS[settings.config],
            "overrides": settings.overrides,
            "steps": example.num_inference_steps,
            "guidance_steps": example.guidance_steps,
            "weights": {"unguided": settings.weights[0], "guided": settings.weights[1]},
            "seeds": list(settings.seeds),
            "num_frames": example.num_frames,
            "height": example.height,
            "width": example.width,
            "device": settings.device,
            "parameters": parameters,
            "references_dir": str(settings.references_dir),
            "reference_set": {
                "version": SET_VERSION,
                "reference_seed": REFERENCE_SEED,
                "training_seed": TRAINING_SEED,
                "size": REFERENCE_SIZE,
                "frames": REFERENCE_FRAMES,
                "selected": [c.reference.name for c in cached],
            },
        },
        "model": {
            "description": bundle.description,
            "training": model_training(settings.preset, settings.model_folder),
        },
        "evaluation": {
            "grid": DEFAULT_GRID,
            "region": DEFAULT_REGION,
            "moving_fraction": DEFAULT_MOVING_FRACTION,
            "epsilon_px": DEFAULT_EPSILON,
            "still_step_px": DEFAULT_STILL_STEP,
            "motion_fidelity": "symmetric (evaluate's `motion_fidelity`); gain = guided − unguided, means over seeds",
            "tracker": tracker,
            "subject_region": network_region_settings(),  # where colour and class adherence are read
        },
        "machine": machine(),
        "references": entries,
    }
    report["summary"] = summarise(entries, time.perf_counter() - run_started)
    write_json(report, settings.out / "fidelity.json")
    (settings.out / "fidelity.md").write_text(markdown(report))
    write_png(settings.out / "fidelity.png", picture(cached, entries, settings))
    report["summary"]["total_seconds"] = round(time.perf_counter() - run_started, 1)
    write_json(report, settings.out / "fidelity.json")  # again, with the time the outputs took
    return report


def reference_entry(cached: CachedReference, runs: list[dict[str, Any]], settings: BenchSettings) -> dict[str, Any]:
    reference = cached.reference
    blender = cached.info.get("blender") or {}
    return {
        "name": reference.name,
        "source": reference.source,
        "motion": reference.motion,
        "prompt": reference.prompt,
        "reference_caption": reference.reference_caption,
        "reference_folder": str(cached.folder),
        "figure_height_fraction": blender.get("figure_height_fraction"),
        "runs": runs,
        "summary": summarise_reference(runs, settings.weights),
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(temporary, path)


# ---- fidelity.md -----------------------------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    s, summary, m = report["settings"], report["summary"], report["machine"]
    w0, w1 = s["weights"]["unguided"], s["weights"]["guided"]
    description = report["model"]["description"]
    sha = str(description.get("manifest_sha256", ""))[:12]
    seeds = ", ".join(str(seed) for seed in s["seeds"])
    lines = [
        "# Motion fidelity benchmark",
        "",
        f"Preset `{s['preset']}`{f' (manifest sha256 {sha}…)' if sha else ''}, config `{s['config']}`: "
        f"{s['steps']} steps of which {s['guidance_steps']} guided, {s['num_frames']} frames at "
        f"{s['width']}x{s['height']}, seeds {seeds}, device {s['device']} ({m['processor']}, {m['cpu_count']} CPUs, "
        f"torch {m['torch']}). Created {report['created']}.",
        "",
    ]
    if s.get("overrides"):
        changed = ", ".join(f"`{name}={json.dumps(value)}`" for name, value in s["overrides"].items())
        lines += [f"Changed from the config in both runs (`--set`): {changed}.", ""]
    lines += [
        f"MF: symmetric motion fidelity of the result against the reference (`motionclone evaluate`); unguided is "
        f"weight {w0:g}, guided weight {w1:g}, same seeds; values are means over the seeds. Colour and class: the "
        "share of result frames whose subject has the prompt's colour / class.",
        "",
        "| reference | prompt | MF unguided | MF guided | gain | colour (guided) | class (guided) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for e in report["references"]:
        r = e["summary"]
        lines.append(
            f"| {e['name']} | {e['prompt']} | {fmt(r['mf_unguided'])} | {fmt(r['mf_guided'])} | "
            f"{fmt(r['gain'], sign=True)} | {fmt(r['colour_guided'], 2)} | {fmt(r['class_guided'], 2)} |"
        )
    lines += ["", "References:", ""]
    for e in report["references"]:
        what = f"`{e['reference_caption']}`" if e["reference_caption"] else "Workbench render of the demo blockout"
        note = ""
        if e["figure_height_fraction"]:
            low, high = e["figure_height_fraction"]["min"], e["figure_height_fraction"]["max"]
            pixels = s["height"]
            note = f"; the figure is {low:.0%}-{high:.0%} of the frame height (about {round(high * pixels)} px)"
        lines.append(f"- {e['name']} ({e['source']}): {e['motion']}; {what}{note}")
    seconds = summary["mean_seconds_per_generation"]
    lines += [
        "",
        "## Summary",
        "",
        f"- guided beats unguided on {summary['guided_wins']} of {summary['references']} references",
        f"- mean gain: {fmt(summary['mean_gain'], sign=True)} (MF {fmt(summary['mean_mf_unguided'])} unguided, "
        f"{fmt(summary['mean_mf_guided'])} guided)",
        f"- mean colour adherence: {fmt(summary['mean_colour_guided'], 2)} guided, "
        f"{fmt(summary['mean_colour_unguided'], 2)} unguided",
        f"- mean class adherence (guided): {fmt(summary['mean_class_guided'], 2)}",
        f"- {summary['generations']} generations, {fmt(seconds, 1)} s each on average "
        f"({fmt(summary['min_seconds_per_generation'], 1)}-{fmt(summary['max_seconds_per_generation'], 1)} s); "
        f"whole run {summary['total_seconds']:.0f} s",
        *listed_runs(
            summary["degenerate_runs"],
            "Degenerate MF, left out of the means (the reference gives nothing to compare; the reference's gain is "
            "n/a and counts as no win):",
        ),
        *listed_runs(
            summary["results_without_tracks"],
            "MF 0 because no result track took part, counted in the means (the result does not move like the "
            "reference):",
        ),
        "",
        "## Targets",
        "",
        "| target | required | value | result |",
        "|---|---:|---:|---|",
    ]
    for t in summary["targets"]:
        value = t["value"] if isinstance(t["value"], str) else fmt(t["value"])
        lines.append(f"| {t['name']} | {t['required']} | {value} | {'PASS' if t['passed'] else 'FAIL'} |")
    if not summary["full_set"]:
        lines += [
            "",
            f"This run covers {summary['references']} of the {len(REFERENCES)} references: the targets are defined on "
            "the full set, so these results are indicative only.",
        ]
    return "\n".join(lines) + "\n"


def listed_runs(runs: list[dict[str, Any]], heading: str) -> list[str]:
    """Markdown lines naming each run under a heading; none when there are no runs."""
    if not runs:
        return []
    return ["", heading, ""] + [
        f"- {run['reference']}, weight {run['weight']:g}, seed {run['seed']}: {run['reason']}" for run in runs
    ]


# ---- fidelity.png ----------------------------------------------------------------------------------------------------
def picture(cached: list[CachedReference], entries: list[dict[str, Any]], settings: BenchSettings) -> np.ndarray:
    """One row per reference: reference | unguided | guided frames (first seed), nearest-upscaled, labelled."""
    font = ImageFont.load_default()
    tile, gap, group_gap, label = PICTURE_TILE, PICTURE_GAP, PICTURE_GROUP_GAP, PICTURE_LABEL
    group_width = PICTURE_FRAMES * tile + (PICTURE_FRAMES - 1) * gap
    width = 3 * group_width + 2 * group_gap + 2 * gap
    row_height = label + tile + gap
    image = Image.new("RGB", (width, label + len(entries) * row_height + gap), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w0, w1 = settings.weights
    headings = ("reference", f"unguided (weight {w0:g})", f"guided (weight {w1:g})")
    for index, heading in enumerate(headings):
        draw.text((gap + index * (group_width + group_gap), 2), heading, fill=(0, 0, 0), font=font)
    seed = settings.seeds[0]
    for row, (reference, entry) in enumerate(zip(cached, entries, strict=True)):
        top = label + row * row_height
        result_dirs = [Path(_run(entry, weight, seed)["result_dir"]) for weight in settings.weights]
        results = [load_result(result_dir).frames for result_dir in result_dirs]
        sampled = scored_reference_frames(reference.frames_dir, result_dirs[0])
        s = entry["summary"]
        caption = (
            f'{entry["name"]}: "{entry["prompt"]}"   MF unguided {fmt(s["mf_unguided"])}, guided '
            f"{fmt(s['mf_guided'])} ({fmt(s['gain'], sign=True)}), colour {fmt(s['colour_guided'], 2)}, class "
            f"{fmt(s['class_guided'], 2)}   seed {seed}"
        )
        draw.text((gap, top + 2), caption, fill=(0, 0, 0), font=font)
        for group, clip in enumerate((sampled, *results)):
            left = gap + group * (group_width + group_gap)
            for column, frame in enumerate(pick_evenly(clip, min(PICTURE_FRAMES, len(clip)))):
                tile_image = Image.fromarray(frame).resize((tile, tile), Image.Resampling.NEAREST)
                image.paste(tile_image, (left + column * (tile + gap), top + label))
    return np.asarray(image)


def scored_reference_frames(reference: Path, result_dir: Path) -> np.ndarray:
    """The reference frames the result was scored against: sampled and resized with the rule its result.json
    records, as `evaluate` does."""
    result = load_result(result_dir)
    resize_mode, frame_sampling, frame_step = recorded_sampling(result.parameters, result_dir)
    count, height, width = result.frames.shape[:3]
    return sample_reference(reference, count, height, width, resize_mode, frame_sampling, frame_step).frames


def _run(entry: dict[str, Any], weight: float, seed: int) -> dict[str, Any]:
    return next(r for r in entry["runs"] if r["weight"] == weight and r["seed"] == seed)


# ---- main ------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValueError, MotionCloneError) as error:
        parser.error(str(error))
    print(
        f"bench_fidelity: {len(settings.references)} references x {len(settings.seeds)} seeds x weights "
        f"{settings.weights[0]:g}/{settings.weights[1]:g}, preset {settings.preset} on {settings.device}",
        flush=True,
    )
    try:
        report = run_benchmark(settings)
    except KeyboardInterrupt:
        print("bench_fidelity interrupted", file=sys.stderr)
        return 130
    except (BenchFailed, MotionCloneError, OSError, ValueError) as error:
        print(f"bench_fidelity failed: {error}", file=sys.stderr)
        return 1
    summary = report["summary"]
    for target in summary["targets"]:
        value = target["value"] if isinstance(target["value"], str) else fmt(target["value"])
        print(f"  {'PASS' if target['passed'] else 'FAIL'}  {target['name']}: {value}")
    print(f"wrote {settings.out / 'fidelity.md'}, fidelity.json and fidelity.png ({summary['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
