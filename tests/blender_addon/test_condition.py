"""Image- and sketch-to-video in the add-on: the condition image from a file, a strip, a render or line art."""

import json

import bpy
import numpy as np
import pytest

from blender_addon import compat, condition, demo_scene, line_art, png
from tests.blender_addon.test_addon import RecordingLayout, addon, animated_scene, configure_job, pump_until
from tests.server_process import ServerProcess

__all__ = ["addon"]


def freestyle_snapshot(scene):
    """Every setting the line-art render touches, and what exists in bpy.data that it could leave behind."""
    render, shading, view = scene.render, scene.display.shading, scene.view_settings
    layers = [
        (
            layer.name,
            layer.use_freestyle,
            layer.freestyle_settings.mode,
            layer.freestyle_settings.as_render_pass,
            layer.freestyle_settings.linesets.active_index,
            [
                (line_set.name, line_set.show_render, getattr(line_set.linestyle, "name", None))
                for line_set in layer.freestyle_settings.linesets
            ],
        )
        for layer in scene.view_layers
    ]
    return (
        (render.engine, render.use_freestyle, render.line_thickness_mode, render.line_thickness),
        (render.resolution_x, render.resolution_y, render.filepath, render.use_single_layer),
        (shading.light, shading.color_type, tuple(shading.single_color), shading.show_shadows, shading.show_cavity),
        (view.view_transform, view.look, view.exposure, view.gamma),
        scene.eevee.taa_render_samples,
        scene.world.name if scene.world else None,
        layers,
        sorted(bpy.data.linestyles.keys()),
        sorted(bpy.data.worlds.keys()),
        sorted(bpy.data.images.keys()),
        scene.frame_current,
    )


@pytest.fixture
def demo(addon):
    scene = bpy.context.scene
    demo_scene.build_blockout_scene(scene, "object", 16)
    # The artist's own Freestyle setup, which must come back exactly.
    scene.render.line_thickness_mode, scene.render.line_thickness = "RELATIVE", 3.0
    layer = scene.view_layers[0]
    style = bpy.data.linestyles.new("Artist style")
    own = layer.freestyle_settings.linesets.new("Artist lines")
    own.linestyle = style
    layer.freestyle_settings.linesets.new("Artist contours").linestyle = style
    layer.freestyle_settings.linesets.active_index = 0  # not the last one made
    layer.freestyle_settings.as_render_pass = True  # composited separately: strokes in a pass of their own
    scene.view_settings.view_transform = "AgX"
    scene.display.shading.show_shadows = True
    return scene


def test_line_art_of_the_demo_scene_is_dark_lines_on_white_and_every_setting_comes_back(demo):
    before = freestyle_snapshot(demo)
    image = line_art.render_line_art(demo, 8, 128, 96)
    assert image.shape == (1, 96, 128, 3)
    brightness = image[0].mean(axis=2)
    assert (brightness > 240).mean() > 0.8  # a white page
    assert 0.01 < (brightness < 64).mean() < 0.2  # with dark lines, not dark areas
    assert freestyle_snapshot(demo) == before


def test_line_art_settings_come_back_after_a_failed_render(demo, monkeypatch):
    from blender_addon import reference

    before = freestyle_snapshot(demo)

    def fail(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(reference, "_render_still", fail)
    with pytest.raises(RuntimeError, match="render failed"):
        line_art.render_line_art(demo, 8, 64, 64)
    assert freestyle_snapshot(demo) == before


def test_line_art_setup_failing_on_a_later_view_layer_leaves_no_line_set_of_ours(demo, monkeypatch):
    demo.view_layers.new("Second layer")
    before = freestyle_snapshot(demo)
    kept = line_art._kept

    def fails_on_the_second_layer(owner, names):
        if getattr(owner, "name", None) == "Second layer":  # the first layer has its line set of ours by then
            raise RuntimeError("setup failed")
        return kept(owner, names)

    monkeypatch.setattr(line_art, "_kept", fails_on_the_second_layer)
    with pytest.raises(RuntimeError, match="setup failed"):
        line_art.render_line_art(demo, 8, 64, 64)
    assert freestyle_snapshot(demo) == before


def test_the_condition_stands_on_the_sampled_frame_nearest_to_the_scene_frame():
    sampled = [1, 4, 8, 11, 15]
    assert [condition.output_frame(sampled, frame) for frame in (1, 5, 6, 7, 15)] == [0, 1, 1, 2, 4]
    with pytest.raises(ValueError, match="outside the frame range 1-15"):
        condition.output_frame(sampled, 16)


def test_an_image_file_condition_keeps_its_pixels_and_kind(addon, tmp_path):
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    picture = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    png.write_png(tmp_path / "key.png", picture)
    settings.condition_source, settings.condition_path, settings.condition_type = (
        "FILE",
        str(tmp_path / "key.png"),
        "scribble",
    )
    settings.condition_frame = 8
    made = condition.make_condition(scene, settings, [1, 3, 6, 8], 64, 48)
    assert made.condition.kind == "scribble" and made.condition.frames == (3,)
    assert np.array_equal(made.condition.images[0], picture)
    settings.condition_path = str(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="does not exist"):
        condition.make_condition(scene, settings, [1, 3, 6, 8], 64, 48)


def test_a_strip_condition_is_the_strips_picture_at_the_condition_frame(addon, tmp_path):
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    pictures = [np.full((12, 20, 3), value, dtype=np.uint8) for value in (30, 140, 230)]
    for index, picture in enumerate(pictures):
        picture[0, :, 1] = 255 - index  # a marked top row: a flipped read would show
        png.write_png(tmp_path / f"key_{index}.png", picture)
    strip = compat.strips(scene.sequence_editor_create()).new_image(
        name="keys", filepath=str(tmp_path / "key_0.png"), channel=2, frame_start=4
    )
    for index in (1, 2):
        strip.elements.append(f"key_{index}.png")
    settings.condition_source, settings.condition_strip, settings.condition_type = "STRIP", "keys", "rgb"
    settings.condition_frame = 5  # the strip's second picture
    made = condition.make_condition(scene, settings, [1, 3, 5, 8], 64, 48)
    assert made.condition.kind == "rgb" and made.condition.frames == (2,)
    assert np.array_equal(made.condition.images[0], pictures[1])
    assert made.description == "strip keys at frame 5"
    settings.condition_strip = "no such strip"
    with pytest.raises(ValueError, match="No image or movie strip named 'no such strip'"):
        condition.make_condition(scene, settings, [1, 3, 5, 8], 64, 48)


def test_a_render_condition_is_the_cameras_picture_of_that_frame_and_always_rgb(addon):
    from blender_addon import reference

    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    settings.condition_source, settings.condition_type, settings.condition_frame = "RENDER", "scribble", 8
    made = condition.make_condition(scene, settings, [1, 4, 8], 64, 48)
    assert made.condition.kind == "rgb" and made.condition.frames == (2,)  # a render is a picture, not a sketch
    with reference.CameraRender(scene, [1, 8], 64, 48, settings.render_engine) as render:
        first, last = render.render_all()
    assert made.condition.images.shape == (1, 48, 64, 3)
    assert np.array_equal(made.condition.images[0], last)
    assert not np.array_equal(first, last)  # the cube moved: frame 8 is not just any frame


def test_the_preview_shows_the_condition_in_the_panel(addon):
    from blender_addon import panels

    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    settings.condition_source, settings.condition_frame = "LINE_ART", 4
    assert bpy.ops.motionclone.preview_condition() == {"FINISHED"}
    image = bpy.data.images[condition.CONDITION_IMAGE]
    assert tuple(image.size) == (64, 48)
    calls = []
    panels.draw_motionclone(RecordingLayout(calls), bpy.context)
    props = {args[1] for name, args, _ in calls if name == "prop"}
    assert {"condition_source", "condition_frame", "condition_scale"} <= props
    assert ("template_icon", (), {"icon_value": image.preview.icon_id, "scale": 5.0}) in calls
    settings.condition_frame = 99
    with pytest.raises(RuntimeError, match="condition frame 99 is outside the frame range 1-8"):
        bpy.ops.motionclone.preview_condition()  # reported as an error (raised in background mode)


@pytest.fixture(scope="module")
def scribble_backend(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("scribble-backend"), extra=("--sparsectrl", "scribble")).start()
    yield server
    server.kill()


def test_a_line_art_condition_goes_through_the_backend_into_the_sequencer(addon, scribble_backend):
    addon.endpoint = scribble_backend.endpoint
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    settings.condition_source, settings.condition_frame, settings.condition_scale = "LINE_ART", 6, 0.8
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    job = settings.jobs[0]
    assert json.loads(job.params_json)["controlnet_scale"] == pytest.approx(0.8)
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 180), job.message
    assert job.state == "DONE", job.message
    strip = compat.strips(scene.sequence_editor)[job.strip_name]
    record = json.loads(strip["motionclone_condition"])
    # 4 frames sampled from 1-8 are 1, 3, 5, 8: scene frame 6 is nearest to 5, the output frame 2.
    assert (record["kind"], record["frames"], record["source"], record["scene_frame"]) == (
        "scribble",
        [2],
        "LINE_ART",
        6,
    )
    assert record["scale"] == pytest.approx(0.8)

    settings.condition_source, settings.condition_frame = "NONE", 1
    assert bpy.ops.motionclone.use_job_settings() == {"FINISHED"}
    assert (settings.condition_source, settings.condition_frame) == ("LINE_ART", 6)
    assert settings.condition_scale == pytest.approx(0.8)
