"""Benchmark the MotionClone engine: extraction, guided and unguided denoising steps, VAE decode and peak memory.

Usage:
    python scripts/bench_engine.py --size tiny
    python scripts/bench_engine.py --size full --device cuda --dtype float16 [--full-run] [--out bench.json]

Prints one JSON object with the measured numbers. `--size tiny` times the tiny preset on the CPU;
`--size full` builds the full SD-1.5 + AnimateDiff v3 adapter topology with random weights in code (no download),
which is enough for timing and memory but not for pictures. The reference clip is the synthetic moving square.

Per-step times come from the pipeline's progress callback: `denoise` reports ("denoise", i, N) before the loop and
after every step, so consecutive reports bracket one step, and step i is guided when i < G. That holds for a clip of
one context window (16 frames): `--frames` is limited to it, as a longer clip reports every window pass instead.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, MotionAdapter, SparseControlNetModel, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextConfig, CLIPTextModel

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.engine.attention_capture import PRECISIONS, capture_temporal_attention, guided_module_names
from motionclone.backend.engine.groupnorm import set_motion_module_norm
from motionclone.backend.engine.partial_unet import last_block, no_grad_after, run_unet_until
from motionclone.backend.engine.representation import encode_reference
from motionclone.backend.engine.sparsectrl import SparseCondition
from motionclone.backend.info import cpu_model_name
from motionclone.backend.models.bundle import ModelBundle, official_ddim_scheduler
from motionclone.backend.models.tiny import build_tiny_bundle, build_tiny_sparsectrl
from motionclone.backend.models.tokenizer import build_offline_clip_tokenizer
from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import prepare_reference

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Size defaults: (device, frames, height, width). The full size is the official camera config's 16×512×512.
SIZE_DEFAULTS = {"tiny": ("cpu", 16, 128, 128), "full": ("cuda", 16, 512, 512)}
PROMPT = "a red fox running through snow"
# Target for the ratio of a guided step to an unguided CFG step (full size, one GPU).
GUIDED_RATIO_TARGET = 1.6
VAE_SEED = 2026
# Longest clip the engine denoises in one pass; a longer one runs window by window (see parse_args).
CONTEXT_LENGTH = {field.name: field.default for field in dataclasses.fields(MotionCloneParams)}["context_length"]

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------------------
# Full-size random-weight components (benchmark only: the real preset loads weights in models/sd15.py)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create floating-point parameters in `dtype` while the block runs, so no float32 copy is ever made."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_sd15_unet2d_config() -> UNet2DConditionModel:
    """SD-1.5's 2-D UNet on the meta device: only its config is used (as `from_unet2d` reads it)."""
    with torch.device("meta"):
        return UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=32,
        )


def build_v3_motion_adapter() -> MotionAdapter:
    """A motion adapter with the AnimateDiff v3 layout (8 heads, 32 positions, no mid-block motion module)."""
    return MotionAdapter(
        block_out_channels=(320, 640, 1280, 1280),
        motion_layers_per_block=2,
        motion_num_attention_heads=8,
        motion_max_seq_length=32,
        motion_norm_num_groups=32,
        use_motion_mid_block=False,
    )


def build_sd15_vae() -> AutoencoderKL:
    """The SD-1.5 autoencoder layout (scale factor 8, 4 latent channels)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
        scaling_factor=0.18215,
    )


def build_clip_l_text_encoder() -> CLIPTextModel:
    """CLIP-L text encoder layout (768 wide, 12 layers); the offline tokenizer's 514 ids fit its vocabulary."""
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
    )
    return CLIPTextModel(config)


def build_full_bundle(device: torch.device, dtype: torch.dtype, seed: int = 0) -> ModelBundle:
    """SD-1.5 + AnimateDiff v3 topology with random weights, created directly on `device` in `dtype`.

    The motion UNet comes from diffusers' own `from_unet2d` (without loading weights), so its layout is the one the
    `sd15-animatediff-v3` preset builds. The adapter itself is only needed for its config (the UNet holds the
    motion weights), so it stays on the meta device, as the preset keeps its adapter off the GPU.
    """
    unet2d = build_sd15_unet2d_config()
    with torch.device("meta"):
        adapter_config = build_v3_motion_adapter()
    with torch.random.fork_rng(devices=[]), torch.device(device), default_dtype(dtype):
        torch.manual_seed(seed)
        unet = UNetMotionModel.from_unet2d(unet2d, adapter_config, load_weights=False)
        vae = build_sd15_vae()
        text_encoder = build_clip_l_text_encoder()
    bundle = ModelBundle(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=build_offline_clip_tokenizer(),
        unet=unet.eval(),
        motion_adapter=adapter_config,
        scheduler=official_ddim_scheduler(),
        description={"preset": "bench-full-random", "seed": seed, "dtype": str(dtype).removeprefix("torch.")},
    )
    return bundle.to(device, dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Clocks and memory


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function: Callable[[], T]) -> tuple[T, float]:
    """(result, wall seconds) of `function()`, with the device synchronized on both sides."""
    synchronize(device)
    started = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - started


class StepClock:
    """Progress callback that records the time of every ("denoise", i, N) report."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: dict[int, float] = {}

    def __call__(self, stage: str, step: int, total: int) -> None:
        if stage == "denoise":
            synchronize(self.device)
            self.marks[step] = time.perf_counter()

    def step_seconds(self) -> list[float]:
        """Duration of step i for i = 0 … N−1."""
        return [self.marks[i + 1] - self.marks[i] for i in range(len(self.marks) - 1)]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int:
    """Peak CUDA memory allocated since the last reset, or the process's peak resident set on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kilobytes on Linux


def describe_device(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(device),
            "total_memory_bytes": int(properties.total_memory),
            "cuda": torch.version.cuda,
        }
    return {
        "type": "cpu",
        "name": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other processes on the same cores slow every number down; this says how busy the machine was at the start.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def parameter_counts(pipe: MotionClonePipeline) -> dict[str, int]:
    models = {
        "unet": pipe.unet,
        "motion_adapter": pipe.motion_adapter,
        "vae": pipe.vae,
        "text_encoder": pipe.text_encoder,
    }
    return {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def minimum(values: list[float]) -> float | None:
    return min(values) if values else None


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def gib(value: int) -> float:
    return round(value / 2**30, 3)


# ----------------------------------------------------------------------------------------------------------------------
# The benchmark


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZE_DEFAULTS), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cpu for tiny, cuda for full")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--frames", type=int, help=f"default 16; at most {CONTEXT_LENGTH}, one context window")
    parser.add_argument("--height", type=int, help="default 128 for tiny, 512 for full")
    parser.add_argument("--width", type=int, help="default 128 for tiny, 512 for full")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps to time (default 4)")
    parser.add_argument("--guided", type=int, help="how many of them are guided (default: half of --steps)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of extraction, forward and decode (default 3)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (autograd.grad stays outside)")
    parser.add_argument("--attention-precision", choices=PRECISIONS, default="parity")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up pass")
    parser.add_argument("--full-run", action="store_true", help="also time a whole camera-preset run (100/50 steps)")
    parser.add_argument(
        "--inversion-run", action="store_true", help="also time a whole run of the inversion-based method"
    )
    parser.add_argument("--inversion-config", default="inversion-fox", help="old official config for --inversion-run")
    parser.add_argument("--inversion-steps", type=int, default=1000, help="DDIM inversion steps (official 1000)")
    parser.add_argument(
        "--inversion-sampling-steps", type=int, help="override the config's sampling steps (3/5 of them guided)"
    )
    parser.add_argument(
        "--sparsectrl",
        choices=("rgb", "scribble"),
        help="image- or sketch-to-video: a random SparseCtrl model of this kind, the reference's first frame as the "
        "condition on frame 0; --full-run then runs the i2v-rgb or i2v-sketch config",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    default_device, frames, height, width = SIZE_DEFAULTS[args.size]
    args.device = args.device or default_device
    args.dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    args.frames = frames if args.frames is None else args.frames
    args.height = args.height or height
    args.width = args.width or width
    args.guided = args.guided if args.guided is not None else max(1, args.steps // 2)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch build")
    if args.steps < 1 or not 1 <= args.guided <= args.steps:
        parser.error(f"need --steps >= 1 and 1 <= --guided <= --steps; got --steps {args.steps} --guided {args.guided}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}")
    if not 1 <= args.frames <= CONTEXT_LENGTH:
        # Beyond one window `denoise` reports every window pass, not every step, so the step clock would mix guided
        # and unguided steps; and the single forwards timed here would run all frames at once, unlike the engine.
        parser.error(
            f"--frames must be 1 to {CONTEXT_LENGTH} (one context window); got {args.frames}: a longer clip is "
            "denoised window by window, which this benchmark does not time (scripts/bench_windows.py does)"
        )
    return args


def build_pipeline(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> MotionClonePipeline:
    tiny = args.size == "tiny"
    bundle = build_tiny_bundle(device=device, dtype=dtype) if tiny else build_full_bundle(device, dtype)
    pipe = MotionClonePipeline.from_bundle(bundle)
    if args.sparsectrl:
        pipe.controlnet = build_sparsectrl(args.sparsectrl, tiny, device, dtype)
        pipe.controlnet_kind = args.sparsectrl
    if args.compile:
        # Compiled in place, so module names (and the hooks the engine installs by name) stay the same. Static shapes:
        # batch 1 and 2, grad on and off and the swapped attention processors each get their own graph, hence the
        # higher recompile limit. The extraction's early-exit hook is a graph break; autograd.grad stays outside.
        torch._dynamo.config.recompile_limit = 64
        pipe.unet.compile(dynamic=False)
    return pipe


def build_sparsectrl(kind: str, tiny: bool, device: torch.device, dtype: torch.dtype) -> SparseControlNetModel:
    """A random SparseCtrl model for the benchmark's UNet: the tiny one, or the SD-1.5 layout of the official
    checkpoints (diffusers' defaults; RGB takes VAE latents through one conv, scribble pixels through a conv tower)."""
    if tiny:
        return build_tiny_sparsectrl(kind).to(device, dtype)
    with torch.random.fork_rng(devices=[]), torch.device(device), default_dtype(dtype):
        torch.manual_seed(1)
        controlnet = SparseControlNetModel(
            conditioning_channels=4 if kind == "rgb" else 3, use_simplified_condition_embedding=kind == "rgb"
        )
    return controlnet.eval().requires_grad_(False)


def bench_condition(pipe: MotionClonePipeline, frames: Any) -> SparseCondition | None:
    """The reference's first frame as the condition on frame 0, when the pipeline has a SparseCtrl model."""
    return None if pipe.controlnet_kind is None else SparseCondition(pipe.controlnet_kind, frames[:1], (0,))


def time_stages(
    pipe: MotionClonePipeline,
    params: MotionCloneParams,
    reference: Any,
    device: torch.device,
    repeats: int,
) -> dict[str, Any]:
    """Time extraction, one batch-1 forward, N denoising steps and the decode, as `__call__` runs them."""
    samples: dict[str, list[float]] = {
        "extract": [],
        "vae_encode": [],
        "unet_forward": [],
        "partial_forward": [],
        "decode": [],
    }
    peaks: dict[str, int] = {}
    frames = prepare_reference(reference, params.num_frames, params.height, params.width, params.resize_mode).frames
    module_names = guided_module_names(pipe.unet, params.motion_guidance_blocks)
    timesteps = pipe.prepare_timesteps(params)
    set_motion_module_norm(pipe.unet, params.motion_norm)
    empty_embeds = pipe.encode_prompt("")
    negative_embeds = pipe.encode_prompt(params.negative_prompt)
    positive_embeds = pipe.encode_prompt(params.full_prompt)
    noise = pipe.prepare_noise(params.seed, params)
    condition = bench_condition(pipe, frames)
    sparsectrl = pipe.prepare_sparsectrl(condition, params)

    reset_peak(device)
    for _ in range(repeats):
        (representation, _, _), seconds = timed(
            device, lambda: pipe.obtain_representation(frames, noise, empty_embeds, params, None, condition)
        )
        samples["extract"].append(seconds)
        generator = torch.Generator(device=pipe.vae.device).manual_seed(VAE_SEED)
        encode = functools.partial(encode_reference, pipe.vae, frames, params.vae_posterior, generator)
        _, seconds = timed(device, encode)
        samples["vae_encode"].append(seconds)
    peaks["extract"] = peak_bytes(device)

    # One forward of batch 1 without autograd: the cost model's unit (docs/performance.md).
    E_pos = positive_embeds.repeat_interleave(params.num_frames, dim=0)
    t_first = int(timesteps[0])
    guided_until = last_block(pipe.unet, params.motion_guidance_blocks)
    with torch.no_grad():
        for _ in range(repeats):
            _, seconds = timed(device, lambda: pipe.unet(noise, t_first, encoder_hidden_states=E_pos).sample)
            samples["unet_forward"].append(seconds)
            # The extraction's forward: the same network stopped after the last guided block.
            _, seconds = timed(
                device, lambda: run_unet_until(pipe.unet, guided_until, noise, t_first, encoder_hidden_states=E_pos)
            )
            samples["partial_forward"].append(seconds)
    saved_bytes = guided_pass_saved_bytes(pipe, noise, t_first, E_pos, params)

    reset_peak(device)
    clock = StepClock(device)
    latents, losses = pipe.denoise(
        noise,
        timesteps,
        representation,
        module_names,
        negative_embeds,
        positive_embeds,
        params,
        clock,
        lambda: False,
        sparsectrl=sparsectrl,
    )
    synchronize(device)
    peaks["denoise"] = peak_bytes(device)

    reset_peak(device)
    for _ in range(repeats):
        _, seconds = timed(
            device,
            lambda: pipe.decode_latents_to_frames(latents, params.decode_chunk_size, lambda *_: None, lambda: False),
        )
        samples["decode"].append(seconds)
    peaks["decode"] = peak_bytes(device)

    steps = clock.step_seconds()
    return {
        "samples": samples,
        "guided_steps": steps[: params.guidance_steps],
        "unguided_steps": steps[params.guidance_steps :],
        "timesteps": timesteps.tolist(),
        "motion_loss": losses,
        "latents_finite": bool(torch.isfinite(latents).all()),
        "peaks": peaks,
        "guided_pass_saved_bytes": saved_bytes,
    }


def guided_pass_saved_bytes(
    pipe: MotionClonePipeline, x_t: torch.Tensor, t: int, E_pos: torch.Tensor, params: MotionCloneParams
) -> int:
    """Bytes autograd keeps for the backward of one guided pass (ε_c with autograd up to the last guided block, as
    `denoise` runs it), counted once per storage and without the model's weights: the guided pass's activations."""
    weights = {parameter.untyped_storage().data_ptr() for parameter in pipe.unet.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    module_names = guided_module_names(pipe.unet, params.motion_guidance_blocks)
    x_g = x_t.detach().clone().requires_grad_(True)
    with (
        capture_temporal_attention(pipe.unet, module_names, params.attention_precision) as store,
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        no_grad_after(pipe.unet, last_block(pipe.unet, params.motion_guidance_blocks)),
    ):
        store.recording = True
        pipe.unet(x_g, t, encoder_hidden_states=E_pos)
    return sum(saved.values())


def time_full_run(
    pipe: MotionClonePipeline, args: argparse.Namespace, reference: Any, device: torch.device
) -> dict[str, Any]:
    """A whole camera-preset call (100 steps, 50 guided), or the i2v config with `--sparsectrl`, end to end."""
    config = {"rgb": "i2v-rgb", "scribble": "i2v-sketch"}.get(args.sparsectrl, "camera")
    params = MotionCloneParams.from_config(
        config,
        prompt=PROMPT,
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        attention_precision=args.attention_precision,
    )
    clock = StepClock(device)
    reset_peak(device)
    sampled = prepare_reference(reference, params.num_frames, params.height, params.width).frames
    condition = bench_condition(pipe, sampled)
    output, seconds = timed(device, lambda: pipe(reference, params, progress=clock, condition=condition))
    steps = clock.step_seconds()
    guided, unguided = steps[: params.guidance_steps], steps[params.guidance_steps :]
    guided_mean, unguided_mean = mean(guided), mean(unguided)
    return {
        "config": config,
        "steps": params.num_inference_steps,
        "guided": params.guidance_steps,
        "total_s": round(seconds, 3),
        "stage_timings_s": output.metadata["timings_s"],
        "guided_step_mean_s": rounded(guided_mean),
        "unguided_step_mean_s": rounded(unguided_mean),
        "guided_over_unguided": rounded(guided_mean / unguided_mean if guided_mean and unguided_mean else None, 3),
        "peak_memory_bytes": output.metadata["peak_memory_bytes"],
        "frames_shape": list(output.frames.shape),
    }


def time_inversion_run(
    pipe: MotionClonePipeline, args: argparse.Namespace, reference: Any, device: torch.device
) -> dict[str, Any]:
    """A whole call in inversion mode (an official old config, `inversion-fox` by default), end to end."""
    overrides: dict[str, Any] = {
        "prompt": "Cat, moves its head, in the bedroom",
        "num_frames": args.frames,
        "height": args.height,
        "width": args.width,
        "inversion_steps": args.inversion_steps,
    }
    if args.inversion_sampling_steps:
        overrides["num_inference_steps"] = args.inversion_sampling_steps
        overrides["guidance_steps"] = max(1, args.inversion_sampling_steps * 3 // 5)
    params = MotionCloneParams.from_config(args.inversion_config, **overrides)
    reset_peak(device)
    output, seconds = timed(device, lambda: pipe(reference, params))
    return {
        "config": args.inversion_config,
        "inversion_steps": params.inversion_steps,
        "steps": params.num_inference_steps,
        "guided": params.guidance_steps,
        "total_s": round(seconds, 3),
        "stage_timings_s": output.metadata["timings_s"],
        "peak_memory_bytes": output.metadata["peak_memory_bytes"],
        "inversion": output.metadata.get("inversion"),
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    device_info = describe_device(device)
    pipe, build_seconds = timed(device, lambda: build_pipeline(args, device, dtype))
    reference = make_moving_square_clip(args.frames, args.height, args.width)
    params = MotionCloneParams(
        prompt=PROMPT,
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_steps=args.guided,
        attention_precision=args.attention_precision,
    )

    warmup_seconds = None
    if not args.no_warmup:
        # One guided and one unguided step (plus extraction and decode) on the same shapes: CUDA kernels, cuDNN
        # algorithm choice and torch.compile graphs for both batch sizes are ready before anything is timed.
        warmup = params.replace(num_inference_steps=2, guidance_steps=1) if args.steps > 1 else params
        _, warmup_seconds = timed(device, lambda: time_stages(pipe, warmup, reference, device, 1))

    result = time_stages(pipe, params, reference, device, args.repeats)
    samples = result["samples"]
    guided_mean, unguided_mean = mean(result["guided_steps"]), mean(result["unguided_steps"])
    forward_mean = mean(samples["unet_forward"])
    ratio = guided_mean / unguided_mean if guided_mean and unguided_mean else None
    # Minimums: other processes on the same cores only ever add time, so the fastest sample is the least disturbed.
    guided_min, unguided_min = minimum(result["guided_steps"]), minimum(result["unguided_steps"])
    ratio_min = guided_min / unguided_min if guided_min and unguided_min else None

    def in_forwards(seconds: float | None) -> float | None:
        return rounded(seconds / forward_mean if seconds and forward_mean else None, 3)

    peaks = result["peaks"]
    peak_kind = "cuda_max_memory_allocated" if device.type == "cuda" else "process_max_rss"
    report: dict[str, Any] = {
        "benchmark": "motionclone-engine",
        "size": args.size,
        "device": device_info,
        "dtype": args.dtype,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "shape": {
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "latents": [1, 4, args.frames, args.height // pipe.vae_scale_factor, args.width // pipe.vae_scale_factor],
        },
        "parameters": parameter_counts(pipe),
        "settings": {
            "sparsectrl": args.sparsectrl,
            "steps": args.steps,
            "guided": args.guided,
            "timesteps": result["timesteps"],
            "motion_guidance_blocks": list(params.motion_guidance_blocks),
            "attention_precision": args.attention_precision,
            "compile": args.compile,
            "warmup": not args.no_warmup,
            "repeats": args.repeats,
            "reference": "samples.make_moving_square_clip",
        },
        "timings_s": {
            "build": round(build_seconds, 3),
            "warmup": rounded(warmup_seconds, 3),
            "extract": rounded(mean(samples["extract"])),
            "extract_vae_encode_part": rounded(mean(samples["vae_encode"])),
            "unet_forward_batch1": rounded(forward_mean),
            "partial_forward_batch1": rounded(mean(samples["partial_forward"])),
            "guided_step_mean": rounded(guided_mean),
            "unguided_step_mean": rounded(unguided_mean),
            "decode": rounded(mean(samples["decode"])),
            "guided_steps": [round(value, 4) for value in result["guided_steps"]],
            "unguided_steps": [round(value, 4) for value in result["unguided_steps"]],
        },
        "timings_min_s": {
            "extract": rounded(minimum(samples["extract"])),
            "unet_forward_batch1": rounded(minimum(samples["unet_forward"])),
            "guided_step": rounded(guided_min),
            "unguided_step": rounded(unguided_min),
            "decode": rounded(minimum(samples["decode"])),
        },
        "ratios": {
            "guided_over_unguided": rounded(ratio, 3),
            "guided_over_unguided_of_minimums": rounded(ratio_min, 3),
            "guided_over_unguided_target_max": GUIDED_RATIO_TARGET,
            "within_target": None if ratio is None else ratio <= GUIDED_RATIO_TARGET,
            "extract_in_forwards": in_forwards(mean(samples["extract"])),
            "extract_without_vae_encode_in_forwards": in_forwards(
                mean(samples["extract"]) - mean(samples["vae_encode"])
            ),
            "partial_forward_in_forwards": in_forwards(mean(samples["partial_forward"])),
            "guided_step_in_forwards": in_forwards(guided_mean),
            "unguided_step_in_forwards": in_forwards(unguided_mean),
        },
        "peak_memory": {
            "kind": peak_kind,
            "extract_bytes": peaks["extract"],
            "denoise_bytes": peaks["denoise"],
            "decode_bytes": peaks["decode"],
            "max_gib": gib(max(peaks.values())),
            "guided_pass_saved_activation_bytes": result["guided_pass_saved_bytes"],
        },
        "motion_loss": result["motion_loss"],
        "latents_finite": result["latents_finite"],
        "full_run": time_full_run(pipe, args, reference, device) if args.full_run else None,
        "inversion_run": time_inversion_run(pipe, args, reference, device) if args.inversion_run else None,
    }
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run_benchmark(args)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
