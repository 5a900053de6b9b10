"""blender_addon.sequencer in real Blender: the result strip's channel, timing, frames and properties. No torch."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bpy
import numpy as np
import pytest

from blender_addon import compat, result_files, sequencer

pytestmark = pytest.mark.usefixtures("scene")


def colour_strip(scene: bpy.types.Scene, name: str, channel: int, frame_start: int, length: int) -> Any:
    return compat.new_effect_strip(scene.sequence_editor_create(), name, "COLOR", channel, frame_start, length)


def strip_state(strip: Any) -> tuple[str, int, int, int]:
    return strip.name, strip.channel, strip.frame_final_start, strip.frame_final_duration


def write_results(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    frames = np.zeros((count, 8, 16, 3), dtype=np.uint8)
    folder = result_files.write_result_frames(tmp_path, "result", frames)
    return folder, sorted(path.name for path in folder.iterdir())


def test_compat_finds_the_strip_collections_of_this_blender(scene: bpy.types.Scene) -> None:
    editor = scene.sequence_editor_create()
    new = bpy.app.version >= (4, 4, 0)
    assert compat.strips(editor) == (editor.strips if new else editor.sequences)
    assert compat.all_strips(editor) == (editor.strips_all if new else editor.sequences_all)
    strip = compat.new_effect_strip(editor, "c", "COLOR", 2, 5, 10)
    assert (strip.frame_final_start, strip.frame_final_duration, strip.channel) == (5, 10, 2)
    assert compat.all_strips(editor)["c"] == strip
    old_editor = SimpleNamespace(sequences=["old"], sequences_all=["all"])  # Blender 4.2-4.3 has only these
    assert compat.strips(old_editor) == ["old"] and compat.all_strips(old_editor) == ["all"]
    assert compat.sequencer_scene(bpy.context) == scene  # background mode: the sequencer shows this scene


def test_the_result_channel_is_above_the_strips_that_overlap_its_range(scene: bpy.types.Scene) -> None:
    editor = scene.sequence_editor_create()
    colour_strip(scene, "overlaps", channel=2, frame_start=5, length=10)  # frames 5..14
    colour_strip(scene, "before", channel=4, frame_start=1, length=9)  # frames 1..9, ends before 10
    colour_strip(scene, "touches end", channel=1, frame_start=20, length=5)  # frames 20..24

    assert sequencer.free_channel_on_top(editor, 10, 20) == 3  # channel 1 is free but under the shot: hidden
    assert sequencer.free_channel_on_top(editor, 9, 20) == 5
    assert sequencer.free_channel_on_top(editor, 30, 40) == 1
    colour_strip(scene, "on the top channel", channel=sequencer.MAX_CHANNEL, frame_start=10, length=1)
    assert sequencer.free_channel_on_top(editor, 10, 20) == 3  # no channel above: the lowest free one


def test_element_files_hold_the_latest_sampled_frame() -> None:
    files = ["a", "b", "c", "d"]

    mapped = sequencer.element_files(files, [3, 6, 9, 12], 1, 14)

    assert mapped == ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3  # frames 1-2 before the first sample hold "a"
    assert sequencer.element_files(files, [5, 6, 7, 8], 5, 8) == files  # every frame sampled: one to one
    with pytest.raises(ValueError, match="equal length"):
        sequencer.element_files(files, [1, 2, 3], 1, 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        sequencer.element_files(files, [1, 3, 3, 4], 1, 4)


def test_add_result_strip_covers_the_range_on_a_free_channel_above_the_strips_there(
    scene: bpy.types.Scene, tmp_path: Path
) -> None:
    existing = [
        colour_strip(scene, "overlaps", channel=1, frame_start=1, length=30),
        colour_strip(scene, "elsewhere", channel=2, frame_start=50, length=10),
    ]
    before = [strip_state(strip) for strip in existing]
    scene.view_settings.view_transform = "Khronos PBR Neutral"
    scene.render.fps, scene.render.fps_base = 30, 1.001
    folder, files = write_results(tmp_path, 4)
    properties = {"motionclone_prompt": "a red fox", "motionclone_seed": 42, "motionclone_cfg": 7.5}

    strip = sequencer.add_result_strip(scene, folder, files, [1, 4, 7, 10], 1, 12, "MotionClone 42", properties)

    assert strip.type == "IMAGE" and strip.channel == 2
    assert strip.frame_final_start == 1 and strip.frame_final_duration == 12
    assert Path(bpy.path.abspath(strip.directory)) == folder
    # Scene frame 1 + k shows the result of the latest sampled frame at or before it.
    shown = {k: strip.elements[k].filename for k in (0, 2, 3, 5, 6, 9, 11)}
    assert shown == {0: "0001.png", 2: "0001.png", 3: "0002.png", 5: "0002.png", 6: "0003.png", 9: "0004.png"} | {
        11: "0004.png"
    }
    assert {key: strip[key] for key in properties} == properties
    assert [strip_state(strip) for strip in existing] == before
    assert len(compat.strips(scene.sequence_editor)) == 3
    assert scene.view_settings.view_transform == "Khronos PBR Neutral"
    assert (scene.render.fps, scene.render.fps_base) == (30, pytest.approx(1.001))


class StripsThatChangeTheScene:
    """The strips collection, but new_image switches the view transform and fps as Blender may do."""

    def __init__(self, strips: Any, scene: bpy.types.Scene) -> None:
        self.strips, self.scene = strips, scene

    def __iter__(self) -> Any:
        return iter(self.strips)

    def new_image(self, **kwargs: Any) -> Any:
        self.scene.view_settings.view_transform = "Standard"
        self.scene.render.fps = 25
        return self.strips.new_image(**kwargs)


def test_result_strip_paths_are_relative_to_a_saved_blend(scene: bpy.types.Scene, tmp_path: Path) -> None:
    folder, files = write_results(tmp_path / "results", 2)
    unsaved = sequencer.add_result_strip(scene, folder, files, [1, 2], 1, 2, "unsaved", {})
    assert unsaved.directory == str(folder) + "/"  # nothing to be relative to yet
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    saved = sequencer.add_result_strip(bpy.context.scene, folder, files, [1, 2], 1, 2, "saved", {})
    assert saved.directory == "//results/result/"
    assert Path(bpy.path.abspath(saved.directory)) == folder


def test_add_result_strip_undoes_view_transform_and_fps_changes(
    scene: bpy.types.Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene.view_settings.view_transform = "AgX"
    scene.render.fps = 24
    real_strips = compat.strips
    monkeypatch.setattr(compat, "strips", lambda editor: StripsThatChangeTheScene(real_strips(editor), scene))
    folder, files = write_results(tmp_path, 2)

    strip = sequencer.add_result_strip(scene, folder, files, [1, 2], 1, 2, "MotionClone", {})

    assert strip.frame_final_duration == 2
    assert scene.view_settings.view_transform == "AgX"
    assert scene.render.fps == 24


def test_add_result_strip_maps_every_sampled_frame_one_to_one(scene: bpy.types.Scene, tmp_path: Path) -> None:
    folder, files = write_results(tmp_path, 4)

    strip = sequencer.add_result_strip(scene, folder, files, [20, 21, 22, 23], 20, 23, "MotionClone", {})

    assert strip.channel == 1 and strip.frame_final_start == 20 and strip.frame_final_duration == 4
    assert [element.filename for element in strip.elements] == files


def test_add_result_strip_rejects_paths_instead_of_file_names(scene: bpy.types.Scene, tmp_path: Path) -> None:
    folder, files = write_results(tmp_path, 2)

    with pytest.raises(ValueError, match="`frame_files`"):
        sequencer.add_result_strip(scene, folder, [str(folder / files[0]), files[1]], [1, 2], 1, 2, "x", {})
    assert len(compat.strips(scene.sequence_editor_create())) == 0
