"""Write a finished video to a folder: result.mp4, frames/0001.png ..., result.json. No bpy."""

import json
import os
import re
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
    them. Other files are not the result's and are never touched."""
    out_dir = Path(out_dir).expanduser()
    frames = out_dir / "frames"
    files = [out_dir / name for name in RESULT_FILES]
    if frames.is_dir():
        files += sorted(path for path in frames.iterdir() if _FRAME_NAME.fullmatch(path.name))
    files += [out_dir / "evaluation" / name for name in EVALUATION_FILES]
    return [path for path in files if path.is_file()]


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

    A result already in `out_dir` is refused, or with `overwrite` removed first (all of its frames, so that a
    shorter new result does not end in the old one's last frames, and its evaluation, which scored the old one).
    """
    out_dir = Path(out_dir).expanduser()
    for path in check_result_folder(out_dir, overwrite):
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    frame_paths = write_png_sequence(frames, out_dir / "frames")
    video_path = write_mp4(frames, out_dir / "result.mp4", fps=fps)
    json_path = out_dir / "result.json"
    temporary = json_path.with_name(json_path.name + ".partial")
    temporary.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(temporary, json_path)
    return {"video": video_path, "frames": frame_paths[0].parent, "metadata": json_path}
