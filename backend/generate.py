"""Run one MotionClone job in this process: load a preset, generate, write the result folder. No bpy."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .engine import MotionCloneOutput, MotionCloneParams, MotionClonePipeline, RepresentationCache
from .engine.sparsectrl import SparseCondition
from .models import load_preset
from .results import write_result_folder
from .video_io import probe_clip, sample_frame_indices

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class GenerateJob:
    """One local generation.

    Attributes:
        reference: video file, image folder or array.
        params: the MotionClone parameters.
        out_dir: where result.mp4, frames/ and result.json go.
        preset: model preset name.
        preset_options: options for the preset (sources for real weights, `seed` for tiny, `sparsectrl` kind,
            `motion_lora` and `loras`; see `load_preset`).
        device: "cpu", "cuda", "cuda:1" ...
        dtype: "float32", "float16" or "bfloat16"; None takes the preset's default.
        cache_dir: folder for cached motion representations, or None.
        condition: SparseCtrl keyframes or sketches, or None for text-to-video.
        overwrite: replace a result already in `out_dir` (refused otherwise).
    """

    reference: Any
    params: MotionCloneParams
    out_dir: Path
    preset: str = "sd15-animatediff-v3"
    preset_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str | None = None
    cache_dir: Path | None = None
    condition: SparseCondition | None = None
    overwrite: bool = False


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_generate_job(
    job: GenerateJob,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[MotionCloneOutput, dict[str, Path]]:
    """Load the models, generate, write the outputs; returns the output and the written paths."""
    check_reference(job.reference, job.params)
    bundle = load_preset(
        job.preset, device=job.device, dtype=DTYPES[job.dtype] if job.dtype else None, **job.preset_options
    )
    pipe = MotionClonePipeline.from_bundle(bundle)
    cache = RepresentationCache(None if job.cache_dir is None else Path(job.cache_dir).expanduser())
    output = pipe(
        job.reference,
        job.params,
        representation_cache=cache,
        progress=progress,
        cancel=cancel,
        condition=job.condition,
    )
    paths = write_result_folder(
        output.frames, output.metadata, job.out_dir, fps=job.params.fps, overwrite=job.overwrite
    )
    return output, paths


def check_reference(reference: Any, params: MotionCloneParams) -> None:
    """Decode the reference once and check it holds the frames `params` sample, before the model loads (seconds to
    minutes with SD-1.5), so that a reference that does not decode or is too short is reported at once.

    Raises:
        VideoInputError: the reference cannot be read, or has too few frames.
    """
    total, _ = probe_clip(reference)
    sample_frame_indices(total, params.num_frames, params.frame_sampling, params.frame_step)
