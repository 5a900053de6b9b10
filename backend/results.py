"""Write a finished video to a folder: result.mp4, frames/0001.png ..., result.json. No bpy."""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .video_io import write_mp4, write_png_sequence


def write_result_folder(
    frames: np.ndarray, metadata: dict[str, Any], out_dir: str | Path, fps: float
) -> dict[str, Path]:
    """Write the three outputs of a job into `out_dir` and return their paths.

    Existing frames in `out_dir/frames` are never overwritten: the folder must not hold PNGs from another run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame_paths = write_png_sequence(frames, out_dir / "frames")
    video_path = write_mp4(frames, out_dir / "result.mp4", fps=fps)
    json_path = out_dir / "result.json"
    temporary = json_path.with_name(json_path.name + ".partial")
    temporary.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(temporary, json_path)
    return {"video": video_path, "frames": frame_paths[0].parent, "metadata": json_path}
