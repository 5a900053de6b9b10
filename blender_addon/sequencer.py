"""Putting a MotionClone result into the Video Sequencer as one image strip. No torch.

Works with Blender 4.2 to 5.x: strips are ``bpy.types.Strip`` from 4.4 (``Sequence`` before), and the editor's
collection is ``strips`` from 4.4 (``sequences`` before; 5.0 removed ``sequences``). Nothing here depends on the
class names. Existing strips are never moved or removed.
"""

import bisect
import contextlib
from itertools import pairwise
from pathlib import Path
from typing import Any

import bpy

from . import compat

MAX_CHANNEL = 128  # Blender's MAXSEQ


def free_channel_on_top(editor: Any, frame_start: int, frame_end: int) -> int:
    """The channel just above every top-level strip overlapping a frame range (higher channels draw on top, so the
    result is what the preview shows there), or, when the top channel is taken, the lowest free one.

    Only top-level strips count: strips inside meta strips live in the meta's own channels, and the meta itself
    occupies its channel at the top level.

    Args:
        editor (`bpy.types.SequenceEditor`): the scene's sequence editor.
        frame_start (`int`): first frame of the range.
        frame_end (`int`): last frame of the range (inclusive).

    Returns:
        `int`: a channel from 1 to 128.

    Raises:
        ValueError: ``frame_end`` is before ``frame_start``.
        RuntimeError: every channel has a strip in the range.
    """
    if frame_end < frame_start:
        raise ValueError(f"`frame_end` ({frame_end}) is before `frame_start` ({frame_start}).")
    # frame_final_end is exclusive: a strip shows frames frame_final_start .. frame_final_end - 1.
    taken = {
        strip.channel
        for strip in compat.strips(editor)
        if strip.frame_final_start <= frame_end and strip.frame_final_end - 1 >= frame_start
    }
    above = max(taken, default=0) + 1
    if above <= MAX_CHANNEL:
        return above
    for channel in range(1, MAX_CHANNEL + 1):
        if channel not in taken:
            return channel
    raise RuntimeError(
        f"All {MAX_CHANNEL} sequencer channels have strips between frames {frame_start} and {frame_end}: "
        "free a channel or move some strips."
    )


def element_files(frame_files: list[str], scene_frames: list[int], frame_start: int, frame_end: int) -> list[str]:
    """The file shown at each scene frame from ``frame_start`` to ``frame_end``.

    Result frame k was made from scene frame ``scene_frames[k]``; scene frame f shows the result of the latest
    sampled frame at or before f (frames before the first sample show the first result). When every frame was
    sampled this is one file per frame, in order.

    Args:
        frame_files (`list[str]`): result file names, one per sampled frame, in order.
        scene_frames (`list[int]`): the sampled scene frames, strictly increasing.
        frame_start (`int`): first scene frame of the strip.
        frame_end (`int`): last scene frame of the strip (inclusive).

    Returns:
        `list[str]`: ``frame_end - frame_start + 1`` file names; a repeated name holds a frame.

    Raises:
        ValueError: empty or mismatched lists, frames not increasing, or ``frame_end`` before ``frame_start``.
    """
    if not frame_files or len(frame_files) != len(scene_frames):
        raise ValueError(
            f"`frame_files` ({len(frame_files)}) and `scene_frames` ({len(scene_frames)}) must be non-empty "
            "and of equal length: one result file per sampled frame."
        )
    if any(later <= earlier for earlier, later in pairwise(scene_frames)):
        raise ValueError(f"`scene_frames` must be strictly increasing, got {scene_frames}.")
    if frame_end < frame_start:
        raise ValueError(f"`frame_end` ({frame_end}) is before `frame_start` ({frame_start}).")
    files = []
    for frame in range(frame_start, frame_end + 1):
        index = max(bisect.bisect_right(scene_frames, frame) - 1, 0)
        files.append(frame_files[index])
    return files


def add_result_strip(
    scene: bpy.types.Scene,
    folder: Path,
    frame_files: list[str],
    scene_frames: list[int],
    frame_start: int,
    frame_end: int,
    name: str,
    properties: dict[str, str | int | float],
) -> Any:
    """Add the result frames as one image strip covering a frame range, on a free channel above the strips there.

    The strip starts at ``frame_start`` and lasts exactly ``frame_end - frame_start + 1`` frames, with the
    frames mapped as `element_files` describes, so it plays in step with the animation at the scene's frame rate.
    The sequence editor is created if missing; existing strips are left alone. The scene's view transform, look
    and frame rate are kept (adding image strips may change them).

    Args:
        scene (`bpy.types.Scene`): the scene whose sequencer gets the strip.
        folder (`Path`): folder holding the result files.
        frame_files (`list[str]`): file names in ``folder`` (no directories), one per sampled frame, in order.
        scene_frames (`list[int]`): the scene frames the results were made from, strictly increasing.
        frame_start (`int`): first scene frame of the strip.
        frame_end (`int`): last scene frame of the strip (inclusive).
        name (`str`): the strip's name (Blender makes it unique).
        properties (`dict[str, str | int | float]`): stored as custom properties on the strip (prompt, seed, ...).

    Returns:
        `bpy.types.ImageStrip`: the new strip.

    Raises:
        ValueError: bad file names or frame lists (see `element_files`).
        RuntimeError: no free channel.
    """
    for file_name in frame_files:
        if not file_name or Path(file_name).name != file_name:
            raise ValueError(f"`frame_files` must hold file names inside `folder`, got {file_name!r}.")
    files = element_files(frame_files, scene_frames, frame_start, frame_end)
    editor = scene.sequence_editor_create()  # returns the existing editor if there is one
    channel = free_channel_on_top(editor, frame_start, frame_end)
    view = (scene.view_settings.view_transform, scene.view_settings.look)
    fps = (scene.render.fps, scene.render.fps_base)
    strips = compat.strips(editor)
    try:
        strip = strips.new_image(
            name=name,
            filepath=str(Path(folder) / files[0]),
            channel=channel,
            frame_start=frame_start,
            fit_method="FIT",  # results are smaller than the render size; fill the preview like the reference
        )
        try:
            for file_name in files[1:]:
                strip.elements.append(file_name)  # relative to strip.directory, which is `folder`
        except BaseException:
            strips.remove(strip)  # ours and half-built: don't leave it behind
            raise
    finally:
        if (scene.view_settings.view_transform, scene.view_settings.look) != view:
            # The look list depends on the view transform: set the transform first.
            scene.view_settings.view_transform, scene.view_settings.look = view
        if (scene.render.fps, scene.render.fps_base) != fps:
            scene.render.fps, scene.render.fps_base = fps
    strip.directory = relative_to_blend(Path(folder))
    for key, value in properties.items():
        strip[key] = value
    return strip


def first_strip_takes_over_render(scene: bpy.types.Scene) -> bool:
    """Whether a strip added now is the first of a scene that renders its camera: Blender renders the sequencer
    instead once it has a strip (with Post Processing > Sequencer on, as it is by default)."""
    editor = scene.sequence_editor
    empty = editor is None or len(compat.strips(editor)) == 0
    return empty and scene.camera is not None and scene.render.use_sequencer


def render_takeover_note(scene: bpy.types.Scene) -> str:
    """What a job's notes say when its strip made `first_strip_takes_over_render` come true."""
    return (
        f"Scene '{scene.name}' now renders its sequencer (this strip) instead of its camera. To render the camera "
        "again, switch off Output Properties > Post Processing > Sequencer, or remove the strip."
    )


def relative_to_blend(folder: Path) -> str:
    """`folder` as a strip directory: relative to the saved .blend ("//...") when it is on the same drive, so the
    project can move as a whole; absolute otherwise. Ends with a separator, as Blender writes directories."""
    directory = str(folder)
    if bpy.data.filepath:
        with contextlib.suppress(ValueError):  # another drive (Windows): no relative path exists
            directory = bpy.path.relpath(directory)
    return directory.rstrip("/\\") + "/"
