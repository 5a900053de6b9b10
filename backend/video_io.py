"""Video input and output: read references, sample and resize frames, write mp4 and PNG sequences. No bpy.

Everything here works on uint8 RGB frames shaped (F, H, W, 3):

    read_clip            video file, image folder or numpy array -> Clip(frames, fps)
    sample_frame_indices the official MotionClone rule: np.linspace(0, total - 1, n, dtype=int) (or the old
                         inversion code's every (total // n)-th frame)
    resize_frames        "squash" (official bilinear, align_corners=True), "crop" or "pad" (these two keep the
                         shape a video shows, also when its pixels are not square); sampling="image" resamples
                         condition images as the official code does (PIL's antialiased bilinear)
    prepare_reference    read + sample + resize, holding only the sampled frames in memory
    write_mp4            H.264 / yuv420p via the ffmpeg binary that imageio-ffmpeg ships, written atomically
    write_png_sequence   0001.png, 0002.png, ... with Pillow, each file written atomically
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import imageio_ffmpeg
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .atomic_files import temporary_sibling, write_atomically
from .errors import ParameterError, VideoInputError, VideoInputWarning

DEFAULT_FPS = 8.0  # AnimateDiff's native rate; used when a source carries no frame rate
RESIZE_MODES = ("squash", "crop", "pad")
RESIZE_SAMPLINGS = ("video", "image")  # how resize_frames resamples: see its docstring
MAX_FRAME_STEP = 1000  # the largest `frame_step` a job takes
FRAME_SAMPLING_RULES = ("linspace", "interval", "step")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
MP4_CRF = 17  # visually lossless for x264; the output is a result, not an intermediate
# A video whose packets end before this share of the length its header gives is reported as possibly cut short.
COMPLETE_SHARE = 0.8
NO_TIMESTAMP = -(2**63)  # ffmpeg's AV_NOPTS_VALUE, as its packet listings print a missing time

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# Pillow modes whose convert("RGB") keeps the picture as it looks (alpha aside); others are scaled here or refused.
_RGB_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_FLOAT_TOLERANCE = 1e-3  # float frames from a VAE decode or a render may overshoot [0, 1] by rounding error
# ffmpeg pixel formats with an alpha plane, which decoding to rgb24 drops.
_ALPHA_PIXEL_FORMAT = re.compile(r"^(yuva|gbrap|ya\d|rgba|bgra|argb|abgr)")
_ALPHA_ADVICE = (
    "the alpha channel is dropped, so transparent areas show the colour stored under them (black in a Blender "
    "render with Film > Transparent). Render without Film > Transparent, or over a background, to avoid it"
)


@dataclass
class Clip:
    """A decoded clip.

    Attributes:
        frames: (F, H, W, 3) uint8 RGB frames.
        fps: frames per second.
        indices: for a sampled reference, the index in the source clip of each frame; None for a whole clip.
        pixel_aspect: width over height of one source pixel, as the video file says (2.0 for a 96 x 96 video shown
            at 192 x 96); 1.0 for images and arrays. The frames are as stored; "crop" and "pad" resizing use it.
    """

    frames: np.ndarray
    fps: float
    indices: np.ndarray | None = None
    pixel_aspect: float = 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Reading


def read_clip(source: str | os.PathLike[str] | np.ndarray, fps: float | None = None) -> Clip:
    """Read a whole reference clip into memory.

    Args:
        source: a video file (mp4, mov, webm, avi, mkv, gif, ... anything ffmpeg decodes), a single image file,
            a folder of images (sorted naturally, so frame2 comes before frame10), or a numpy array shaped
            (F, H, W, 3), (F, H, W, 4) (alpha is dropped) or (F, H, W) (grayscale), uint8 or float in [0, 1].
        fps: frame rate to report. For video files it overrides the file's own rate; for folders and arrays it
            defaults to 8.0.

    Returns:
        A Clip with (F, H, W, 3) uint8 frames.

    Raises:
        VideoInputError: the source is missing, unreadable, empty, or holds frames of different sizes.
        ParameterError: fps is not a positive finite number.
    """
    if fps is not None:
        _check_fps(fps)
    if isinstance(source, np.ndarray):
        frames = _to_rgb_uint8(source, _array_input_error)
        return Clip(frames, float(fps) if fps is not None else DEFAULT_FPS)

    path = existing_path(source)
    if path.is_dir():
        frames = _load_images(_list_image_files(path))
        return Clip(frames, float(fps) if fps is not None else DEFAULT_FPS)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        # A single still is a one-frame clip; sampling later says clearly that it is too short.
        return Clip(_load_images([path]), float(fps) if fps is not None else DEFAULT_FPS)
    video = _decode_video(path, keep=None)
    if video.total == 0:
        raise VideoInputError(f"video {path} decoded to 0 frames: check that the file plays, or re-export it")
    return Clip(np.stack(video.kept), float(fps) if fps is not None else video.fps, pixel_aspect=video.pixel_aspect)


def probe_clip(source: str | os.PathLike[str] | np.ndarray) -> tuple[int, float]:
    """(frame count, fps) of a reference without keeping its frames (a folder or an array counts as DEFAULT_FPS)."""
    if isinstance(source, np.ndarray):
        return len(source), DEFAULT_FPS
    path = existing_path(source)
    if path.is_dir():
        return len(_list_image_files(path)), DEFAULT_FPS
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return 1, DEFAULT_FPS
    video = _decode_video(path, keep=set(), describe=False)  # the read that follows checks the video
    return video.total, video.fps


def sample_frame_indices(total_frames: int, num_frames: int, rule: str = "linspace", step: int = 1) -> np.ndarray:
    """Pick `num_frames` indices spread uniformly over the clip, exactly as the official MotionClone code.

    "linspace", the current official rule, is `np.linspace(0, total_frames - 1, num_frames, dtype=int)` (floored),
    so 100 frames sampled down to 16 gives 0, 6, 13, 19, 26, ..., 99. "interval", the rule of the official code's
    inversion-based version, takes every (total_frames // num_frames)-th frame from the first: 0, 6, 12, ..., 90,
    leaving out the tail that does not fill a whole interval. "step" takes every `step`-th frame from the first
    (0, 2, 4, ... for step 2), for long shots at a chosen frame rate: 24 fps sampled with step 2 plays at 12 fps.

    Args:
        total_frames: number of frames in the clip.
        num_frames: number of frames wanted.
        rule: one of FRAME_SAMPLING_RULES.
        step: the frame step of the "step" rule.

    Returns:
        (num_frames,) integer array of strictly increasing frame indices.

    Raises:
        ParameterError: num_frames is not a positive integer, or an unknown rule.
        VideoInputError: the clip has fewer frames than wanted.
    """
    _check_num_frames(num_frames)
    check_frame_sampling(rule)
    if total_frames < 2:
        raise VideoInputError(
            f"the reference clip has {total_frames} frame{'' if total_frames == 1 else 's'}; motion needs at least 2: "
            "use a clip (or image folder) of 2 frames or more"
        )
    if total_frames < num_frames:
        # The official code would repeat frames silently (linspace floors duplicates); a repeated frame reads as
        # a pause in the motion, so refuse and say how to fix it.
        raise VideoInputError(
            f"the reference clip has {total_frames} frames but {num_frames} are needed: "
            f"lower the frame count to {max(total_frames, 1)} or less, or use a longer clip"
        )
    if rule == "interval":
        return np.arange(num_frames) * (total_frames // num_frames)
    if rule == "step":
        check_frame_step(step)
        needed = (num_frames - 1) * step + 1
        if total_frames < needed:
            raise VideoInputError(
                f"the reference clip has {total_frames} frames but {num_frames} frames every {step} need {needed}: "
                f"lower the frame count to {(total_frames - 1) // step + 1} or the frame step, or use a longer clip"
            )
        return np.arange(num_frames) * step
    return np.linspace(0, total_frames - 1, num_frames, dtype=int)


def prepare_reference(
    source: str | os.PathLike[str] | np.ndarray,
    num_frames: int,
    height: int,
    width: int,
    resize_mode: str = "squash",
    frame_sampling: str = "linspace",
    frame_step: int = 1,
) -> Clip:
    """Read a reference, sample `num_frames` frames uniformly and resize them to (height, width).

    Video files are decoded twice (once to count, once to keep the sampled frames) and image folders load only the
    sampled files, so a long 4K reference never has to fit in memory whole.

    Args:
        source: anything read_clip accepts.
        num_frames: number of frames to keep.
        height: output height in pixels.
        width: output width in pixels.
        resize_mode: one of RESIZE_MODES.
        frame_sampling: one of FRAME_SAMPLING_RULES (see sample_frame_indices).
        frame_step: the frame step of the "step" rule.

    Returns:
        A Clip with (num_frames, height, width, 3) uint8 frames, the source's fps and the sampled indices.

    Raises:
        VideoInputError: the source cannot be read or is shorter than num_frames.
        ParameterError: a size, num_frames or resize_mode is invalid.
    """
    # Validate the cheap arguments before decoding anything.
    _check_size(height, width)
    _check_resize_mode(resize_mode)
    _check_num_frames(num_frames)
    check_frame_sampling(frame_sampling)

    def sample(total: int, what: str) -> np.ndarray:
        return _sample_for(total, num_frames, what, frame_sampling, frame_step)

    pixel_aspect = 1.0  # images and arrays have square pixels

    if isinstance(source, np.ndarray):
        clip = read_clip(source)
        indices = sample(clip.frames.shape[0], "the reference array")
        sampled, fps = clip.frames[indices], clip.fps
    else:
        path = existing_path(source)
        if path.is_dir():
            files = _list_image_files(path)
            indices = sample(len(files), f"folder {path}")
            sampled, fps = _load_images([files[i] for i in indices]), DEFAULT_FPS
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            clip = read_clip(path)
            indices = sample(1, f"image {path}")
            sampled, fps = clip.frames[indices], clip.fps
        else:
            counted = _decode_video(path, keep=set())
            fps, pixel_aspect = counted.fps, counted.pixel_aspect
            indices = sample(counted.total, f"video {path}")
            video = _decode_video(path, keep=set(indices.tolist()), describe=False)
            if video.total != counted.total:
                raise VideoInputError(
                    f"video {path} decoded to {counted.total} frames, then to {video.total}: the file may still be "
                    "being written; wait for it to finish or re-export it"
                )
            sampled = np.stack(video.kept)
    return Clip(resize_frames(sampled, height, width, resize_mode, pixel_aspect), fps, indices, pixel_aspect)


@contextmanager
def collected_video_warnings() -> Iterator[list[str]]:
    """Collect the VideoInputWarnings raised inside (once each) as messages, for a report, instead of showing them;
    other warnings are shown as they would be. Python's warning state is global: use it on one thread at a time."""
    messages: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", VideoInputWarning)
        show_other = warnings.showwarning

        def collect(message: Warning | str, category: type[Warning], *where: object, **more: object) -> None:
            if not issubclass(category, VideoInputWarning):
                show_other(message, category, *where, **more)
            elif str(message) not in messages:
                messages.append(str(message))

        warnings.showwarning = collect
        yield messages


# ----------------------------------------------------------------------------------------------------------------------
# Resizing


def resize_frames(
    frames: np.ndarray,
    height: int,
    width: int,
    mode: str = "squash",
    pixel_aspect: float = 1.0,
    sampling: str = "video",
) -> np.ndarray:
    """Resize frames to exactly (height, width).

    Args:
        frames: (F, H, W, 3) uint8 frames (anything read_clip accepts as an array is converted first).
        height: output height in pixels.
        width: output width in pixels.
        mode: "squash" stretches to the new size, as the official code does (bilinear, align_corners=True);
            "crop" keeps the aspect ratio and centre-crops the overflow; "pad" keeps the aspect ratio and centres
            the picture on black bars.
        pixel_aspect: width over height of one source pixel (Clip.pixel_aspect). "crop" and "pad" keep the aspect
            ratio the video is shown at, W * pixel_aspect : H; "squash" fills the whole frame whatever the pixels'
            shape, as the official code does.
        sampling: "video" resamples like the official code's reference videos (bilinear with align_corners=True on
            uint8, no averaging when it shrinks); "image" like its SparseCtrl condition images (torchvision's
            Resize on a PIL image, that is PIL's bilinear filter, which averages over each output pixel's whole
            footprint when it shrinks).

    Returns:
        (F, height, width, 3) uint8 frames (a new array).

    Raises:
        ParameterError: an invalid size, mode or frames array.
    """
    _check_size(height, width)
    _check_resize_mode(mode)
    _check_pixel_aspect(pixel_aspect)
    if sampling not in RESIZE_SAMPLINGS:
        raise ParameterError("sampling", f"must be one of {', '.join(RESIZE_SAMPLINGS)}, got {sampling!r}")
    resample = _bilinear if sampling == "video" else _pil_bilinear
    frames = _to_rgb_uint8(frames, _frames_parameter_error)
    src_h, src_w = frames.shape[1:3]

    if mode == "squash":
        return resample(frames, height, width)

    shown_w = src_w * pixel_aspect  # the source's width as shown, in units of its pixel height
    if mode == "crop":
        # Crop the source to the target aspect ratio first, so there is a single interpolation. Cross-multiplication
        # compares the aspect ratios without division (exactly, for square pixels).
        if shown_w * height > width * src_h:  # source is wider: trim left and right
            crop_h, crop_w = src_h, min(src_w, max(1, round(src_h * width / height / pixel_aspect)))
        else:  # source is taller (or equal): trim top and bottom
            crop_h, crop_w = min(src_h, max(1, round(shown_w * height / width))), src_w
        top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
        return resample(frames[:, top : top + crop_h, left : left + crop_w], height, width)

    # mode == "pad": scale to fit inside the target, then centre on black.
    scale = min(height / src_h, width / shown_w)
    fit_h = min(height, max(1, round(src_h * scale)))
    fit_w = min(width, max(1, round(shown_w * scale)))
    out = np.zeros((frames.shape[0], height, width, 3), dtype=np.uint8)
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    out[:, top : top + fit_h, left : left + fit_w] = resample(frames, fit_h, fit_w)
    return out


def _bilinear(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with align_corners=True on the uint8 tensor, like the official video_preprocess.

    The official code hands decord's uint8 (F, H, W, C) batch, rearranged to (F, C, H, W), straight to
    F.interpolate. torch (>= 2.1; checked on 2.13) implements bilinear for uint8 on the CPU, so we call it on uint8
    as well rather than going through float32: the uint8 kernel rounds differently from a float32 pass followed by
    `.to(torch.uint8)`, and parity means the same kernel.
    """
    if frames.shape[1:3] == (height, width):
        return frames.copy()  # align_corners=True at the same size samples every pixel exactly
    # torch.from_numpy warns on read-only arrays (e.g. frames decoded from bytes) and needs positive strides.
    frames = np.ascontiguousarray(frames)
    if not frames.flags.writeable:
        frames = frames.copy()
    # A permuted view, not a copy: the same channels-last strides the official rearrange produces.
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2)
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=True)
    return resized.permute(0, 2, 3, 1).contiguous().numpy()


def _pil_bilinear(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's bilinear resize, frame by frame: what torchvision's Resize does to the official code's PIL condition
    images (antialiased: a shrunk line keeps its share of every pixel it covers instead of dropping out)."""
    size = (width, height)  # PIL takes (width, height)
    return np.stack([np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR)) for frame in frames])


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def write_mp4(frames: np.ndarray, path: str | os.PathLike[str], fps: float = DEFAULT_FPS) -> Path:
    """Encode frames as an H.264 mp4 (libx264, yuv420p, crf 17), keeping the exact frame size.

    The file is written under a temporary name in the same folder and renamed into place, so a reader never sees
    a half-written video. Missing parent folders are created.

    Args:
        frames: (F, H, W, 3) uint8 frames; H and W must be even (yuv420p halves the chroma planes).
        path: output file; the container is always mp4 whatever the suffix.
        fps: frames per second.

    Returns:
        The output path.

    Raises:
        ParameterError: bad frames (including odd sizes) or fps.
        OSError: ffmpeg failed to write the file.
    """
    _check_fps(fps)
    frames = _to_rgb_uint8(frames, _frames_parameter_error)
    num, height, width = frames.shape[:3]
    if height % 2 or width % 2:
        # imageio's writer would silently rescale here; we keep sizes exact and say what to change instead.
        raise ParameterError(
            "frames",
            f"are {width}x{height} pixels; H.264 (yuv420p) needs an even width and height: "
            "crop or pad the frames by one pixel, or write a PNG sequence instead",
        )
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    rate = Fraction(float(fps)).limit_denominator(100_000)  # exact for 8, 24, 30000/1001, ...
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-v",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-framerate",
        str(rate),
        "-i",
        "-",
        "-an",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-crf",
        str(MP4_CRF),
        "-f",
        "mp4",
        str(tmp),
    ]
    try:
        # We drive ffmpeg ourselves instead of through imageio's writer: it lets us check the exit code and
        # report ffmpeg's own error text, which imageio's writer discards.
        result = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=False, **_no_console())
        if result.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise OSError(
                f"ffmpeg could not write {path} ({num} frames of {width}x{height} at {fps} fps, exit code "
                f"{result.returncode}): {' / '.join(detail) or 'no output'}. "
                "Check that the folder is writable and the disk is not full"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_png_sequence(
    frames: np.ndarray,
    directory: str | os.PathLike[str],
    start: int = 1,
    digits: int = 4,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write frames as numbered PNG files (0001.png, 0002.png, ...), the layout Blender's image sequences use.

    Each file is written under a temporary name and renamed into place. Existing files are checked for before
    anything is written, so a refused call leaves the folder untouched.

    Args:
        frames: (F, H, W, 3) uint8 frames.
        directory: output folder; created if missing.
        start: number of the first file.
        digits: zero-padded width of the file number.
        overwrite: replace files that already exist instead of refusing.

    Returns:
        The written paths, in frame order.

    Raises:
        ParameterError: bad frames, start or digits.
        FileExistsError: a target file exists and overwrite is False.
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ParameterError("start", f"must be a non-negative integer, got {start!r}")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ParameterError("digits", f"must be a positive integer, got {digits!r}")
    frames = _to_rgb_uint8(frames, _frames_parameter_error)
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot write a PNG sequence into {directory}: it is a file; choose a folder")
    paths = [directory / f"{start + i:0{digits}d}.png" for i in range(frames.shape[0])]
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            raise FileExistsError(
                f"{len(existing)} of the {len(paths)} PNG files already exist in {directory} "
                f"(first: {existing[0].name}): choose an empty folder, delete them, or pass overwrite=True"
            )
    for frame, path in zip(frames, paths, strict=True):
        write_atomically(path, lambda temporary, frame=frame: Image.fromarray(frame).save(temporary, format="PNG"))
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# Helpers


def existing_path(source: object) -> Path:
    """Turn a str/PathLike source into a Path that exists, or raise VideoInputError saying what is wrong."""
    if not isinstance(source, str | os.PathLike):
        raise VideoInputError(
            f"cannot read a reference from a {type(source).__name__}: pass a video file, an image folder, "
            "or a numpy array shaped (frames, height, width, 3)"
        )
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        resolved = "" if path.is_absolute() else f" (resolved to {path.absolute()})"
        raise VideoInputError(
            f"reference {path} does not exist{resolved}: check the path, or save the reference video there first"
        )
    return path


def _sample_for(total: int, num_frames: int, what: str, rule: str, step: int = 1) -> np.ndarray:
    """sample_frame_indices, with the source named in the error so the user knows which clip is short."""
    try:
        return sample_frame_indices(total, num_frames, rule, step)
    except VideoInputError as exc:
        raise VideoInputError(f"{what}: {exc}") from exc


class DecodedVideo(NamedTuple):
    kept: list[np.ndarray]  # the kept frames, in order
    total: int  # number of frames decoded
    fps: float  # from the metadata, or DEFAULT_FPS
    pixel_aspect: float  # width over height of a stored pixel, as shown


def _decode_video(path: Path, keep: set[int] | None, describe: bool = True) -> DecodedVideo:
    """Decode a video with ffmpeg, keeping only some frames.

    Args:
        path: the video file.
        keep: indices of the frames to return; None keeps every frame.
        describe: read the pixel aspect (else 1.0), and warn (VideoInputWarning) when far fewer frames decode than
            the video's length promises; a second pass over the same video needs neither.
    """
    kept: list[np.ndarray] = []
    total = 0
    if path.stat().st_size == 0:
        raise VideoInputError(f"{path} is an empty file (0 bytes): export or copy the video or image again")
    try:
        # A generator: metadata, then frames. Without passthrough ffmpeg outputs at a constant rate and repeats frames
        # to fill it (every frame twice in a 70 ms GIF, more in a phone's variable-rate video), which would read
        # as pauses in the motion.
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
        try:
            meta = next(reader)
            width, height = meta["size"]
            for raw in reader:
                if keep is None or total in keep:
                    # frombuffer is a read-only view of the bytes; np.stack later copies into one array.
                    kept.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
                total += 1
        finally:
            reader.close()  # stops ffmpeg even when we bail out early
    except Exception as exc:  # ffmpeg and imageio-ffmpeg raise OSError, RuntimeError, KeyError, ... on bad input
        text = str(exc)
        last_line = text.strip().splitlines()[-1:] or [type(exc).__name__]
        # ffmpeg asked for a video stream that the file does not have says so only in its stream list.
        no_video = "Stream #" in text and "Video:" not in text
        if no_video:
            raise VideoInputError(
                f"video {path} holds no video stream (audio only?): check that it is a video file that plays, "
                "or re-export it as H.264 mp4 or as a PNG sequence"
            ) from exc
        # Conditions and references both come here, so the file may be meant as an image or as a video.
        raise VideoInputError(
            f"{path} could not be read as a video or an image ({last_line[0]}): check that the file plays or opens, "
            "or re-export it as H.264 mp4, PNG images or a PNG sequence"
        ) from exc
    file_fps = meta.get("fps") or 0.0
    fps = float(file_fps) if math.isfinite(file_fps) and file_fps > 0 else DEFAULT_FPS
    if not describe:
        return DecodedVideo(kept, total, fps, 1.0)
    _warn_if_cut_short(path, total, meta.get("duration") or 0.0, fps)
    _warn_if_alpha_dropped(path, str(meta.get("codec") or ""), str(meta.get("pix_fmt") or ""))
    return DecodedVideo(kept, total, fps, _pixel_aspect(path))


def _warn_if_cut_short(path: Path, total: int, duration: float, fps: float) -> None:
    """Warn when a video's packets end well before the length its header gives: a file cut short (an interrupted
    copy, download or recording) still decodes up to the cut, and sampling would spread the frames over what is left.
    Times, not frame counts, decide: a header's frame rate is nominal in Matroska (a screen recording idles at 1 fps),
    and its length is the longest stream's (an audio track may outlast the video), so the packets of all streams are
    read, but only when the frames fall short of length x rate (a whole constant-rate video costs no second pass)."""
    if not (math.isfinite(duration) and duration > 0) or total >= COMPLETE_SHARE * duration * fps:
        return
    span = _packet_span(path)
    if span is not None and span < COMPLETE_SHARE * duration:
        warnings.warn(
            f"video {path} decoded to {total} frames, but its streams end after {span:.2f} s of the {duration:g} s "
            "its header gives: the file may be cut short (an interrupted copy, download or recording). If the clip "
            "plays to its end, ignore this; otherwise copy or export it again",
            VideoInputWarning,
            stacklevel=4,
        )


def _warn_if_alpha_dropped(path: Path, codec: str, pixel_format: str) -> None:
    """Warn when a video's frames carry alpha: decoding to RGB drops it (ffmpeg does not composite), which the user
    would otherwise only notice as a black background in the motion. ffmpeg decodes every GIF to bgra, transparent
    or not, so GIFs are left out rather than warned about each time."""
    if codec.rstrip(",") != "gif" and _ALPHA_PIXEL_FORMAT.match(pixel_format):  # imageio reads "gif,"
        warnings.warn(
            f"video {path} has an alpha channel ({pixel_format}); if it holds transparency, {_ALPHA_ADVICE}",
            VideoInputWarning,
            4,
        )


def _packet_span(path: Path) -> float | None:
    """Seconds from the first packet's start to the last one's end over all streams of a media file, read from the
    packets' timestamps without decoding (ffmpeg's framecrc listing, one line per packet, read as it comes); None when
    none can be read."""
    list_packets = ["-map", "0", "-c", "copy", "-f", "framecrc", "-"]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "quiet", "-i", str(path), *list_packets]
    time_bases: dict[str, Fraction] = {}
    starts: dict[str, int] = {}  # per stream, in its own time base: integers until the end
    ends: dict[str, int] = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **_no_console()) as listing:
        assert listing.stdout is not None
        for raw in listing.stdout:
            line = raw.decode(errors="replace")
            if match := re.match(r"#tb (\d+): (\d+)/(\d+)", line):
                time_bases[match[1]] = Fraction(int(match[2]), int(match[3]))
                continue
            fields = line.split(",")
            stream = fields[0].strip()
            if line.startswith("#") or len(fields) < 4 or stream not in time_bases:
                continue
            try:
                decoded_at, start, length = int(fields[1]), int(fields[2]), int(fields[3])
            except ValueError:
                continue
            if start == NO_TIMESTAMP:  # AVI packets carry decoding times only
                start = decoded_at
            if start == NO_TIMESTAMP:
                continue
            starts[stream] = min(starts.get(stream, start), start)
            ends[stream] = max(ends.get(stream, start + length), start + length)
    if not starts:
        return None
    first = min(starts[stream] * time_bases[stream] for stream in starts)
    last = max(ends[stream] * time_bases[stream] for stream in ends)
    return float(last - first)


def _pixel_aspect(path: Path) -> float:
    """Width over height of one pixel of a video's frames as ffmpeg decodes them ("[SAR 64:45 DAR 16:9]" in its
    description of the output stream): the container's aspect where it overrides the codec's, and turned with the
    picture when ffmpeg turns a rotated video upright. 1.0 when ffmpeg does not say. imageio-ffmpeg's metadata leaves
    it out, so ffmpeg is asked, decoding one frame."""
    described = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-frames:v", "1", "-f", "null", "-"],
        capture_output=True,
        check=False,
        **_no_console(),
    ).stderr.decode(errors="replace")
    _, _, output = described.partition("Output #0")
    for line in output.splitlines():
        if line.lstrip().startswith("Stream #") and " Video: " in line:
            match = re.search(r"\[SAR (\d+):(\d+) ", line)
            if match is None or 0 in (int(match[1]), int(match[2])):
                return 1.0
            return int(match[1]) / int(match[2])
    return 1.0


def _natural_key(name: str) -> tuple[tuple[object, ...], str]:
    """Sort key that orders embedded numbers by value: frame2 before frame10.

    re.split with a capture group alternates text and digit runs, so element types line up between any two
    names and tuples compare without mixing str and int.
    """
    parts = re.split(r"(\d+)", name.lower())
    natural = tuple(int(part) if i % 2 else part for i, part in enumerate(parts))
    return natural, name  # the raw name breaks ties such as frame01 / frame1


def _list_image_files(folder: Path) -> list[Path]:
    """Image files of a folder in natural order; hidden files (including our own temp files) are skipped."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise VideoInputError(
            f"folder {folder} holds no image files ({extensions}): render or export the reference frames "
            "into it, or pass a video file instead"
        )
    _check_one_sequence(folder, files)
    return sorted(files, key=lambda p: _natural_key(p.name))


def _check_one_sequence(folder: Path, files: list[Path]) -> None:
    """Refuse a folder that holds several numbered sequences (render passes such as beauty_0001.png and
    depth_0001.png, 0001_beauty.png and 0001_depth.png, or 0001.png and 0001.jpg): read in one order, their frames
    would interleave. Nor may a sequence share its folder with other images (a thumbnail.png would be a frame)."""
    patterns: dict[tuple[str, str], list[Path]] = {}
    for path in files:  # a sequence's names differ in their numbers only
        patterns.setdefault((re.sub(r"\d+", "#", path.stem), path.suffix.lower()), []).append(path)
    sequences = sorted(pattern for pattern, members in patterns.items() if len(members) >= 2 and "#" in pattern[0])
    if len(sequences) > 1:
        suffixes = {suffix for _, suffix in sequences}
        names = ", ".join(
            stem.replace("#", "…") + (suffix if len(suffixes) > 1 else "") for stem, suffix in sequences[:4]
        )
        raise VideoInputError(
            f"folder {folder} holds {len(sequences)} image sequences ({names}): move one of them into a folder of "
            "its own and pass that folder"
        )
    if sequences:
        others = sorted(
            path.name for pattern, members in patterns.items() if pattern != sequences[0] for path in members
        )
        if others:
            listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise VideoInputError(
                f"folder {folder} holds the numbered frames {sequences[0][0].replace('#', '…')}{sequences[0][1]} and "
                f"other images ({listed}), which would be read as frames too: move them out of the folder"
            )
        _warn_of_gaps(folder, sequences[0], patterns[sequences[0]])


def _warn_of_gaps(folder: Path, pattern: tuple[str, str], members: list[Path]) -> None:
    """Warn when a sequence's frame numbers skip some (a render stopped half way, frames deleted): the files are
    read as consecutive frames, so the motion would jump. A constant step (every 2nd frame rendered) is no gap."""
    numbered = _frame_numbers(members)
    if numbered is None:
        return
    numbers, width = numbered
    steps = [b - a for a, b in pairwise(numbers)]
    step = math.gcd(*steps)
    gaps = [(a + step, b - step) for a, b in pairwise(numbers) if b - a > step]
    if not gaps:
        return
    count = sum((last - first) // step + 1 for first, last in gaps)
    shown = [f"{a:0{width}d}" if a == b else f"{a:0{width}d}-{b:0{width}d}" for a, b in gaps[:3]]
    listed = ", ".join(shown) + (f" and {len(gaps) - 3} more runs" if len(gaps) > 3 else "")
    every = f" numbered every {step}" if step > 1 else ""
    warnings.warn(
        f"folder {folder}: the frames {pattern[0].replace('#', '…')}{pattern[1]}{every} miss {count} "
        f"number{'' if count == 1 else 's'} ({listed}); the files are read as consecutive frames, so the motion "
        "jumps there. Render or copy the missing frames, or ignore this if they were left out on purpose",
        VideoInputWarning,
        stacklevel=5,
    )


def _frame_numbers(members: list[Path]) -> tuple[list[int], int] | None:
    """The sorted frame numbers of one sequence (the one digit run that differs between its names) and the width
    they are padded to; None when no run or several runs differ (shot1_take1, shot2_take3: no clear order)."""
    runs = [re.findall(r"\d+", path.stem) for path in members]
    varying = [i for i in range(len(runs[0])) if len({int(run[i]) for run in runs}) > 1]
    if len(varying) != 1:
        return None
    digits = [run[varying[0]] for run in runs]
    return sorted({int(d) for d in digits}), min(len(d) for d in digits)


def _load_image(path: Path) -> tuple[np.ndarray, bool]:
    """Load one image file as (H, W, 3) uint8 RGB, and whether it had transparent pixels (their alpha is dropped)."""
    try:
        with Image.open(path) as image:
            image.load()
            # Honour the EXIF orientation of phone photos, as ffmpeg honours a video's rotation.
            image = ImageOps.exif_transpose(image)
            return _image_to_rgb(image, path), _has_transparent_pixels(image)
    except VideoInputError:
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise VideoInputError(
            f"could not read image {path} ({exc}): check that the file is a valid image, or re-export it as PNG"
        ) from exc


def _image_to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an opened image, scaling 16-bit and float images rather than clipping them."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_scaled_sixteen_bit(np.asarray(image, dtype=np.float64), path, image.mode))
    if image.mode == "F":
        return _gray_to_rgb(_scaled_float(np.asarray(image, dtype=np.float64), path))
    if image.mode not in _RGB_MODES:
        raise VideoInputError(
            f"image {path} is in Pillow mode {image.mode}, which cannot be converted to RGB faithfully: "
            "re-export it as an 8-bit or 16-bit RGB PNG"
        )
    # Grayscale, palette, RGBA (alpha dropped), CMYK, ... all become plain RGB.
    return np.asarray(image.convert("RGB"))


def _scaled_sixteen_bit(gray: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """0-65535 grayscale to 0-255; convert("RGB") would clip at 255 instead of scaling."""
    if gray.size and (gray.min() < 0 or gray.max() > 65535):  # mode "I" holds 32-bit values
        raise VideoInputError(
            f"image {path} (Pillow mode {mode}) holds values from {gray.min():g} to {gray.max():g}, outside 16 bits: "
            "re-export it as an 8-bit or 16-bit PNG"
        )
    return np.round(gray * (255 / 65535)).astype(np.uint8)


def _scaled_float(gray: np.ndarray, path: Path) -> np.ndarray:
    """0-1 float grayscale (a 32-bit float TIFF) to 0-255; convert("RGB") would read 0-1 as almost black."""
    low, high = (float(gray.min()), float(gray.max())) if gray.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)) or low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE:
        raise VideoInputError(
            f"image {path} is a float image (Pillow mode F) with values from {low:g} to {high:g}, outside 0-1 "
            "(HDR or linear data?): re-export it as an 8-bit or 16-bit PNG with the view transform applied"
        )
    return np.round(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _has_transparent_pixels(image: Image.Image) -> bool:
    """Whether any pixel is less than opaque; an alpha channel that is opaque everywhere loses nothing."""
    if image.mode not in _RGB_MODES or not image.has_transparency_data:
        return False
    return image.convert("RGBA").getchannel("A").getextrema()[0] < 255


def _load_images(files: Sequence[Path]) -> np.ndarray:
    """Load image files into (F, H, W, 3) uint8, refusing frames of different sizes and warning once when any had
    transparent pixels."""
    first, transparent = _load_image(files[0])
    frames = np.empty((len(files), *first.shape), dtype=np.uint8)
    frames[0] = first
    for i, path in enumerate(files[1:], start=1):
        image, alpha = _load_image(path)
        if image.shape != first.shape:
            raise VideoInputError(
                f"image {path} is {image.shape[1]}x{image.shape[0]} but {files[0].name} is "
                f"{first.shape[1]}x{first.shape[0]}: all frames of a sequence must share one size; "
                "re-export them at one resolution or remove the odd file"
            )
        frames[i] = image
        transparent = transparent or alpha
    if transparent:
        # Named by folder, not file, so the counting read and the sampled read give one message.
        what = f"image {files[0]} has" if len(files) == 1 else f"the images in folder {files[0].parent} have"
        warnings.warn(f"{what} transparent pixels: {_ALPHA_ADVICE}", VideoInputWarning, stacklevel=3)
    return frames


def _array_input_error(message: str) -> Exception:
    return VideoInputError(f"the reference array {message}")


def _frames_parameter_error(message: str) -> Exception:
    return ParameterError("frames", message)


def _to_rgb_uint8(array: object, fail: Callable[[str], Exception]) -> np.ndarray:
    """Convert an array of frames to contiguous (F, H, W, 3) uint8.

    Accepts (F, H, W, 3), (F, H, W, 4) (alpha dropped), (F, H, W, 1) and (F, H, W) (grayscale); uint8 as is,
    floats in [0, 1] scaled by 255 and rounded. `fail(message)` builds the exception for anything else, so readers
    raise VideoInputError and writers raise ParameterError with the same wording.
    """
    if not isinstance(array, np.ndarray):
        raise fail(f"must be a numpy array, got {type(array).__name__}")
    shape = array.shape
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise fail(
            f"has shape {shape}; expected (frames, height, width, 3), (frames, height, width, 4) or "
            "(frames, height, width): stack single images along a new first axis"
        )
    if 0 in array.shape[:3]:
        raise fail(f"has shape {shape}, which holds no pixels: pass at least one frame of at least 1x1")

    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise fail("holds NaN or infinite values: clean the frames before passing them")
        if low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE:
            raise fail(
                f"is {array.dtype} with values from {low:g} to {high:g}; float frames must lie in [0, 1]: "
                "divide 0-255 values by 255, or convert to uint8"
            )
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise fail(
            f"has dtype {array.dtype}; expected uint8 (0-255) or float in [0, 1]: convert it, "
            "e.g. with array.astype(np.uint8) or array / 255.0"
        )

    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 4:
        array = array[..., :3]
    return np.ascontiguousarray(array)


def _check_num_frames(num_frames: int) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise ParameterError("num_frames", f"must be a positive integer, got {num_frames!r}")


def _is_positive_number(value: object) -> bool:
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return numeric and math.isfinite(value) and value > 0


def _check_fps(fps: float) -> None:
    if not _is_positive_number(fps):
        raise ParameterError("fps", f"must be a positive number of frames per second, got {fps!r}")


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ParameterError(name, f"must be a positive integer number of pixels, got {value!r}")


def _check_pixel_aspect(pixel_aspect: float) -> None:
    if not _is_positive_number(pixel_aspect):
        raise ParameterError(
            "pixel_aspect", f"must be a positive number (pixel width over height), got {pixel_aspect!r}"
        )


def _check_resize_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        choices = ", ".join(f'"{m}"' for m in RESIZE_MODES)
        raise ParameterError("resize_mode", f"must be one of {choices}, got {mode!r}")


def check_frame_step(step: int) -> None:
    """Raise ParameterError("frame_step") unless `step` is a whole number of frames from 1 to MAX_FRAME_STEP."""
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= MAX_FRAME_STEP:
        raise ParameterError(
            "frame_step", f"must be a whole number of frames, at least 1 and at most {MAX_FRAME_STEP}, got {step!r}"
        )


def check_frame_sampling(rule: str) -> None:
    """Raise ParameterError("frame_sampling") unless `rule` is one of FRAME_SAMPLING_RULES."""
    if rule not in FRAME_SAMPLING_RULES:
        choices = ", ".join(f'"{r}"' for r in FRAME_SAMPLING_RULES)
        raise ParameterError("frame_sampling", f"must be one of {choices}, got {rule!r}")


def _no_console() -> dict[str, int]:
    """subprocess kwargs that stop a console window flashing up on Windows when ffmpeg starts."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NO_WINDOW}
    return {}
