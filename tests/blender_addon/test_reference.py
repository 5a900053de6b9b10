"""blender_addon.reference in real Blender: frame sampling, sizes, Workbench renders and strip reading. No torch."""

import gc
import math
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bpy
import numpy as np
import pytest

from blender_addon import compat, jobs, png, reference
from tests.blender_addon.conftest import decode_png_file

pytestmark = pytest.mark.usefixtures("scene")

WIDTH, HEIGHT = 64, 48
CUBE_LINEAR = (0.5, 0.2, 0.05)  # Workbench flat single colour, scene-linear
WORLD_LINEAR = (0.02, 0.05, 0.1)
ORTHO_SCALE = 8.0  # the camera sees x in [-4, 4] and y in [-3, 3]


def srgb_u8(linear: float) -> int:
    """The 8-bit sRGB value of a linear value: what the 'Standard' view transform writes."""
    encoded = 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055
    return round(encoded * 255)


def build_animated_scene(scene: bpy.types.Scene) -> bpy.types.Object:
    """A top-down orthographic camera, and a 2 m cube in the upper third moving from x=-2.5 (frame 1) to 2.5 (10)."""
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = ORTHO_SCALE
    camera.location = (0.0, 0.0, 10.0)  # no rotation: looks down -Z with +Y up in the image
    scene.collection.objects.link(camera)
    scene.camera = camera

    mesh = bpy.data.meshes.new("Cube")
    corners = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(corners, [], faces)
    cube = bpy.data.objects.new("Cube", mesh)
    scene.collection.objects.link(cube)
    for frame, x in ((1, -2.5), (10, 2.5)):
        cube.location = (x, 2.0, 0.0)
        cube.keyframe_insert("location", frame=frame)

    world = bpy.data.worlds.new("World")
    world.color = WORLD_LINEAR
    scene.world = world
    shading = scene.display.shading
    shading.light = "FLAT"
    shading.color_type = "SINGLE"
    shading.single_color = CUBE_LINEAR
    scene.view_settings.view_transform = "Standard"
    scene.render.dither_intensity = 0.0  # dither noise would blur the exact colour check
    return camera


def rna_values(struct: Any) -> dict[str, Any]:
    """Every readable non-pointer property of an RNA struct, arrays as tuples."""
    values = {}
    for prop in struct.bl_rna.properties:
        if prop.identifier == "rna_type" or prop.type in {"POINTER", "COLLECTION"}:
            continue
        value = getattr(struct, prop.identifier)
        values[prop.identifier] = tuple(value) if getattr(prop, "is_array", False) else value
    return values


def settings_snapshot(scene: bpy.types.Scene) -> dict[str, Any]:
    """Everything of the user's that a reference render could change."""
    return {
        "render": rna_values(scene.render),
        "image_settings": rna_values(scene.render.image_settings),
        "ffmpeg": rna_values(scene.render.ffmpeg),
        "shading": rna_values(scene.display.shading),
        "view": rna_values(scene.view_settings),
        "display": rna_values(scene.display_settings),
        "output_view": rna_values(scene.render.image_settings.view_settings),
        "output_display": rna_values(scene.render.image_settings.display_settings),
        "frames": (scene.frame_current, scene.frame_start, scene.frame_end, scene.frame_step),
        "camera": scene.camera.name if scene.camera else None,
        "images": sorted(image.name for image in bpy.data.images),
        "scenes": sorted(scene.name for scene in bpy.data.scenes),
    }


def set_unusual_user_settings(scene: bpy.types.Scene) -> None:
    """Settings far from what the reference render uses, so any missed restore shows."""
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = 1920, 1080, 50
    render.pixel_aspect_x, render.pixel_aspect_y = 2.0, 1.0
    render.filepath = "//user_output/shot_"
    render.use_file_extension = False
    render.film_transparent = True
    render.use_border = True
    render.use_compositing = True
    render.use_sequencer = True
    image_settings = render.image_settings
    compat.set_media_type(image_settings, "VIDEO")  # 5.x: FFMPEG is only valid for the VIDEO media type
    image_settings.file_format = "FFMPEG"
    image_settings.color_mode = "RGB"
    # Not Blender's H.264 preset, which switching the format back to FFMPEG applies on 4.x.
    ffmpeg = render.ffmpeg
    ffmpeg.format, ffmpeg.audio_codec = "MPEG4", "NONE"
    ffmpeg.constant_rate_factor, ffmpeg.ffmpeg_preset, ffmpeg.gopsize = "HIGH", "BEST", 7
    # The output's own look, which following the scene's for the render and back would overwrite.
    image_settings.color_management = "OVERRIDE"  # both Blenders tested have it (3.5+)
    image_settings.view_settings.view_transform = "Standard"
    image_settings.view_settings.exposure = 1.5
    scene.frame_start, scene.frame_end, scene.frame_step = 3, 40, 2
    scene.frame_current = 7


# ---- sample_frames and snapped_resolution --------------------------------------------------------------------------
def test_sample_frames_floors_linspace_like_the_backend() -> None:
    frames = reference.sample_frames(1, 100, 16)

    assert frames[:4] == [1, 7, 14, 20]
    assert frames == [1 + math.floor(k * 99 / 15) for k in range(16)]
    assert reference.sample_frames(5, 20, 16) == list(range(5, 21))
    assert reference.sample_frames(-3, 30, 5) == [-3 + int(v) for v in np.linspace(0, 33, 5, dtype=int)]


def test_sample_frames_rejects_a_range_shorter_than_the_frame_count() -> None:
    with pytest.raises(ValueError, match=r"has 10 frames but 16 are needed.*extend the frame range"):
        reference.sample_frames(1, 10, 16)


def test_snapped_resolution_keeps_the_aspect_on_a_multiple_of_8_grid(scene: bpy.types.Scene) -> None:
    render = scene.render
    cases = [
        ((1920, 1080, 1.0, 1.0), 512, (512, 288)),
        ((1080, 1920, 1.0, 1.0), 512, (288, 512)),
        ((720, 576, 16.0, 15.0), 512, (512, 384)),  # PAL 4:3 with non-square pixels
        ((1000, 333, 1.0, 1.0), 512, (512, 168)),  # 170.5 rounds to the nearest multiple of 8
        ((1920, 1080, 1.0, 1.0), 768, (768, 432)),
        ((4000, 10, 1.0, 1.0), 512, (512, 8)),  # never below 8
    ]
    for (res_x, res_y, aspect_x, aspect_y), long_side, expected in cases:
        render.resolution_x, render.resolution_y = res_x, res_y
        render.pixel_aspect_x, render.pixel_aspect_y = aspect_x, aspect_y
        size = reference.snapped_resolution(scene, long_side)
        assert size == expected, (res_x, res_y, aspect_x, aspect_y)
        assert all(side % 8 == 0 for side in size)


def test_snapped_resolution_rejects_a_long_side_off_the_grid(scene: bpy.types.Scene) -> None:
    with pytest.raises(ValueError, match="Size must be a multiple of 8 pixels, got 500: use 496 or 504"):
        reference.snapped_resolution(scene, 500)
    with pytest.raises(ValueError, match=r"got 4: use 8$"):
        reference.snapped_resolution(scene, 4)


def test_render_engines_are_accepted_by_this_blender(scene: bpy.types.Scene) -> None:
    for identifier in reference.RENDER_ENGINES.values():
        scene.render.engine = identifier
        assert scene.render.engine == identifier


# ---- render_camera_frames ------------------------------------------------------------------------------------------
def test_render_is_right_side_up_colour_exact_and_follows_the_animation(
    scene: bpy.types.Scene, tmp_path: Path, decode_png: Callable[[Path], np.ndarray]
) -> None:
    build_animated_scene(scene)
    frames = reference.sample_frames(1, 10, 4)

    pixels = reference.render_camera_frames(scene, frames, WIDTH, HEIGHT, "WORKBENCH", workdir=tmp_path)

    assert pixels.shape == (4, HEIGHT, WIDTH, 3) and pixels.dtype == np.uint8
    cube = np.array([srgb_u8(v) for v in CUBE_LINEAR])
    world = np.array([srgb_u8(v) for v in WORLD_LINEAR])
    # The cube covers y in [1, 3], the top third (rows 0..15); the bottom half is background only.
    is_cube = np.abs(pixels.astype(int) - cube).max(axis=3) <= 2
    assert is_cube[:, :16].any(axis=(1, 2)).all()
    assert not is_cube[:, 24:].any()
    assert np.abs(pixels[:, 40:, :, :].astype(int) - world).max() <= 2
    # Centre of the cube at frame 1 (x=-2.5) is column 12; at frame 10 (x=2.5) column 52.
    columns = [np.nonzero(is_cube[k, 8])[0] for k in range(4)]
    assert abs(columns[0].mean() - 12) <= 1 and abs(columns[-1].mean() - 52) <= 1
    assert all(np.diff([c.mean() for c in columns]) > 5)
    assert np.abs(pixels[0, 8, 12].astype(int) - cube).max() <= 1
    # The array holds exactly what is in the files Blender wrote (top row first, no colour conversion).
    written = sorted(tmp_path.glob("frame_*.png"))
    assert [path.name for path in written] == [f"frame_{k:04d}.png" for k in range(1, 5)]
    for k, path in enumerate(written):
        np.testing.assert_array_equal(decode_png(path), pixels[k])


def test_no_garbage_collection_can_start_during_a_reference_render(scene: bpy.types.Scene, tmp_path: Path) -> None:
    # Blender lets the protocol client's thread run during the render; a collection started there could free
    # Blender objects mid-render and crash it. The collector is off for each render and back on afterwards.
    build_animated_scene(scene)
    seen: list[bool] = []

    def record(*_: Any) -> None:
        seen.append(gc.isenabled())

    bpy.app.handlers.render_pre.append(record)
    try:
        reference.render_camera_frames(scene, [1, 10], WIDTH, HEIGHT, "WORKBENCH", tmp_path)
        assert seen == [False, False]
        assert gc.isenabled()
        gc.disable()  # a caller that had turned it off keeps it off
        try:
            reference.render_camera_frames(scene, [1], WIDTH, HEIGHT, "WORKBENCH", tmp_path)
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        bpy.app.handlers.render_pre.remove(record)


def test_the_protocol_clients_thread_is_kept_quiet_during_each_reference_render(
    scene: bpy.types.Scene, tmp_path: Path
) -> None:
    """Blender 4.2 crashed now and then rendering while that thread ran; it waits out each frame's render."""
    from blender_addon import session
    from blender_addon._protocol import client as protocol_client

    build_animated_scene(scene)
    current = session.get_session()
    current.client = protocol_client.Client("tcp://127.0.0.1:9").start()  # nothing listens there
    quiet_during: list[bool] = []

    def record(*_: Any) -> None:
        # Another caller asking for quiet gets it within one of the thread's wake-ups (20 ms), unless the render
        # holds it already: then it waits until the frame is rendered.
        got_it = threading.Event()

        def ask() -> None:
            with current.client.quiet():
                got_it.set()

        threading.Thread(target=ask, daemon=True).start()
        quiet_during.append(not got_it.wait(0.2))

    bpy.app.handlers.render_pre.append(record)
    try:
        reference.render_camera_frames(scene, [1, 10], WIDTH, HEIGHT, "WORKBENCH", tmp_path)
    finally:
        bpy.app.handlers.render_pre.remove(record)
        current.close()
    assert quiet_during == [True, True]


def test_render_restores_every_user_setting_and_leaks_no_image(scene: bpy.types.Scene, tmp_path: Path) -> None:
    camera = build_animated_scene(scene)
    other = bpy.data.objects.new("Other camera", bpy.data.cameras.new("Other camera"))
    scene.collection.objects.link(other)
    scene.camera = other
    set_unusual_user_settings(scene)
    # A strip in the user's sequencer must not replace the camera view (the scene renders strips when it has any).
    compat.new_effect_strip(scene.sequence_editor_create(), "Overlay", "COLOR", 1, 1, 20).color = (1.0, 0.0, 1.0)
    before = settings_snapshot(scene)

    pixels = reference.render_camera_frames(scene, [1, 10], WIDTH, HEIGHT, "WORKBENCH", tmp_path, camera=camera)

    assert pixels.shape == (2, HEIGHT, WIDTH, 3)
    cube = np.array([srgb_u8(v) for v in CUBE_LINEAR])
    assert np.abs(pixels[0, 8, 12].astype(int) - cube).max() <= 1  # the camera's view, unscaled
    assert settings_snapshot(scene) == before
    assert len(bpy.data.images) == 0


def test_render_uses_one_view_layer_without_motion_blur_and_keeps_the_artists_render_slot(
    scene: bpy.types.Scene, tmp_path: Path
) -> None:
    camera = build_animated_scene(scene)
    scene.render.use_single_layer, scene.render.use_motion_blur = False, True
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x, scene.render.resolution_y = 16, 12
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render()  # the artist's own render, in the Render Result's slot 3
    result = next(image for image in bpy.data.images if image.type == "RENDER_RESULT")
    slots = result.render_slots
    slots.active_index = 3
    slot_names = [slot.name for slot in slots]
    seen: dict[str, object] = {}
    render_still = reference._render_still

    def recording(scene_, frame, path):
        seen.update(single=scene_.render.use_single_layer, blur=scene_.render.use_motion_blur, slot=slots.active.name)
        return render_still(scene_, frame, path)

    reference._render_still = recording
    try:
        reference.render_camera_frames(scene, [1], WIDTH, HEIGHT, "WORKBENCH", tmp_path, camera=camera)
    finally:
        reference._render_still = render_still
    assert seen == {"single": True, "blur": False, "slot": "MotionClone reference"}
    # The artist's slots stay as they were, their slot active again; ours is added once and reused.
    assert slots.active_index == 3 and [slot.name for slot in slots] == [*slot_names, "MotionClone reference"]
    assert (scene.render.use_single_layer, scene.render.use_motion_blur) == (False, True)
    reference._render_still = recording
    try:
        reference.render_camera_frames(
            scene, [1], WIDTH, HEIGHT, "WORKBENCH", tmp_path, camera=camera, all_view_layers=True, motion_blur=True
        )
    finally:
        reference._render_still = render_still
    assert seen == {"single": False, "blur": True, "slot": "MotionClone reference"}  # as the artist asked
    assert len(slots) == len(slot_names) + 1 and slots.active_index == 3
    assert (scene.render.use_single_layer, scene.render.use_motion_blur) == (False, True)


def saved_render(result: Any, path: Path) -> np.ndarray:
    """The picture in the Render Result's active slot, saved to `path` and read back."""
    result.save_render(str(path))
    return decode_png_file(path)


def test_the_artists_render_slot_keeps_its_picture_after_success_error_and_cancel(
    scene: bpy.types.Scene, tmp_path: Path
) -> None:
    camera = build_animated_scene(scene)
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x, scene.render.resolution_y = 16, 12
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render()  # the artist's own render
    result = next(image for image in bpy.data.images if image.type == "RENDER_RESULT")
    result.render_slots.active_index = 2
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render()  # now in slot 2, the slot the artist looks at
    artists = saved_render(result, tmp_path / "before.png")
    render_still = reference._render_still

    def fail_on_the_second_frame(scene_, frame, path):
        if frame == 4:
            raise RuntimeError("render failed")
        return render_still(scene_, frame, path)

    def check(label: str) -> None:
        assert result.render_slots.active_index == 2, label
        assert np.array_equal(saved_render(result, tmp_path / f"{label}.png"), artists), label

    reference.render_camera_frames(scene, [1, 4], WIDTH, HEIGHT, "WORKBENCH", tmp_path / "ok", camera=camera)
    check("success")
    reference._render_still = fail_on_the_second_frame
    try:
        with pytest.raises(RuntimeError, match="render failed"):
            reference.render_camera_frames(scene, [1, 4], WIDTH, HEIGHT, "WORKBENCH", tmp_path / "err", camera=camera)
    finally:
        reference._render_still = render_still
    check("error")
    frames_begun: list[int] = []

    def cancel_before_the_second_frame() -> bool:
        frames_begun.append(1)
        return len(frames_begun) >= 2

    with pytest.raises(reference.RenderCancelled):
        reference.render_camera_frames(
            scene,
            [1, 4],
            WIDTH,
            HEIGHT,
            "WORKBENCH",
            tmp_path / "cancel",
            camera=camera,
            cancel=cancel_before_the_second_frame,
        )
    check("cancel")
    result.render_slots.active = next(slot for slot in result.render_slots if slot.name == reference.REFERENCE_SLOT)
    ours = saved_render(result, tmp_path / "ours.png")
    assert ours.shape[:2] == (HEIGHT, WIDTH)  # the reference renders went to our own slot


def test_stepwise_render_leaves_settings_restored_when_left_midway(scene: bpy.types.Scene, tmp_path: Path) -> None:
    """What the modal Generate does: one frame per step, and Esc leaves the `with` block after any step."""
    camera = build_animated_scene(scene)
    set_unusual_user_settings(scene)
    before = settings_snapshot(scene)
    with reference.CameraRender(scene, [1, 4, 7], WIDTH, HEIGHT, "WORKBENCH", tmp_path, camera=camera) as render:
        render.step()
        assert (render.rendered, render.done) == (1, False)
        assert scene.render.resolution_x == WIDTH  # the reference settings hold between steps
        with pytest.raises(RuntimeError, match="only 1 of 3"):
            render.pixels()
    assert settings_snapshot(scene) == before
    assert len(bpy.data.images) == 0
    with reference.CameraRender(scene, [1, 4, 7], WIDTH, HEIGHT, "WORKBENCH", tmp_path, camera=camera) as render:
        while not render.done:
            render.step()
        assert render.pixels().shape == (3, HEIGHT, WIDTH, 3)
    assert settings_snapshot(scene) == before


def test_cancel_stops_between_frames_and_still_restores_the_settings(scene: bpy.types.Scene, tmp_path: Path) -> None:
    build_animated_scene(scene)
    set_unusual_user_settings(scene)
    before = settings_snapshot(scene)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) >= 2  # let the first frame render, stop before the second

    with pytest.raises(reference.RenderCancelled):
        reference.render_camera_frames(scene, [1, 4, 7, 10], WIDTH, HEIGHT, workdir=tmp_path, cancel=cancel)

    assert [path.name for path in tmp_path.glob("*.png")] == ["frame_0001.png"]
    assert settings_snapshot(scene) == before


def test_keyboard_interrupt_mid_render_still_restores_the_settings(scene: bpy.types.Scene, tmp_path: Path) -> None:
    build_animated_scene(scene)
    set_unusual_user_settings(scene)
    before = settings_snapshot(scene)
    calls = []

    def interrupt() -> bool:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        reference.render_camera_frames(scene, [1, 4, 7], WIDTH, HEIGHT, workdir=tmp_path, cancel=interrupt)

    assert settings_snapshot(scene) == before


def test_render_without_a_temporary_folder_argument_cleans_up(scene: bpy.types.Scene) -> None:
    build_animated_scene(scene)

    pixels = reference.render_camera_frames(scene, [1], WIDTH, HEIGHT)

    assert pixels.shape == (1, HEIGHT, WIDTH, 3)
    assert len(bpy.data.images) == 0


def test_render_without_a_camera_asks_for_one(scene: bpy.types.Scene, tmp_path: Path) -> None:
    build_animated_scene(scene)
    scene.camera = None

    with pytest.raises(ValueError, match="no active camera"):
        reference.render_camera_frames(scene, [1], WIDTH, HEIGHT, workdir=tmp_path)


def test_render_rejects_an_unknown_engine(scene: bpy.types.Scene, tmp_path: Path) -> None:
    build_animated_scene(scene)

    with pytest.raises(ValueError, match="WORKBENCH, EEVEE, CYCLES"):
        reference.render_camera_frames(scene, [1], WIDTH, HEIGHT, "OPENGL", workdir=tmp_path)


@pytest.fixture
def cycles_disabled():
    """The Cycles add-on switched off, as an artist may have it; on again afterwards."""
    import addon_utils

    addon_utils.disable("cycles", default_set=True)
    try:
        yield
    finally:
        addon_utils.enable("cycles", default_set=True)


def test_cycles_with_its_add_on_disabled_says_what_to_do_and_keeps_the_settings(
    scene: bpy.types.Scene, tmp_path: Path, cycles_disabled: None
) -> None:
    build_animated_scene(scene)
    before = settings_snapshot(scene)

    with pytest.raises(RuntimeError) as raised:
        reference.render_camera_frames(scene, [1], WIDTH, HEIGHT, "CYCLES", workdir=tmp_path)

    assert str(raised.value) == (
        "The Cycles engine is not available: enable the Cycles add-on in Preferences > Add-ons, or pick Workbench "
        "or EEVEE as the engine."
    )
    assert settings_snapshot(scene) == before


# ---- reading strips ------------------------------------------------------------------------------------------------
def flat_frames(values: list[int], height: int = 6, width: int = 10) -> list[np.ndarray]:
    frames = []
    for value in values:
        frame = np.full((height, width, 3), value, dtype=np.uint8)
        frame[0, :, 1] = 255 - value  # mark the top row, so a flipped read shows
        frames.append(frame)
    return frames


def add_image_strip(scene: bpy.types.Scene, folder: Path, names: list[str], frame_start: int) -> Any:
    strips = compat.strips(scene.sequence_editor_create())
    strip = strips.new_image(name="ref", filepath=str(folder / names[0]), channel=1, frame_start=frame_start)
    for name in names[1:]:
        strip.elements.append(name)
    return strip


def test_read_image_strip_frames_picks_the_element_shown_at_each_frame(scene: bpy.types.Scene, tmp_path: Path) -> None:
    images = flat_frames([10, 120, 250])
    names = [f"img_{k}.png" for k in range(3)]
    for name, image in zip(names, images, strict=True):
        png.write_png(tmp_path / name, image)
    strip = add_image_strip(scene, tmp_path, names, frame_start=10)

    pixels = reference.read_image_strip_frames(strip, [8, 10, 11, 12, 20])

    expected = np.stack([images[k] for k in (0, 0, 1, 2, 2)])  # clamped before and after the strip
    np.testing.assert_array_equal(pixels, expected)
    assert len(bpy.data.images) == 0


def test_read_image_strip_frames_names_the_file_of_another_size(scene: bpy.types.Scene, tmp_path: Path) -> None:
    png.write_png(tmp_path / "a.png", flat_frames([10])[0])
    png.write_png(tmp_path / "b.png", flat_frames([20], height=8)[0])
    strip = add_image_strip(scene, tmp_path, ["a.png", "b.png"], frame_start=1)

    with pytest.raises(ValueError, match=r"b\.png is 10x8 .* 10x6"):
        reference.read_image_strip_frames(strip, [1, 2])
    assert len(bpy.data.images) == 0


def render_colour_movie(scene: bpy.types.Scene, path: Path, reds: list[float]) -> None:
    """A lossless FFV1 movie whose frame k is a flat colour with red = reds[k] (linear)."""
    world = bpy.data.worlds.new("World")
    scene.world = world
    for frame, red in enumerate(reds, start=1):
        world.color = (red, 0.5 * red, 0.2)
        world.keyframe_insert("color", frame=frame)  # a key on every frame: exact values at whole frames
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    render = scene.render
    render.engine = "BLENDER_WORKBENCH"
    render.resolution_x, render.resolution_y, render.resolution_percentage = 32, 24, 100
    render.dither_intensity = 0.0
    scene.view_settings.view_transform = "Standard"
    scene.frame_start, scene.frame_end = 1, len(reds)
    compat.set_media_type(render.image_settings, "VIDEO")
    render.image_settings.file_format = "FFMPEG"
    render.ffmpeg.format, render.ffmpeg.codec = "MKV", "FFV1"
    render.image_settings.color_mode = "RGB"
    render.filepath = str(path)
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render(animation=True)


def colour_movie_strip(scene: bpy.types.Scene, folder: Path, reds: list[float], frame_start: int) -> Any:
    """A movie strip named "movie" from `frame_start`, of `render_colour_movie`'s movie."""
    movie = folder / "movie.mkv"
    render_colour_movie(scene, movie, reds)
    strips = compat.strips(scene.sequence_editor_create())
    return strips.new_movie(name="movie", filepath=str(movie), channel=1, frame_start=frame_start)


class StripPlayedAtItsOwnRate:
    """A movie strip as a movie of half the scene's frame rate shows when added from the UI: its playback rate follows
    the movie's, so each movie frame spans two scene frames (Python cannot add such a strip itself)."""

    def __init__(self, strip: Any) -> None:
        self._strip = strip
        self.frame_duration = 2 * strip.frame_duration

    def __getattr__(self, name: str) -> Any:
        return getattr(self._strip, name)


def test_a_movie_strip_played_at_its_own_frame_rate_is_read_as_it_shows(scene: bpy.types.Scene, tmp_path: Path) -> None:
    reds = [0.0, 0.1, 0.3, 0.8]
    strip = StripPlayedAtItsOwnRate(colour_movie_strip(scene, tmp_path, reds, frame_start=5))
    pixels = reference.read_movie_strip_frames(strip, list(range(5, 13)))
    expected_red = [srgb_u8(reds[k]) for k in (0, 0, 1, 1, 2, 2, 3, 3)]  # each movie frame for two scene frames
    assert np.abs(pixels[:, :, :, 0].astype(int) - np.array(expected_red)[:, None, None]).max() <= 2


def test_read_movie_strip_frames_returns_the_frame_shown_at_each_scene_frame(
    scene: bpy.types.Scene, tmp_path: Path
) -> None:
    reds = [0.0, 0.1, 0.3, 0.8]
    strip = colour_movie_strip(scene, tmp_path, reds, frame_start=5)
    before = settings_snapshot(scene)

    pixels = reference.read_movie_strip_frames(strip, [3, 5, 6, 7, 8, 30])

    assert pixels.shape == (6, 24, 32, 3) and pixels.dtype == np.uint8
    expected_red = [srgb_u8(reds[k]) for k in (0, 0, 1, 2, 3, 3)]  # clamped before and after the movie
    assert np.abs(pixels[:, :, :, 0].astype(int) - np.array(expected_red)[:, None, None]).max() <= 2
    assert settings_snapshot(scene) == before  # includes: the temporary scene and its images are gone

    # The add-on's Generate takes a movie strip as the reference, as it takes an image strip.
    settings = SimpleNamespace(source="STRIP", reference_strip="movie")
    from_jobs = jobs.reference_frames(scene, settings, [3, 5, 6, 7, 8, 30], 32, 24)
    assert np.array_equal(from_jobs, pixels)
    compat.new_effect_strip(scene.sequence_editor, "colour", "COLOR", 3, 1, 5)
    with pytest.raises(ValueError, match="pick an image or movie strip"):
        jobs.reference_frames(scene, SimpleNamespace(source="STRIP", reference_strip="colour"), [1], 32, 24)


def test_a_movie_strip_read_step_by_step_leaves_nothing_behind_and_keeps_the_artists_render(
    scene: bpy.types.Scene, tmp_path: Path
) -> None:
    """What the modal Generate does with a strip reference: one frame per step, and Esc leaves after any step."""
    reds = [0.0, 0.1, 0.3, 0.8]
    strip = colour_movie_strip(scene, tmp_path, reds, frame_start=1)
    scene.world.animation_data_clear()
    scene.world.color = (0.9, 0.9, 0.9)
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render()  # the artist's last render, shown in the Render Result
    result = next(image for image in bpy.data.images if image.type == "RENDER_RESULT")
    artists = saved_render(result, tmp_path / "artists.png")
    before = settings_snapshot(scene)  # includes the scenes and images there are

    with reference.StripRead(strip, [1, 2, 3, 4], 32, 24) as read:
        read.step()
        assert (read.rendered, read.done) == (1, False)
        with pytest.raises(RuntimeError, match="only 1 of 4"):
            read.pixels()
    assert settings_snapshot(scene) == before
    with reference.StripRead(strip, [1, 2, 2, 4], 32, 24) as read:
        while not read.done:
            read.step()
        pixels = read.pixels()

    expected_red = [srgb_u8(reds[k]) for k in (0, 1, 1, 3)]
    assert np.abs(pixels[:, :, :, 0].astype(int) - np.array(expected_red)[:, None, None]).max() <= 2
    assert settings_snapshot(scene) == before
    assert np.array_equal(saved_render(result, tmp_path / "after.png"), artists)  # still the artist's picture


def test_a_strip_source_is_looked_up_in_the_scene_the_sequencer_shows(scene: bpy.types.Scene, tmp_path: Path) -> None:
    """On 5.x the Video Sequencer can show another scene than the one being edited; the strips the panel lists, and
    the one a job reads, are that scene's. Blender before 5.0 has one scene for both."""
    workspace = bpy.context.workspace
    if not hasattr(workspace, "sequencer_scene"):
        assert compat.sequencer_scene(bpy.context) == bpy.context.scene  # 4.x: the edited scene's own strips
        return
    cut = bpy.data.scenes.new("Edit")
    png.write_png(tmp_path / "a.png", flat_frames([40])[0])
    add_image_strip(cut, tmp_path, ["a.png"], frame_start=1)
    previous = workspace.sequencer_scene
    workspace.sequencer_scene = cut
    try:
        assert compat.source_strip_editor() == cut.sequence_editor != scene.sequence_editor
        pixels = jobs.reference_frames(scene, SimpleNamespace(source="STRIP", reference_strip="ref"), [1], 10, 6)
        assert pixels.shape == (1, 6, 10, 3) and int(pixels[0, 3, 3, 0]) == 40
    finally:
        workspace.sequencer_scene = previous
        bpy.data.scenes.remove(cut)


def test_a_strip_in_another_scene_is_sampled_over_that_scenes_range_and_rate(
    scene: bpy.types.Scene, tmp_path: Path
) -> None:
    """5.x: the strip's timeline is the sequencer scene's: its range (with "scene range" on) and frame rate, not
    those of the scene being edited, whose range may not reach the strip at all."""
    workspace = bpy.context.workspace
    settings = SimpleNamespace(
        source="STRIP", reference_strip="ref", use_scene_range=True, frame_mode="SPREAD", num_frames=4, frame_step=1
    )
    if not hasattr(workspace, "sequencer_scene"):
        assert jobs.timeline_scene(scene, settings) == scene  # 4.x: one scene for both
        return
    scene.frame_start, scene.frame_end = 1, 250
    scene.render.fps, scene.render.fps_base = 24, 1.0
    cut = bpy.data.scenes.new("Edit")
    cut.frame_start, cut.frame_end = 1001, 1004
    cut.render.fps, cut.render.fps_base = 30, 1.0
    names = [f"f{k}.png" for k in range(4)]
    for name, picture in zip(names, flat_frames([20, 80, 140, 200]), strict=True):
        png.write_png(tmp_path / name, picture)
    add_image_strip(cut, tmp_path, names, frame_start=1001)
    previous = workspace.sequencer_scene
    workspace.sequencer_scene = cut
    try:
        frames = jobs.sampled_frames(scene, settings)
        assert frames == [1001, 1002, 1003, 1004] and jobs.job_fps(scene, settings) == 30.0
        pixels = jobs.reference_frames(scene, settings, frames, 10, 6)
        assert [int(picture[3, 3, 0]) for picture in pixels] == [20, 80, 140, 200]
        camera = SimpleNamespace(**{**vars(settings), "source": "CAMERA"})
        assert jobs.sampled_frames(scene, camera) == reference.sample_frames(1, 250, 4)
    finally:
        workspace.sequencer_scene = previous
        bpy.data.scenes.remove(cut)


def test_pictures_far_larger_than_the_job_are_averaged_down_in_whole_blocks() -> None:
    pictures = np.random.default_rng(0).integers(0, 256, (2, 66, 97, 3)).astype(np.uint8)
    small = reference.shrink_to(pictures, 20, 10)  # factor min(97 // 20, 66 // 10) = 4
    assert small.shape == (2, 16, 24, 3) and small.dtype == np.uint8
    block = pictures[1, 4:8, 8:12].reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert np.abs(small[1, 1, 2].astype(np.float64) - block).max() <= 0.5
    assert reference.shrink_to(pictures, 50, 40) is pictures  # under twice the job's size: sent as it is


def test_a_large_image_strip_is_sent_shrunk_but_never_below_the_jobs_size(scene: bpy.types.Scene, tmp_path: Path):
    png.write_png(tmp_path / "big.png", np.full((60, 100, 3), 90, dtype=np.uint8))
    add_image_strip(scene, tmp_path, ["big.png"], frame_start=1)
    settings = SimpleNamespace(source="STRIP", reference_strip="ref")
    pixels = jobs.reference_frames(scene, settings, [1], 32, 18)
    assert pixels.shape == (1, 20, 33, 3) and int(pixels[0, 5, 5, 0]) == 90  # factor 3: 100 // 32, 60 // 18
