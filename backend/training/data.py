"""Procedural "blocks" clips: short captioned videos of a coloured subject moving over a textured background. No bpy.

Used to train a small text-to-video diffusion model. numpy only (no torch), deterministic from a seed and fast enough
to make thousands of clips in minutes on two CPU cores.

This module renders clips and writes and reads data set files. It is the generator's entry point and re-exports the
public names of its parts, so callers import everything from here:

clip_spec.py        ClipSpec, the vocabularies of its fields, their meaning (coordinates, spec fields) and spec JSON
spec_sampling.py    random specs whose subject stays inside the frame and on the ground
captions.py         the caption grammar and its vocabulary
motion_paths.py     subject and camera paths over a clip
drawing.py          anti-aliased signed-distance drawing primitives
subject_drawing.py  the ball, cube, figure and car, with their shadows, masks and centres
backgrounds.py      the six backgrounds and each frame's view of them
"""

import io
import json
import multiprocessing
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backgrounds import render_backdrop, view
from .captions import CAPTION_VOCABULARY, MAX_CAPTION_CHARS, caption_for, caption_words
from .clip_spec import (
    BACKGROUNDS,
    BASE_TRAVEL,
    CAMERA_MOTIONS,
    COLOURS,
    MOTIONS,
    SUBJECTS,
    ClipSpec,
    scene_horizon,
    spec_from_json,
    spec_to_json,
    validate_spec,
)
from .motion_paths import camera_path, subject_path
from .spec_sampling import CAMERA_MOTION_PROBABILITY, EXCLUDED_COLOURS, sample_clip_spec
from .subject_drawing import Pose, draw_subject

__all__ = [
    "BACKGROUNDS",
    "BASE_TRAVEL",
    "CAMERA_MOTIONS",
    "CAMERA_MOTION_PROBABILITY",
    "CAPTION_VOCABULARY",
    "COLOURS",
    "EXCLUDED_COLOURS",
    "MAX_CAPTION_CHARS",
    "MOTIONS",
    "SUBJECTS",
    "ClipSpec",
    "RenderedClip",
    "caption_for",
    "caption_words",
    "clip_at",
    "generate_clips",
    "load_dataset",
    "render_clip",
    "render_scene",
    "sample_clip_spec",
    "spec_at",
    "spec_from_json",
    "spec_to_json",
    "write_dataset",
]

_EXCLUDED_COLOURS = EXCLUDED_COLOURS  # the former private name, still imported by tests/scripts/test_bench_fidelity.py


@dataclass(frozen=True, eq=False)
class RenderedClip:
    """One rendered clip. centres are the subject's bounding-box centre (x, y) in pixels, per frame."""

    frames: np.ndarray  # uint8 (F, H, W, 3)
    masks: np.ndarray  # bool (F, H, W)
    centres: np.ndarray  # float32 (F, 2)
    caption: str
    spec: ClipSpec


# --------------------------------------------------------------------------------------------------------------------
# Clips

MIN_SIZE = 8  # pixels a side: the smallest frame the subjects can be drawn in


def render_clip(spec: ClipSpec, size: int = 128, frames: int = 16) -> RenderedClip:
    """Render a spec as frames (uint8, F x size x size x 3), subject masks and subject centres."""
    images, (t, ox, oy, zoom) = _scene_views(spec, size, frames)
    path = subject_path(spec, t, scene_horizon(spec.seed))
    colour = np.array(COLOURS[spec.colour], dtype=np.float32) / 255.0
    outline = max(1.0, size / 128.0) if spec.background == "blockout" else 0.0
    masks = np.empty((frames, size, size), dtype=bool)
    centres = np.empty((frames, 2), dtype=np.float32)
    for f in range(frames):
        z = float(zoom[f])
        pose = Pose(
            x=(0.5 + (path.x[f] - 0.5 - ox[f]) * z) * size,
            y=(0.5 + (path.y[f] - 0.5 - oy[f]) * z) * size,
            lift=float(path.lift[f]) * z * size,
            size=float(path.scale[f]) * z * size,
            swing=float(path.swing[f]),
            roll=float(path.roll[f]),
            facing=1.0 if spec.direction > 0 else -1.0,
        )
        masks[f], centres[f] = draw_subject(images[f], spec.subject, pose, colour, outline)
    return RenderedClip(_to_bytes(images), masks, centres, caption_for(spec), spec)


def render_scene(spec: ClipSpec, size: int = 128, frames: int = 16) -> np.ndarray:
    """The spec's clip without its subject (nor its shadow): the scene under the camera move alone, uint8."""
    return _to_bytes(_scene_views(spec, size, frames)[0])


def _scene_views(
    spec: ClipSpec, size: int, frames: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each frame's view of the background (float32, 0-1) and the clip's times and camera path (t, ox, oy, zoom)."""
    validate_spec(spec)
    if size < MIN_SIZE or frames < 1:
        raise ValueError(f"need size >= {MIN_SIZE} and frames >= 1, got size={size}, frames={frames}")
    t = np.linspace(0.0, 1.0, frames)  # a single frame is the clip's start
    ox, oy, zoom = camera_path(spec.camera, spec.speed, t)
    backdrop = render_backdrop(spec, ox, oy, zoom, size)
    static_view = view(backdrop, size, 0.0, 0.0, 1.0) if spec.camera == "static" else None
    images = np.empty((frames, size, size, 3), dtype=np.float32)
    for f in range(frames):
        images[f] = static_view if static_view is not None else view(backdrop, size, ox[f], oy[f], zoom[f])
    return images, (t, ox, oy, zoom)


def _to_bytes(images: np.ndarray) -> np.ndarray:
    return np.clip(images * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def spec_at(seed: int, index: int) -> ClipSpec:
    """The spec of clip number index of the data set with this seed: depends only on (seed, index)."""
    return sample_clip_spec(np.random.default_rng([seed, index]))


def clip_at(seed: int, index: int, size: int = 128, frames: int = 16) -> RenderedClip:
    """Clip number index of the data set with this seed: depends only on (seed, index)."""
    return render_clip(spec_at(seed, index), size, frames)


def generate_clips(seed: int, count: int, size: int = 128, frames: int = 16) -> Iterator[RenderedClip]:
    """Clips 0 .. count-1 of the data set with this seed."""
    for index in range(count):
        yield clip_at(seed, index, size, frames)


# --------------------------------------------------------------------------------------------------------------------
# Data set files: one uncompressed .npz (a zip of .npy members), written in a stream so that a large data set never
# has to fit in memory, and readable with np.load or memory-mapped with load_dataset(path, mmap=True).

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same data gives the same bytes


_Job = tuple[int, int, int, int, int]  # seed, first index, end index, size, frames
_ChunkResult = tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]


def _render_chunk(job: _Job) -> _ChunkResult:
    seed, start, stop, size, frames = job
    clips = [clip_at(seed, index, size, frames) for index in range(start, stop)]
    return (
        np.stack([c.frames for c in clips]),
        np.stack([c.masks for c in clips]),
        np.stack([c.centres for c in clips]),
        [c.caption for c in clips],
        [spec_to_json(c.spec) for c in clips],
    )


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(buffer, header)  # version 2: a header length that never overflows
    return buffer.getvalue()


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    with archive.open(info, "w", force_zip64=True) as member:
        member.write(_npy_header(array.shape, array.dtype))
        member.write(np.ascontiguousarray(array).tobytes())


def write_dataset(
    path: Path,
    seed: int,
    count: int,
    size: int = 128,
    frames: int = 16,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Render count clips with `workers` processes and write them to one uncompressed .npz file.

    Members: frames uint8 (N, F, H, W, 3), masks bool (N, F, H, W), centres float32 (N, F, 2), captions str (N,),
    specs str (N,) (one JSON object per clip, see spec_from_json) and meta str () (JSON: seed, count, size, frames).
    The file is identical for any number of workers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = max(1, min(16, -(-count // max(1, workers * 4))))
    jobs = [(seed, start, min(start + chunk, count), size, frames) for start in range(0, count, chunk)]
    bar = _progress_bar(count, progress)
    captions: list[str] = []
    specs: list[str] = []
    centres = np.zeros((count, frames, 2), dtype=np.float32)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".blocks-") as scratch:
        # Masks go to a scratch .npy while frames stream straight into the archive (one open member at a time).
        masks = np.lib.format.open_memmap(Path(scratch) / "masks.npy", "w+", bool, (count, frames, size, size))
        partial = Path(scratch) / "dataset.npz"  # moved into place only when complete
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            info = zipfile.ZipInfo("frames.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as member:
                member.write(_npy_header((count, frames, size, size, 3), np.dtype(np.uint8)))
                for (_, start, stop, _, _), result in zip(jobs, _run_jobs(jobs, workers), strict=True):
                    member.write(np.ascontiguousarray(result[0]).tobytes())
                    masks[start:stop], centres[start:stop] = result[1], result[2]
                    captions += result[3]
                    specs += result[4]
                    if bar is not None:
                        bar.update(stop - start)
            masks.flush()
            info = zipfile.ZipInfo("masks.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as member, open(Path(scratch) / "masks.npy", "rb") as source:
                shutil.copyfileobj(source, member, 1 << 22)
            del masks
            _write_member(archive, "centres.npy", centres)
            _write_member(archive, "captions.npy", np.array(captions, dtype=str).reshape(count))
            _write_member(archive, "specs.npy", np.array(specs, dtype=str).reshape(count))
            meta = {"seed": seed, "count": count, "size": size, "frames": frames, "generator": "blocks-v1"}
            _write_member(archive, "meta.npy", np.array(json.dumps(meta, sort_keys=True)))
        partial.replace(path)
    if bar is not None:
        bar.close()
    return path


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[_ChunkResult]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_render_chunk, jobs)
        return
    # fork on Linux: workers start at once and need no importable __main__ (spawn respawns dying workers forever when
    # the caller runs from stdin). It is safe even after torch is loaded: workers run numpy code only, never torch.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_render_chunk, jobs)


def _progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar, or None when disabled or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="clip", desc="blocks")


def _member_memmap(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed .npy member of a zip in place."""
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        major, _ = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def load_dataset(path: Path | str, mmap: bool = False) -> dict[str, np.ndarray]:
    """Read a data set written by write_dataset: frames, masks, centres, captions, specs (and meta).

    With mmap=True the frames and masks are memory-mapped instead of read (the file is uncompressed), for data sets
    larger than memory.
    """
    path = Path(path)
    result: dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as data:
        for name in data.files:
            if not (mmap and name in ("frames", "masks")):
                result[name] = data[name]
    if mmap:
        with zipfile.ZipFile(path) as archive:
            for name in ("frames", "masks"):
                info = archive.getinfo(f"{name}.npy")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"{path}: {name} is compressed and cannot be memory-mapped")
                result[name] = _member_memmap(path, info)
    return result
