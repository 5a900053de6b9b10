"""The last camera reference is reused while nothing in the scene changed, and rendered again after any change."""

import bpy
import numpy as np
import pytest

from blender_addon import jobs, line_art, reference
from tests.blender_addon.test_addon import addon, animated_scene, configure_job
from tests.blender_addon.test_reference import colour_movie_strip

__all__ = ["addon"]


@pytest.fixture
def renders(monkeypatch):
    """Counts the frames Blender renders."""
    count = []
    original = reference._render_still

    def counted(scene, frame, path):
        count.append(frame)
        return original(scene, frame, path)

    monkeypatch.setattr(reference, "_render_still", counted)
    return count


def reference_of(scene):
    settings = scene.motionclone
    return jobs.reference_frames(scene, settings, [1, 4, 8], 64, 48)


def test_the_same_scene_is_rendered_once_and_any_change_renders_again(addon, renders, tmp_path):
    movie = colour_movie_strip(bpy.data.scenes.new("Movie maker"), tmp_path, [0.2, 0.6], frame_start=1)
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    first = reference_of(scene)
    assert len(renders) == 3
    settings.prompt, settings.seed = "another prompt", 99  # the add-on's own settings change no picture
    line_art.render_line_art(scene, 4, 64, 48)  # a condition render restores what it changed
    reference.read_movie_strip_frames(movie, [2])  # a movie condition's temporary scene is no edit either
    renders.clear()
    assert np.array_equal(reference_of(scene), first) and renders == []

    cube = bpy.data.objects["Cube"]
    cube.scale = (1.5, 1.5, 1.5)  # an edit of the scene's data
    moved = reference_of(scene)
    assert len(renders) == 3 and not np.array_equal(moved, first)

    renders.clear()
    scene.display.shading.single_color = (1.0, 0.0, 0.0)  # a scene setting the render reads
    scene.display.shading.color_type = "SINGLE"
    reference_of(scene)
    assert len(renders) == 3

    renders.clear()
    jobs.reference_frames(scene, settings, [1, 4, 8], 64, 56)  # another size
    assert len(renders) == 3


def test_the_add_on_s_own_changes_do_not_evaluate_scenes_never_shown(addon):
    from blender_addon import reference_cache

    other_shot = bpy.data.scenes.new("Another shot")
    other_shot.view_layers.new("Second layer")
    with reference_cache.own_changes():  # as around a strip read, which renders nothing
        pass
    assert all(layer.depsgraph is None for layer in other_shot.view_layers)  # each would cost its evaluation


def test_reuse_can_be_switched_off_and_an_undo_renders_again(addon, renders):
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    reference_of(scene)
    settings.reuse_reference = False
    reference_of(scene)
    assert len(renders) == 6
    settings.reuse_reference = True
    reference_of(scene)
    assert len(renders) == 6
    for handler in bpy.app.handlers.undo_post:  # what an undo in the UI runs
        handler(scene, None)
    reference_of(scene)
    assert len(renders) == 9


SCENE_LEVEL_CHANGES = {
    "camera marker moved": lambda scene: setattr(scene.timeline_markers["cut"], "frame", 3),  # frame 4 switches too
    "gravity": lambda scene: setattr(scene, "gravity", (0.0, 0.0, -3.0)),
    "rigid body speed": lambda scene: setattr(scene.rigidbody_world, "time_scale", 0.5),
    "rigid body cache range": lambda scene: setattr(scene.rigidbody_world.point_cache, "frame_end", 100),
}


@pytest.mark.parametrize("change", SCENE_LEVEL_CHANGES)
def test_a_moved_camera_marker_gravity_or_rigid_body_world_renders_again(addon, renders, change):
    """Scene-level settings Blender reports only as a scene update: which camera renders a frame, and physics."""
    scene = animated_scene(frames=8)
    configure_job(scene)
    second = bpy.data.objects.new("Second camera", bpy.data.cameras.new("Second camera"))
    scene.collection.objects.link(second)
    scene.timeline_markers.new("cut", frame=6).camera = second  # frame 8 renders from the second camera
    bpy.ops.rigidbody.world_add()
    reference_of(scene)
    renders.clear()
    reference_of(scene)
    assert renders == []  # nothing changed: reused

    SCENE_LEVEL_CHANGES[change](scene)
    reference_of(scene)
    assert len(renders) == 3
