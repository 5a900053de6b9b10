"""`evaluate`: score a MotionClone result against its reference and write metrics.json and tracks.png. No bpy.

Steps:

1. Read the result: a result folder (its lossless frames/ PNGs, else its result.mp4) or a video file. A result
   folder's result.json (or one next to a result.mp4) gives the prompt and the resize mode.
2. Sample the reference to the result's frames with the rule the result was made with: `sample_frame_indices`
   (np.linspace(0, total − 1, n, dtype=int)) over the reference's frames, then `resize_frames` to the result's size
   with the result's resize mode ("squash" when there is no result.json). Both clips then share one pixel grid.
3. Track the same grid in both with the same tracker and compute motion fidelity (motion_fidelity.py).
4. Colour and class adherence (adherence.py), CLIP metrics when a local CLIP is given (clip_metrics.py).
5. Write DIR/metrics.json and DIR/tracks.png when an output folder is given.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..atomic_files import temporary_sibling
from ..devices import unusable_device
from ..errors import ParameterError, VideoInputError
from ..video_io import (
    IMAGE_EXTENSIONS,
    _check_resize_mode,
    check_frame_sampling,
    check_frame_step,
    collected_video_warnings,
    prepare_reference,
    probe_clip,
    read_clip,
    resize_frames,
    sample_frame_indices,
)
from .adherence import (
    DEFAULT_SUBJECT_REGION,
    SUBJECT_REGIONS,
    SubjectRegion,
    check_overrides,
    class_adherence,
    colour_adherence,
    find_subject,
    moving_region_settings,
    override_warnings,
    parse_prompt,
)
from .clip_metrics import clip_scores
from .motion_fidelity import (
    DEFAULT_CHUNK,
    DEFAULT_EPSILON,
    DEFAULT_MOVING_FRACTION,
    DEFAULT_REGION,
    DEFAULT_STILL_STEP,
    REGIONS,
    check_settings,
    motion_fidelity,
    select_tracks,
)
from .report import metrics_json, render_tracks_image
from .tracks import (
    DEFAULT_GRID,
    TrackerSettings,
    Tracks,
    clipped_box,
    describe_cotracker,
    grid_points,
    track_points,
    track_points_cotracker,
)

FORMAT = "motionclone-evaluate/1"
METRICS_FILE = "metrics.json"
TRACKS_IMAGE = "tracks.png"
SAMPLING_RULES = {
    "linspace": "np.linspace(0, total_frames - 1, num_frames, dtype=int)",
    "interval": "np.arange(num_frames) * (total_frames // num_frames)",
    "step": "np.arange(num_frames) * frame_step",
}
# Lucas-Kanade settings that have a flag of their own, so that a warning names what was typed.
LUCAS_KANADE_FLAGS = {"window": "--window", "levels": "--levels", "fb_threshold": "--fb-threshold"}
ALL_FRAMES_RULE = "all frames (every frame_step-th with the step rule): the reference is shorter than the rule needs"
DEFINITIONS = {
    "symmetric": "DMT paper text: ½ [mean over result tracks of max over reference tracks of sim + mean over "
    "reference tracks of max over result tracks of sim], sim = mean over steps of ⟨ũ_k, u_k⟩",
    "released": "DMT released code: mean over result tracks of max over reference tracks of (sim − 1 for the track "
    "starting at the same grid point), i.e. the co-located track excluded",
}


@dataclass
class ResultVideo:
    """A result read for evaluation.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB frames.
        metadata: the result.json contents, or None when there is none.
        frames_from: where the frames came from (for metrics.json).
        image_folder: the folder of images the frames were read from; None for a video.
    """

    frames: np.ndarray
    metadata: dict[str, Any] | None
    frames_from: str
    image_folder: Path | None = None

    def record_warnings(self) -> list[str]:
        """What in result.json is not what `motionclone generate` writes, and so is not used; or that there is none."""
        if self.metadata is None:
            return [
                "no result.json with the result: the reference is sampled with the default rule (linspace frames, "
                "squash resize); for a result made otherwise, pass its result folder"
            ]
        parameters = self.metadata.get("parameters")
        if "parameters" in self.metadata and not isinstance(parameters, dict):
            return ["result.json: its parameters are not a map, so none of them is used"]
        if isinstance(parameters, dict) and not isinstance(parameters.get("prompt", ""), str):
            return ["result.json: its prompt is not text, so it is not used"]
        return []

    @property
    def parameters(self) -> dict[str, Any]:
        """The MotionClone parameters recorded in result.json (empty without one)."""
        if not isinstance(self.metadata, dict):
            return {}
        parameters = self.metadata.get("parameters")
        return parameters if isinstance(parameters, dict) else {}


@dataclass
class SampledReference:
    """The reference brought to the result's frames.

    Attributes:
        frames: (n, H, W, 3) uint8 frames at the result's size.
        total_frames: frames in the whole reference.
        indices: the reference frames used, in order.
        resize_mode: how they were brought to the result's size.
        notes: anything that departs from the plain rule.
        all_frames: the reference was too short for the rule, so all its frames (or every frame_step-th) were used.
    """

    frames: np.ndarray
    total_frames: int
    indices: np.ndarray
    resize_mode: str
    notes: list[str] = field(default_factory=list)
    all_frames: bool = False


def load_result(result: str | os.PathLike[str]) -> ResultVideo:
    """Read a result folder (frames/ PNGs preferred over result.mp4) or a video file, with its result.json if any.

    Raises:
        VideoInputError: nothing readable at that path.
    """
    path = Path(result).expanduser()
    source = result_frames_source(path)
    if not path.is_dir():
        metadata = _read_metadata(path.with_name("result.json")) if path.name == "result.mp4" else None
        return ResultVideo(read_clip(path).frames, metadata, str(path))
    metadata = _result_json_of(path)
    if not source.is_dir():
        return ResultVideo(read_clip(source).frames, metadata, str(source))
    kind = "PNG sequence" if source == path / "frames" else "image sequence"
    return ResultVideo(read_clip(source).frames, metadata, f"{source} ({kind})", source)


def result_frames_source(path: Path) -> Path:
    """Where `load_result` reads a result's frames from, found without decoding anything: the result folder's
    frames/ when it holds images, else its result.mp4, else the folder's own images; or the video file itself.

    Raises:
        VideoInputError: nothing readable at that path.
    """
    if not path.exists():
        raise VideoInputError(f"result {path} does not exist: pass a result folder or a video file")
    if not path.is_dir():
        return path
    frames_dir, video = path / "frames", path / "result.mp4"
    if frames_dir.is_dir() and _holds_images(frames_dir):
        return frames_dir
    if video.is_file():
        return video
    if _holds_images(path):
        return path
    raise VideoInputError(
        f"result folder {path} holds neither frames/ nor result.mp4: pass the folder `motionclone generate` "
        "wrote, or the video file itself"
    )


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _result_json_of(folder: Path) -> dict[str, Any] | None:
    """The result.json of a result folder, or of the result folder whose frames/ `folder` is."""
    metadata = _read_metadata(folder / "result.json")
    if metadata is None and folder.name == "frames":
        metadata = _read_metadata(folder.parent / "result.json")
    return metadata


def recorded_sampling(parameters: dict[str, Any], result: object) -> tuple[str, str, int]:
    """The resize mode, sampling rule and frame step that result.json records (the engine's defaults where it is
    silent). Raises VideoInputError naming result.json when one of them is not a valid value."""
    resize_mode = parameters.get("resize_mode", "squash")
    frame_sampling = parameters.get("frame_sampling", "linspace")
    frame_step = parameters.get("frame_step", 1)
    try:
        _check_resize_mode(resize_mode)
        check_frame_sampling(frame_sampling)
        check_frame_step(frame_step)
    except ParameterError as error:
        message = f"the result.json of {result} is not valid: {error}; fix the file or remove it"
        raise VideoInputError(message) from error
    return resize_mode, frame_sampling, frame_step


def sample_reference(
    reference: str | os.PathLike[str] | np.ndarray,
    num_frames: int,
    height: int,
    width: int,
    resize_mode: str,
    frame_sampling: str = "linspace",
    frame_step: int = 1,
) -> SampledReference:
    """The reference frames a result of `num_frames` frames at height × width was made from.

    Uses the pipeline's own `prepare_reference` (the sampling rule the result was made with, then `resize_frames`).
    A reference too short to have produced it with that rule (fewer frames than the result, or for the "step" rule
    fewer than (num_frames − 1) · frame_step + 1) gives what the rule can take from it: all its frames, or every
    frame_step-th; motion fidelity then truncates both clips to the shorter one, and a note says so.

    Raises:
        VideoInputError: the reference cannot be read.
        ParameterError: a bad size, resize mode or frame step.
    """
    step = frame_step if frame_sampling == "step" else 1
    check_frame_step(step)
    total = count_frames(reference)
    needed = (num_frames - 1) * step + 1
    if total < needed:
        indices = np.arange(0, total, step)
        if len(indices) < 2:
            every = "" if step == 1 else f" taken every {step} frames"
            raise VideoInputError(
                f"reference {_describe_source(reference)} has {total} frame{'' if total == 1 else 's'}: "
                f"{len(indices)}{every} is too few, motion needs at least 2 frames"
            )
        clip = read_clip(reference)
        frames = resize_frames(clip.frames[indices], height, width, resize_mode, clip.pixel_aspect)
        if step == 1:
            short = f"fewer than the result's {num_frames}: all of them are used"
        else:
            short = f"fewer than the {needed} that {num_frames} frames every {step} span: one in {step} is used"
        note = f"the reference has {total} frames, {short} and the clips are compared over the shorter length"
        return SampledReference(frames, total, indices, resize_mode, [note], all_frames=True)
    indices = sample_frame_indices(total, num_frames, frame_sampling, step)
    frames = prepare_reference(reference, num_frames, height, width, resize_mode, frame_sampling, step).frames
    return SampledReference(frames, total, indices, resize_mode)


def index_warnings(metadata: dict[str, Any] | None, sampled: SampledReference) -> list[str]:
    """A warning when result.json recorded other reference frames than this reference gives by the same rule: then
    it is probably not the clip the result was made from (another cut, a re-export at another frame rate)."""
    recorded = metadata.get("reference_frames") if isinstance(metadata, dict) else None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("indices"), list):
        return []
    # Also for a job sent with `motionclone submit` (sampled_by "client"): it recorded the indices its own sampling
    # rule took from the clip it was given, the rule evaluate applies to the reference given here.
    if recorded["indices"] == sampled.indices.tolist():
        return []
    return [
        f"result.json says the result was made from reference frames {_short_list(recorded['indices'])}, but this "
        f"reference ({sampled.total_frames} frames) gives {_short_list(sampled.indices.tolist())} by the same rule: "
        "check that it is the clip the result was made from"
    ]


def _short_list(values: list[Any], shown: int = 6) -> str:
    head = ", ".join(str(v) for v in values[:shown])
    return f"[{head}{', …' if len(values) > shown else ''}] ({len(values)} frames)"


def _recorded_or_default(name: str, parameters: dict[str, Any], metadata: dict[str, Any] | None) -> str:
    if name in parameters:
        return "result.json"
    return "default (no result.json)" if metadata is None else f"default (result.json does not record {name})"


def count_frames(reference: str | os.PathLike[str] | np.ndarray) -> int:
    """Frames in a reference, counted the way `prepare_reference` counts them (decoded video frames, image files)."""
    if isinstance(reference, np.ndarray):
        return int(read_clip(reference).frames.shape[0])
    path = Path(os.fspath(reference)).expanduser()
    if not path.exists():
        raise VideoInputError(f"reference {path} does not exist: check the path")
    total, _ = probe_clip(path)
    if total == 0:
        raise VideoInputError(f"video {path} decoded to 0 frames: check that the file plays, or re-export it")
    return total


def check_device(device: str, needed: bool) -> list[str]:
    """Refuse a device torch cannot use (naming `device`) when CLIP or CoTracker will run on it; otherwise a warning
    that it is not used (tracking with OpenCV and the colour measures run on the CPU)."""
    if not needed:
        return [] if device == "cpu" else [f"device {device!r} is not used: only CLIP and CoTracker run on it"]
    if (reason := unusable_device(device)) is not None:
        raise ParameterError("device", reason)
    return []


def default_out_dir(result: str | os.PathLike[str]) -> Path:
    """RESULT_DIR/evaluation for a result folder, VIDEO_STEM-evaluation next to a video file."""
    path = Path(result).expanduser()
    return path / "evaluation" if path.is_dir() else path.with_name(f"{path.stem}-evaluation")


def evaluate(
    reference: str | os.PathLike[str] | np.ndarray,
    result: str | os.PathLike[str],
    prompt: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    grid: int = DEFAULT_GRID,
    region: str = DEFAULT_REGION,
    box: tuple[float, float, float, float] | None = None,
    moving_fraction: float = DEFAULT_MOVING_FRACTION,
    tracker: TrackerSettings | None = None,
    cotracker: str | os.PathLike[str] | None = None,
    clip_model: str | os.PathLike[str] | None = None,
    subject_colour: str | None = None,
    subject_class: str | None = None,
    subject_region: str = DEFAULT_SUBJECT_REGION,
    device: str = "cpu",
    epsilon: float = DEFAULT_EPSILON,
    still_step_px: float = DEFAULT_STILL_STEP,
) -> dict[str, Any]:
    """Score a result against its reference.

    Args:
        reference: the reference video file, image folder or (F, H, W, 3) array the result was made from.
        result: a result folder (result.mp4, frames/, result.json) or a video file.
        prompt: the result's prompt; default: the prompt in result.json.
        out_dir: where metrics.json and tracks.png go; None writes nothing.
        grid: tracking grid points per side (grid × grid points on frame 0).
        region: which tracks enter motion fidelity: "moving" (default), "all", or "box".
        box: (x0, y0, x1, y1) in result pixels for region "box"; default: the bounding box of the reference's
            moving tracks on frame 0, one grid cell wider on each side.
        moving_fraction: a moving track gets further than this fraction of the longer frame side from its start.
        tracker: Lucas-Kanade settings (defaults: `TrackerSettings()`).
        cotracker: a local CoTracker checkpoint; tracks with CoTracker instead (needs the `cotracker` package).
        clip_model: a local CLIP folder (transformers layout); without it the CLIP metrics are "not measured".
        subject_colour: expected subject colour, overriding the prompt.
        subject_class: expected subject class, overriding the prompt.
        subject_region: where colour and class are read: "network" (default; the subject-mask network's region) or
            "moving" (the region that differs from the clip's per-pixel median; wrong when the camera moves).
        device: torch device for CLIP and CoTracker.
        epsilon: ε of the unit displacements, in pixels.
        still_step_px: steps shorter than this (pixels) count as no motion in MF; 0 for the bare formula.

    Returns:
        The metrics.json contents: `motion_fidelity` (symmetric MF, a number), `motion_fidelity_released`, and
        `metrics` with every metric's value, status, method and settings.

    Raises:
        VideoInputError: the reference or result cannot be read.
        ParameterError: an invalid setting (named).
        ModelNotFoundError: a CLIP or CoTracker checkpoint cannot be loaded.
    """
    if region not in REGIONS:
        raise ParameterError("region", f"must be one of {', '.join(REGIONS)}, got {region!r}")
    if box is not None and region != "box":
        raise ParameterError("box", f"only applies with region 'box' (region is {region!r})")
    if box is not None and not all(math.isfinite(float(value)) for value in box):
        raise ParameterError("box", f"must be four finite pixel coordinates x0 y0 x1 y1, got {list(box)}")
    if subject_region not in SUBJECT_REGIONS:
        raise ParameterError("subject_region", f"must be one of {', '.join(SUBJECT_REGIONS)}, got {subject_region!r}")
    check_overrides(subject_colour, subject_class)  # cheap checks first, before any video is decoded
    find_regions, found_by = subject_region_finder(subject_region)  # a damaged network is said before any tracking
    check_settings(moving_fraction, epsilon, still_step_px)
    warnings: list[str] = check_device(device, needed=clip_model is not None or cotracker is not None)
    warnings.extend(unused_tracker_warnings(tracker, cotracker))
    out = None if out_dir is None else Path(out_dir).expanduser()
    if out is not None:
        check_out_dir(out, reference, result)
    tracker = tracker or TrackerSettings()
    with collected_video_warnings() as read_warnings:  # a video cut short: said in the report, not on its own
        loaded = load_result(result)
    frames = loaded.frames
    num_frames, height, width = frames.shape[:3]
    if num_frames < 2:
        raise VideoInputError(f"result {result} has {num_frames} frame: motion needs at least 2 frames")
    parameters = loaded.parameters
    warnings.extend(loaded.record_warnings())
    resize_mode, frame_sampling, frame_step = recorded_sampling(parameters, result)
    if parameters.get("num_frames") not in (None, num_frames):
        warnings.append(f"result.json says num_frames {parameters['num_frames']}, the result has {num_frames}")
    if (parameters.get("height"), parameters.get("width")) not in ((None, None), (height, width)):
        warnings.append(
            f"result.json says {parameters.get('width')}x{parameters.get('height')}, the result is {width}x{height}"
        )
    if prompt is None and isinstance(parameters.get("prompt"), str):
        prompt, prompt_from = parameters["prompt"], "result.json"
    else:
        prompt_from = "--prompt" if prompt is not None else None

    with collected_video_warnings() as reference_warnings:
        sampled = sample_reference(reference, num_frames, height, width, resize_mode, frame_sampling, frame_step)
    warnings.extend(read_warnings + reference_warnings)
    warnings.extend(sampled.notes)
    warnings.extend(index_warnings(loaded.metadata, sampled))
    warnings.extend(override_warnings(prompt, subject_colour, subject_class))

    # Tracks: the same grid on both clips, at the result's size.
    track = _tracker(tracker, cotracker, device)
    if region == "box" and box is None:
        full_grid = track(sampled.frames, grid_points(height, width, grid))
        box = _moving_box(full_grid, grid, height, width, moving_fraction, still_step_px)
        if box is None:
            warnings.append("region 'box': the reference has no moving tracks, so the box is the whole frame")
    points = grid_points(height, width, grid, box if region == "box" else None)
    reference_tracks, result_tracks = track(sampled.frames, points), track(frames, points)
    scores = motion_fidelity(
        reference_tracks, result_tracks, (height, width), region, moving_fraction, epsilon, still_step_px
    )
    warnings.extend(scores["warnings"])
    # The most this reference can score with these settings: tracks that stand still in some of their steps count 0
    # there even against themselves, so a perfect copy of its motion scores this, not 1.
    ceiling = motion_fidelity(
        reference_tracks, reference_tracks, (height, width), region, moving_fraction, epsilon, still_step_px
    )["symmetric"]
    tracker_description = describe_cotracker(cotracker) if cotracker else tracker.describe(height, width)

    common = {
        "tracker": tracker_description,
        "grid": {
            "points_per_side": grid,
            "points": len(points),
            "placement": "centres of equal cells on frame 0",
            # the box the grid was laid in: the one asked for, cut to the frame
            "box_xyxy": [round(v, 2) for v in clipped_box(box, height, width)] if region == "box" else None,
        },
        "frames": scores["frames"],
        "resolution": {"width": width, "height": height},
        "region": scores["region"],
        "tracks": scores["tracks"],
        "epsilon_px": epsilon,
        "still_step_px": still_step_px,
        "chunk_rows": DEFAULT_CHUNK,
        "warnings": scores["warnings"],
    }
    status = fidelity_status(scores)
    # Regions only where a colour or class is to be scored (an SD-1.5 prompt names neither).
    scored = subject_colour or subject_class or any(parse_prompt(prompt))
    regions = find_regions(frames) if scored else None
    metrics: dict[str, Any] = {
        "motion_fidelity": {
            "value": scores["symmetric"],
            **status,
            "method": "DMT motion fidelity, symmetric",
            "variant": "symmetric",
            "definition": DEFINITIONS["symmetric"],
            "result_to_reference": scores["result_to_reference"],
            "reference_to_result": scores["reference_to_result"],
            "reference_against_itself": ceiling,
            **common,
        },
        "motion_fidelity_released": {
            "value": scores["released"],
            **status,
            "method": "DMT motion fidelity, as its released code computes it",
            "variant": "released",
            "definition": DEFINITIONS["released"],
            **common,
        },
        "colour_adherence": colour_adherence(frames, prompt, subject_colour, regions, found_by),
        "class_adherence": class_adherence(frames, prompt, subject_class, regions, found_by),
        **clip_scores(frames, prompt, clip_model, device=device),
    }
    report: dict[str, Any] = {
        "format": FORMAT,
        "motion_fidelity": scores["symmetric"],
        "motion_fidelity_released": scores["released"],
        "metrics": metrics,
        "inputs": {
            "reference": _describe_source(reference),
            "result": str(result),
            "result_frames_from": loaded.frames_from,
            "result_json": loaded.metadata is not None,
            "prompt": prompt,
            "prompt_from": prompt_from,
            "reference_sampling": {
                "rule": ALL_FRAMES_RULE if sampled.all_frames else SAMPLING_RULES.get(frame_sampling, frame_sampling),
                "rule_from": _recorded_or_default("frame_sampling", parameters, loaded.metadata),
                **({"frame_step": frame_step} if frame_sampling == "step" else {}),
                "total_frames": sampled.total_frames,
                "indices": sampled.indices.tolist(),
                "resize_mode": resize_mode,
                "resize_mode_from": _recorded_or_default("resize_mode", parameters, loaded.metadata),
                "size": {"width": width, "height": height},
            },
        },
        "warnings": warnings,
        "files": {},
        "versions": {"opencv": cv2.__version__, "numpy": np.__version__, "python": platform.python_version()},
    }
    if out is not None:
        report["files"] = {"metrics": str(out / METRICS_FILE), "tracks_image": str(out / TRACKS_IMAGE)}
        text = metrics_json(report)  # before either file is replaced: metrics that cannot be written change neither
        caption = (
            f"MF {scores['symmetric']:.3f} (symmetric) / {scores['released']:.3f} (released) · "
            f"{tracker_description['name']} · grid {grid}x{grid} · {scores['frames']} frames at {width}x{height} · "
            f"region {region}"
        )
        image = render_tracks_image(
            sampled.frames,
            frames,
            reference_tracks,
            result_tracks,
            scores["reference_indices"],
            scores["result_indices"],
            caption=caption,
            min_length=still_step_px,  # the steps MF counts as motion are the ones drawn in colour
        )
        write_outputs(out, text, image)
    return report


RegionFinder = Callable[[np.ndarray], list[SubjectRegion | None]]


def subject_region_finder(subject_region: str) -> tuple[RegionFinder, dict[str, Any]]:
    """How colour and class find the subject: a function of the frames, and its settings for metrics.json. For the
    network, its files are checked and it is loaded here, once."""
    if subject_region == "moving":
        return find_subject, moving_region_settings()
    from .subject_mask import load_subject_mask_net, network_region_settings, segment_subject  # torch: only when used

    return functools.partial(segment_subject, net=load_subject_mask_net()), network_region_settings()


def check_out_dir(out: Path, reference: str | os.PathLike[str] | np.ndarray, result: str | os.PathLike[str]) -> None:
    """Refuse an output folder that is a file, or a folder of frames where tracks.png would later be read as a frame:
    the result's frames (also its result folder's frames/ when the result is given as R/result.mp4), or a reference
    given as a folder of images. Reads no video.

    Raises:
        ParameterError: named "out".
        VideoInputError: the result does not exist.
    """
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file: give a folder for metrics.json and tracks.png")
    target = out.resolve()
    if target in _result_frame_folders(Path(result).expanduser()):
        raise ParameterError(
            "out",
            f"{out} holds the result's frames: tracks.png there would become a frame; give another folder "
            "(the default is the result folder's evaluation/)",
        )
    if not isinstance(reference, np.ndarray):
        reference_path = Path(os.fspath(reference)).expanduser()
        if reference_path.is_dir() and target == reference_path.resolve():
            raise ParameterError(
                "out",
                f"{out} is the reference's folder of frames: tracks.png there would become a reference frame; "
                "give another folder",
            )


def _result_frame_folders(path: Path) -> set[Path]:
    """The folders holding a result's frames: the one it is read from, and its result folder's frames/ (which
    `load_result` prefers the next time, also when the result is given as R/result.mp4)."""
    source = result_frames_source(path)
    folders = {source.resolve()} if source.is_dir() else set()
    result_folder = path if path.is_dir() else path.parent if path.name == "result.mp4" else None
    if result_folder is not None:
        folders.add((result_folder / "frames").resolve())
    return folders


def unused_tracker_warnings(tracker: TrackerSettings | None, cotracker: str | os.PathLike[str] | None) -> list[str]:
    """A warning when Lucas-Kanade settings other than the defaults come with CoTracker, which has none of them."""
    if cotracker is None or tracker is None:
        return []
    default = TrackerSettings()
    changed = [
        f"{LUCAS_KANADE_FLAGS.get(setting.name, setting.name)} {getattr(tracker, setting.name)}"
        for setting in fields(TrackerSettings)
        if getattr(tracker, setting.name) != getattr(default, setting.name)
    ]
    if not changed:
        return []
    return [
        f"{', '.join(changed)}: Lucas-Kanade settings, not used with --cotracker (CoTracker tracks the points); "
        "leave them out, or drop --cotracker to track with Lucas-Kanade"
    ]


def fidelity_status(scores: dict[str, Any]) -> dict[str, str]:
    """The motion-fidelity status: "measured", or "degenerate" with the reason when the reference has no track that
    takes part, where the score is 0 by the formula but says nothing about the result's motion. A result without
    usable tracks is measured: it does not move like the reference, and its counts say why (`none_used_because`)."""
    cause = scores["tracks"]["reference"]["none_used_because"]
    if cause is None:
        return {"status": "measured"}
    reason = f"the reference has no tracks that take part ({cause}): nothing to compare"
    return {"status": "degenerate", "reason": reason}


def write_outputs(out: Path, text: str, image: Image.Image) -> None:
    """tracks.png and metrics.json, each written under a temporary name before either replaces its file, metrics.json
    last: a failed write leaves the earlier pair, never a new picture beside old numbers."""
    out.mkdir(parents=True, exist_ok=True)
    image_path, metrics_path = out / TRACKS_IMAGE, out / METRICS_FILE
    image_temporary, metrics_temporary = temporary_sibling(image_path), temporary_sibling(metrics_path)
    try:
        image.save(image_temporary, format="PNG")
        metrics_temporary.write_text(text)
        os.replace(image_temporary, image_path)
        try:
            os.replace(metrics_temporary, metrics_path)
        except OSError:
            metrics_path.unlink(missing_ok=True)  # no metrics.json rather than one that does not match tracks.png
            raise
    finally:
        image_temporary.unlink(missing_ok=True)
        metrics_temporary.unlink(missing_ok=True)


def _tracker(settings: TrackerSettings, cotracker: str | os.PathLike[str] | None, device: str) -> Any:
    if cotracker is not None:
        return lambda frames, points: track_points_cotracker(frames, points, cotracker, device)
    return lambda frames, points: track_points(frames, points, settings)


def _moving_box(
    tracks: Tracks, grid: int, height: int, width: int, moving_fraction: float, still_step_px: float
) -> tuple[float, float, float, float] | None:
    """Bounding box of the moving tracks on frame 0, one grid cell wider on each side; None when nothing moves."""
    moving = select_tracks(tracks, "moving", moving_fraction * max(height, width), still_step_px)
    if len(moving) == 0:
        return None
    start = tracks.positions[moving, 0]
    pad = np.array([width / grid, height / grid])
    x0, y0 = start.min(axis=0) - pad
    x1, y1 = start.max(axis=0) + pad
    return max(0.0, float(x0)), max(0.0, float(y0)), min(float(width), float(x1)), min(float(height), float(y1))


def _read_metadata(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise VideoInputError(f"could not read {path} ({error}): fix or remove it") from error
    if not isinstance(data, dict):
        raise VideoInputError(f"{path} holds a {type(data).__name__}, not a result record (a map): fix or remove it")
    return data


def _describe_source(source: object) -> str:
    if isinstance(source, np.ndarray):
        return f"array {tuple(source.shape)} {source.dtype}"
    return str(source)
