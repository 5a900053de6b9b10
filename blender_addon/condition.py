"""The condition image of image- and sketch-to-video, made from the panel's settings. No torch.

SparseCtrl holds one frame of the result to a picture: a keyframe ("rgb") or a line drawing ("scribble"). The artist
picks where it comes from: an image file, the frame a sequencer strip shows, a render of the camera, or a line-art
render of the camera. It stands on the output frame sampled nearest to the chosen scene frame.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import compat, line_art, png, reference
from ._protocol import client
from .thumbnails import show_image

CONDITION_IMAGE = "MotionClone Condition"  # the panel's thumbnail of the last condition made
# The condition kind each source gives; None: the artist's `condition_type`.
SOURCE_KINDS = {"FILE": None, "STRIP": None, "RENDER": "rgb", "LINE_ART": "scribble"}


@dataclass(frozen=True)
class ConditionPlan:
    """A condition ready to send, and what to record about it on the result strip."""

    condition: Any  # protocol `client.Condition`
    description: str  # in words, e.g. "line art of frame 12"

    def record(self, settings: Any) -> str:
        """JSON for the job and the result strip: what was sent, and the panel settings that made it."""
        return json.dumps(
            {
                "kind": self.condition.kind,
                "frames": list(self.condition.frames),
                "description": self.description,
                "source": settings.condition_source,
                "input": {"FILE": settings.condition_path, "STRIP": settings.condition_strip}.get(
                    settings.condition_source, ""
                ),
                "scene_frame": settings.condition_frame,
                "scale": settings.condition_scale,
            }
        )


def restore_condition_settings(settings: Any, record: str) -> list[str]:
    """Put a job's condition settings (from `ConditionPlan.record`) back into the panel; returns the names set."""
    if not record:
        settings.condition_source = "NONE"
        return ["condition_source"]
    values = json.loads(record)
    settings.condition_source = values["source"]
    settings.condition_type = values["kind"]
    settings.condition_frame = values["scene_frame"]
    settings.condition_scale = values["scale"]
    names = ["condition_source", "condition_type", "condition_frame", "condition_scale"]
    if values["source"] in ("FILE", "STRIP"):
        name = "condition_path" if values["source"] == "FILE" else "condition_strip"
        setattr(settings, name, values["input"])
        names.append(name)
    return names


def condition_kind(settings: Any) -> str:
    return SOURCE_KINDS[settings.condition_source] or settings.condition_type


def output_frame(sampled: list[int], scene_frame: int) -> int:
    """The index of the sampled scene frame nearest to `scene_frame` (the earlier one on a tie).

    Raises:
        ValueError: `scene_frame` lies outside the sampled range.
    """
    if not sampled[0] <= scene_frame <= sampled[-1]:
        raise ValueError(
            f"The condition frame {scene_frame} is outside the frame range {sampled[0]}-{sampled[-1]}: "
            "pick a frame inside it."
        )
    return min(range(len(sampled)), key=lambda index: abs(sampled[index] - scene_frame))


def make_condition(
    scene: bpy.types.Scene, settings: Any, sampled: list[int], width: int, height: int
) -> ConditionPlan | None:
    """The condition the panel asks for, or None for text-to-video. Renders one frame for RENDER and LINE_ART.

    Raises:
        ValueError: a missing file or strip, or a frame outside the range; the message says what to fix.
    """
    source = settings.condition_source
    if source == "NONE":
        return None
    frame = settings.condition_frame
    index = output_frame(sampled, frame)
    images, description = condition_pixels(scene, settings, frame, width, height)
    return ConditionPlan(client.Condition(condition_kind(settings), images, (index,)), description)


def condition_pixels(
    scene: bpy.types.Scene, settings: Any, frame: int, width: int, height: int
) -> tuple[np.ndarray, str]:
    """(uint8 (1, H, W, 3), its source in words) for the panel's condition source at scene frame `frame`."""
    source = settings.condition_source
    if source == "FILE":
        path = bpy.path.abspath(settings.condition_path)
        if not settings.condition_path or not Path(path).is_file():
            raise ValueError(f"The condition image '{settings.condition_path}' does not exist: pick an image file.")
        return reference.shrink_to(reference.load_image_rgb(path)[None], width, height), f"image {Path(path).name}"
    if source == "STRIP":
        editor = compat.source_strip_editor()
        strip = editor and compat.all_strips(editor).get(settings.condition_strip)
        if strip is None or strip.type not in ("IMAGE", "MOVIE"):
            raise ValueError(f"No image or movie strip named '{settings.condition_strip}' for the condition.")
        read = reference.read_movie_strip_frames if strip.type == "MOVIE" else reference.read_image_strip_frames
        return reference.shrink_to(read(strip, [frame]), width, height), f"strip {strip.name} at frame {frame}"
    if source == "RENDER":
        with reference.CameraRender(scene, [frame], width, height, settings.render_engine) as render:
            return render.render_all(), f"render of frame {frame}"
    if source == "LINE_ART":
        return line_art.render_line_art(scene, frame, width, height), f"line art of frame {frame}"
    raise ValueError(f"Unknown condition source {source!r}.")


def show_condition(images: np.ndarray) -> None:
    """Put the condition into the panel's thumbnail image (written to a temporary PNG and loaded)."""
    path = Path(tempfile.gettempdir()) / f"motionclone-condition-{os.getpid()}.png"
    png.write_png(path, images[0])
    show_image(CONDITION_IMAGE, path)
