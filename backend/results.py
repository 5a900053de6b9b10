"""Write a finished video to a folder: result.mp4, frames/0001.png ..., result.json. No bpy."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError, ResultFolderInUse
from .video_io import write_mp4, write_png_sequence

RESULT_FILES = ("result.mp4", "result.json")
EVALUATION_FILES = ("metrics.json", "tracks.png")  # what `motionclone evaluate` writes into RESULT/evaluation
_FRAME_NAME = re.compile(r"\d+\.png")


def earlier_result(out_dir: str | Path) -> list[Path]:
    """The files of a result already in `out_dir`: frames/NNNN.png, result.mp4, result.json and the evaluation of
    them. Other files are not the result's and are never touched.

    Raises:
        ParameterError: frames/ holds numbered pictures but neither result.json nor result.mp4 is there: they are
            somebody's own pictures (a reference, say), not a result to replace.
    """
    out_dir = Path(out_dir).expanduser()
    frames = out_dir / "frames"
    marks = [out_dir / name for name in RESULT_FILES if (out_dir / name).is_file()]
    numbered = sorted(path for path in frames.iterdir() if _FRAME_NAME.fullmatch(path.name)) if frames.is_dir() else []
    if numbered and not marks:
        raise ParameterError(
            "out",
            f"{frames} holds {len(numbered)} numbered pictures but {out_dir} has no result.json or result.mp4: they "
            "are not a MotionClone result, so they are neither replaced nor mixed with one; choose another --out "
            "folder",
        )
    evaluation = [out_dir / "evaluation" / name for name in EVALUATION_FILES]
    return marks + [path for path in numbered + evaluation if path.is_file()]


def check_result_folder(out_dir: str | Path, overwrite: bool) -> list[Path]:
    """Refuse, before any work, an `out_dir` that holds a result, unless it is to be replaced.

    Returns:
        The files of the result that is there (`earlier_result`), to be replaced.

    Raises:
        ResultFolderInUse: it holds one and `overwrite` is False.
    """
    out_dir = Path(out_dir).expanduser()
    check_writable_folder(out_dir)
    found = earlier_result(out_dir)
    if found and not overwrite:
        raise ResultFolderInUse(
            f"{out_dir} already holds a result ({found[0].relative_to(out_dir)} and {len(found) - 1} more files): "
            "choose another --out folder, or add --overwrite to replace it"
        )
    return found


def check_writable_folder(out_dir: Path) -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file in its place (or in the
    place of its frames/ folder), or a parent where this user may not write. Raises ParameterError naming `out`."""
    for path in (out_dir, out_dir / "frames"):
        if path.exists() and not path.is_dir():
            raise ParameterError("out", f"{path} is a file, not a folder: choose another --out folder")
    ancestor = out_dir
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ParameterError("out", f"{ancestor} is a file, so {out_dir} cannot be made: choose another --out folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ParameterError("out", f"this user may not write into {ancestor}: choose another --out folder")


def write_result_folder(
    frames: np.ndarray, metadata: dict[str, Any], out_dir: str | Path, fps: float, overwrite: bool = False
) -> dict[str, Path]:
    """Write the three outputs of a job into `out_dir` and return their paths.

    A result already in `out_dir` is refused, or with `overwrite` replaced: all of its frames (so that a shorter new
    result does not end in the old one's last frames) and its evaluation (which scored the old one). The new result
    is written completely into a hidden folder in `out_dir` first, and the old one removed only then: a failure
    while writing (a full disk, the video encoder) leaves the old result as it was.
    """
    out_dir = Path(out_dir).expanduser()
    earlier = check_result_folder(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-result-", dir=out_dir))
    try:
        new_frames = write_png_sequence(frames, staging / "frames")
        write_mp4(frames, staging / "result.mp4", fps=fps)
        (staging / "result.json").write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
        # What the new result does not replace goes first (frames past its last, the old evaluation); then frames,
        # video and result.json are replaced in place, result.json last: an interruption leaves a folder that still
        # holds a result.json, which --overwrite replaces.
        replaced = {out_dir / "frames" / path.name for path in new_frames} | {out_dir / name for name in RESULT_FILES}
        for path in earlier:
            if path not in replaced:
                path.unlink()
        (out_dir / "frames").mkdir(exist_ok=True)
        for path in new_frames:
            os.replace(path, out_dir / "frames" / path.name)
        os.replace(staging / "result.mp4", out_dir / "result.mp4")
        os.replace(staging / "result.json", out_dir / "result.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"video": out_dir / "result.mp4", "frames": out_dir / "frames", "metadata": out_dir / "result.json"}
