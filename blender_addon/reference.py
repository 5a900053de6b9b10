"""The motion reference: which frames to sample, and rendering or reading them as uint8 RGB arrays. No torch.

Everything here runs on Blender's main thread and uses only bpy, numpy and the standard library (Blender's Python
has no PIL). Frames always come back as one ``uint8`` array of shape (N, height, width, 3), top row first, holding
the display-referred values of the PNG files (what the user sees, view transform applied).

Public API:

- `sample_frames`: the scene frames to use, by the backend's own sampling rule.
- `snapped_resolution`: the model resolution for the scene's aspect ratio.
- `RENDER_ENGINES`: the engine choices offered to the user, mapped to Blender identifiers.
- `preserved_render_settings`: a context manager that restores every scene setting the reference render changes.
- `render_camera_frames`: render frames of the scene camera.
- `read_image_strip_frames`, `read_movie_strip_frames`: read the frames an existing sequencer strip shows;
  `StripRead` reads them one at a time, for a modal operator.
- `RenderCancelled`: raised when the caller's cancel callback asks to stop.
"""

import gc
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import compat
from .reference_cache import own_changes, rna_values

SIZE_MULTIPLE = 8  # the backend's VAE works on 8x8 pixel blocks


RENDER_ENGINES: dict[str, str] = {
    "WORKBENCH": "BLENDER_WORKBENCH",
    "EEVEE": compat.eevee_engine(),
    "CYCLES": "CYCLES",
}

# Settings that `render_camera_frames` changes, restored by `preserved_render_settings` in this order.
_RENDER_SETTINGS = (
    "engine",
    "resolution_x",
    "resolution_y",
    "resolution_percentage",
    "pixel_aspect_x",
    "pixel_aspect_y",
    "filepath",
    "use_file_extension",
    "film_transparent",
    "use_border",
    "use_crop_to_border",
    "use_compositing",
    "use_sequencer",
    "use_stamp",
    "use_multiview",
    "use_single_layer",
    "use_motion_blur",
)
# media_type first: on 5.x file_format only accepts the formats of the current media type.
_IMAGE_SETTINGS = ("media_type", "file_format", "color_mode", "color_depth", "compression", "color_management")
_SCENE_SETTINGS = ("frame_start", "frame_end", "frame_step", "camera")
# The output's own colour management (image_settings.color_management "OVERRIDE"): switching to "FOLLOW_SCENE" and
# back copies the scene's view over it, so it is kept too, in this order (a view transform belongs to a display, a
# look to a view transform). Some exist only in newer versions.
_OVERRIDE_SETTINGS = (
    ("display_settings", "display_device"),
    ("view_settings", "view_transform"),
    ("view_settings", "look"),
    ("view_settings", "exposure"),
    ("view_settings", "gamma"),
    ("view_settings", "use_curve_mapping"),
    ("view_settings", "use_white_balance"),
    ("view_settings", "white_balance_temperature"),
    ("view_settings", "white_balance_tint"),
    ("linear_colorspace_settings", "name"),
)


REFERENCE_SLOT = "MotionClone reference"  # the Render Result slot reference renders go to


class RenderCancelled(Exception):
    """The user cancelled the reference render between two frames."""


def sample_frames(frame_start: int, frame_end: int, count: int) -> list[int]:
    """The scene frames to use as the reference, spread evenly over a frame range.

    Uses the backend's rule for sampling a clip, ``np.linspace(0, total - 1, count, dtype=int)``, so a rendered
    reference and a reference video read by the backend pick the same frames.

    Args:
        frame_start (`int`): first scene frame of the range.
        frame_end (`int`): last scene frame of the range (inclusive).
        count (`int`): how many frames the model needs.

    Returns:
        `list[int]`: ``count`` increasing scene frames, the first being ``frame_start``.

    Raises:
        ValueError: ``count`` is below 1, or the range has fewer than ``count`` frames.
    """
    if count < 1:
        raise ValueError(f"`count` must be at least 1, got {count}.")
    total = frame_end - frame_start + 1
    if total < count:
        raise ValueError(
            f"The frame range {frame_start}-{frame_end} has {max(total, 0)} frames but {count} are needed: "
            "extend the frame range or lower the frame count."
        )
    return [frame_start + int(offset) for offset in np.linspace(0, total - 1, count, dtype=int)]


def snapped_resolution(scene: bpy.types.Scene, long_side: int = 512) -> tuple[int, int]:
    """The reference size for the scene's aspect ratio, snapped to the model's grid.

    Args:
        scene (`bpy.types.Scene`): its render resolution and pixel aspect give the aspect ratio.
        long_side (`int`, defaults to 512): length of the longer side in pixels, a multiple of 8.

    Returns:
        `tuple[int, int]`: (width, height), each rounded to the nearest multiple of 8 and at least 8.

    Raises:
        ValueError: ``long_side`` is not a positive multiple of 8.
    """
    check_long_side(long_side)
    render = scene.render
    display_width = render.resolution_x * render.pixel_aspect_x
    display_height = render.resolution_y * render.pixel_aspect_y
    if display_width >= display_height:
        width, height = float(long_side), long_side * display_height / display_width
    else:
        width, height = long_side * display_width / display_height, float(long_side)
    return _snap(width), _snap(height)


def check_long_side(long_side: int) -> None:
    """Raise ValueError, in the panel's words, unless `long_side` (the panel's Size) is a positive multiple of 8."""
    if long_side < SIZE_MULTIPLE or long_side % SIZE_MULTIPLE:
        lower = max(SIZE_MULTIPLE, long_side // SIZE_MULTIPLE * SIZE_MULTIPLE)
        nearest = f"{lower}" if long_side < SIZE_MULTIPLE else f"{lower} or {lower + SIZE_MULTIPLE}"
        raise ValueError(f"Size must be a multiple of {SIZE_MULTIPLE} pixels, got {long_side}: use {nearest}")


def _snap(size: float) -> int:
    # Round half up (not Python's banker's rounding) so equal aspects always give equal sizes.
    return max(SIZE_MULTIPLE, math.floor(size / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE)


@contextmanager
def preserved_render_settings(scene: bpy.types.Scene) -> Iterator[None]:
    """Snapshot the scene settings a reference render changes; restore them on exit, whatever happens.

    Covers the render engine, resolution, percentage, pixel aspect, output path and file-extension flag, film
    transparency, border, compositing, sequencer, stamp and multiview switches, the output image settings (media
    type, file format, colour mode, colour depth, compression, colour management), the FFmpeg output settings, the
    current frame and subframe, the frame range and step, and the scene camera. The restore runs in ``finally``, so
    it also happens on exceptions and KeyboardInterrupt.

    Args:
        scene (`bpy.types.Scene`): the scene whose settings are kept.

    Raises:
        RuntimeError: on exit, if a setting could not be put back (the others are still restored).
    """
    render = scene.render
    image_settings = render.image_settings
    saved_render = {name: getattr(render, name) for name in _RENDER_SETTINGS}
    # media_type and color_management exist only in some versions (media_type is 5.x).
    saved_image = {name: getattr(image_settings, name) for name in _IMAGE_SETTINGS if hasattr(image_settings, name)}
    override_groups = {group: getattr(image_settings, group, None) for group, _ in _OVERRIDE_SETTINGS}
    saved_override = {
        (group, name): value
        for group, name in _OVERRIDE_SETTINGS
        if hasattr(override_groups[group], name)
        and (value := getattr(override_groups[group], name)) != ""  # "": a colour space never set
    }
    saved_scene = {name: getattr(scene, name) for name in _SCENE_SETTINGS}
    saved_frame = (scene.frame_current, scene.frame_subframe)
    saved_ffmpeg = dict(rna_values(render.ffmpeg, depth=0))  # plain values only, in RNA order (format first)
    try:
        yield
    finally:
        failures = _restore(render, saved_render) + _restore(image_settings, saved_image)
        # After file_format: setting it back to FFMPEG (4.x) resets a video output without audio to the H.264
        # preset (container, quality, speed, keyframe interval), so the user's own are put back over it.
        failures += _restore(render.ffmpeg, saved_ffmpeg)
        for (group, name), value in saved_override.items():
            failures += _restore(getattr(image_settings, group), {name: value})
        failures += _restore(scene, saved_scene)
        # frame_set rather than frame_current: it also re-evaluates the scene, so objects are posed as before.
        scene.frame_set(saved_frame[0], subframe=saved_frame[1])
        if failures:
            raise RuntimeError(f"Could not restore render settings of scene '{scene.name}': {'; '.join(failures)}")


def _restore(owner: Any, saved: dict[str, Any]) -> list[str]:
    # Keep going after a failure so one bad value doesn't leave the rest of the user's settings changed.
    failures = []
    for name, value in saved.items():
        try:
            if getattr(owner, name) != value:
                setattr(owner, name, value)
        except (AttributeError, TypeError, ValueError) as error:
            failures.append(f"{name}={value!r} ({error})")
    return failures


def render_camera_frames(
    scene: bpy.types.Scene,
    frames: list[int],
    width: int,
    height: int,
    engine: str = "WORKBENCH",
    workdir: str | Path | None = None,
    camera: bpy.types.Object | None = None,
    cancel: Callable[[], bool] | None = None,
    all_view_layers: bool = False,
    motion_blur: bool = False,
) -> np.ndarray:
    """Render scene frames from a camera and return them as uint8 RGB.

    Each frame is rendered with ``bpy.ops.render.render(write_still=True)`` to an 8-bit RGB PNG of exactly
    ``width`` x ``height`` (compositor, sequencer, border and stamp switched off) and read back. The scene's
    settings are restored afterwards (see `preserved_render_settings`), also on errors and cancellation, and no
    image datablock is left behind.

    Args:
        scene (`bpy.types.Scene`): the scene to render; it need not be the active one.
        frames (`list[int]`): scene frames to render, in output order.
        width (`int`): output width in pixels.
        height (`int`): output height in pixels.
        engine (`str`, defaults to ``"WORKBENCH"``): a key of `RENDER_ENGINES`.
        workdir (`str | Path | None`, defaults to None): folder for the PNGs ``frame_0001.png`` ... (created if
            missing; files of an earlier call are overwritten). None renders into a temporary folder removed
            afterwards.
        camera (`bpy.types.Object | None`, defaults to None): the camera to render from; None uses the scene camera.
        cancel (`Callable[[], bool] | None`, defaults to None): polled before each frame; True stops the render.
        all_view_layers (`bool`, defaults to False): render every view layer; by default only the active one
            (the others are usually passes for compositing, which the reference skips).
        motion_blur (`bool`, defaults to False): keep motion blur; by default it is off, since a blurred object
            gives the backend's motion extraction less to hold on to.

    Returns:
        `np.ndarray`: uint8 array of shape (len(frames), height, width, 3), top row first.

    Raises:
        ValueError: no frames, a non-positive size, an unknown engine, or no camera.
        RenderCancelled: ``cancel()`` returned True.
        RuntimeError: Blender did not render or write a frame, or does not offer the engine (Cycles with its add-on
            disabled).
    """
    with CameraRender(scene, frames, width, height, engine, workdir, camera, all_view_layers, motion_blur) as render:
        return render.render_all(cancel)


class FrameByFrame:
    """What `CameraRender` and `StripRead` share: `frames`, a `step()` per frame, `rendered` and `done` to follow
    them, and `pixels()` at the end."""

    frames: list[int]

    @property
    def rendered(self) -> int:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.rendered == len(self.frames)

    def step(self) -> None:
        raise NotImplementedError

    def pixels(self) -> np.ndarray:
        raise NotImplementedError

    def render_all(self, cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """Take the frames still to do, then return `pixels()`; `cancel` is polled before each frame.

        Raises:
            RenderCancelled: ``cancel()`` returned True.
        """
        while not self.done:
            if cancel is not None and cancel():
                raise RenderCancelled(f"Reference cancelled after {self.rendered} of {len(self.frames)} frames.")
            self.step()
        return self.pixels()


class CameraRender(FrameByFrame):
    """A reference render one frame at a time, for a modal operator that keeps the UI alive between frames.

    Entering applies the reference settings (`render_camera_frames` lists them); each `step()` renders the next
    frame; `pixels()` reads them once all are done; leaving restores every setting, whether the render finished,
    failed or was cancelled. Arguments as for `render_camera_frames`.
    """

    def __init__(
        self,
        scene: bpy.types.Scene,
        frames: list[int],
        width: int,
        height: int,
        engine: str = "WORKBENCH",
        workdir: str | Path | None = None,
        camera: bpy.types.Object | None = None,
        all_view_layers: bool = False,
        motion_blur: bool = False,
    ) -> None:
        if not frames:
            raise ValueError("`frames` is empty: pass at least one scene frame to render.")
        if width < 1 or height < 1:
            raise ValueError(f"`width` and `height` must be positive, got {width}x{height}.")
        if engine not in RENDER_ENGINES:
            raise ValueError(f"`engine` must be one of {', '.join(RENDER_ENGINES)}, got {engine!r}.")
        self.camera = camera or scene.camera
        if self.camera is None:
            raise ValueError(
                f"Scene '{scene.name}' has no active camera: add a camera and make it active "
                "(Scene Properties > Camera) to render the reference."
            )
        self.scene, self.frames, self.width, self.height, self.engine = scene, list(frames), width, height, engine
        self.workdir, self.all_view_layers, self.motion_blur = workdir, all_view_layers, motion_blur
        self.paths: list[Path] = []
        self._stack = ExitStack()
        self._folder: Path | None = None

    def __enter__(self) -> "CameraRender":
        stack = self._stack.__enter__()
        try:
            workdir = self.workdir
            if workdir is None:
                workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="motionclone-reference-"))
            self._folder = Path(workdir)
            self._folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_no_new_render_result())
            stack.enter_context(_own_render_slot())
            with own_changes():  # not edits of the artist's scene (see reference_cache)
                stack.enter_context(preserved_render_settings(self.scene))
                _apply_reference_settings(self.scene, self.camera, self.width, self.height, self.engine)
                self.scene.render.use_single_layer = not self.all_view_layers
                self.scene.render.use_motion_blur = self.motion_blur
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        with own_changes():
            return bool(self._stack.__exit__(*exc_info))

    @property
    def rendered(self) -> int:
        return len(self.paths)

    def step(self) -> None:
        """Render the next frame (Blender blocks while it renders)."""
        if self._folder is None:
            raise RuntimeError("CameraRender.step() outside its `with` block")
        index = len(self.paths) + 1
        with own_changes():
            path = _render_still(self.scene, self.frames[index - 1], self._folder / f"frame_{index:04d}.png")
        self.paths.append(path)

    def pixels(self) -> np.ndarray:
        """The rendered frames as uint8 (frames, height, width, 3), once `done`."""
        if not self.done:
            raise RuntimeError(f"only {self.rendered} of {len(self.frames)} reference frames are rendered")
        pixels = np.stack([load_image_rgb(path) for path in self.paths])
        if pixels.shape[1:3] != (self.height, self.width):
            raise RuntimeError(
                f"Blender rendered {pixels.shape[2]}x{pixels.shape[1]} frames instead of {self.width}x{self.height}."
            )
        return pixels


def _apply_reference_settings(
    scene: bpy.types.Scene, camera: bpy.types.Object, width: int, height: int, engine: str
) -> None:
    render = scene.render
    _set_engine(render, engine)
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    # Square pixels: the aspect ratio is already in width/height, and the backend sees square pixels.
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.use_file_extension = True
    render.film_transparent = False
    render.use_border = False  # a render border would crop the frame
    # The reference is the camera view: skip the compositor, strips in the sequencer (our own results
    # included) and burnt-in metadata, and write one view only.
    render.use_compositing = False
    render.use_sequencer = False
    render.use_stamp = False
    render.use_multiview = False
    image_settings = render.image_settings
    compat.set_media_type(image_settings, "IMAGE")
    image_settings.file_format = "PNG"
    image_settings.color_mode = "RGB"
    image_settings.color_depth = "8"
    image_settings.compression = 15  # fast; the files are read back at once
    if hasattr(image_settings, "color_management"):
        image_settings.color_management = "FOLLOW_SCENE"  # the look the user sees in the viewport
    scene.camera = camera


def _set_engine(render: bpy.types.RenderSettings, engine: str) -> None:
    identifier = RENDER_ENGINES[engine]
    try:
        render.engine = identifier
    except TypeError:
        if engine != "EEVEE":
            raise RuntimeError(_engine_missing(engine)) from None
        # The identifier guessed at import was refused: EEVEE has the other of its two names here.
        try:
            render.engine = "BLENDER_EEVEE" if identifier == "BLENDER_EEVEE_NEXT" else "BLENDER_EEVEE_NEXT"
        except TypeError:
            raise RuntimeError(_engine_missing(engine)) from None


def _engine_missing(engine: str) -> str:
    """What to do when Blender refuses an engine (Cycles is an add-on, which may be disabled)."""
    if engine == "CYCLES":
        return (
            "The Cycles engine is not available: enable the Cycles add-on in Preferences > Add-ons, or pick Workbench "
            "or EEVEE as the engine."
        )
    name = "Workbench" if engine == "WORKBENCH" else engine
    return f"This Blender does not offer the {name} engine: pick another engine."


def _render_still(scene: bpy.types.Scene, frame: int, path: Path) -> Path:
    scene.frame_current = frame  # the render builds its own depsgraph for this frame
    scene.render.filepath = str(path)
    path.unlink(missing_ok=True)  # so a stale file from an earlier call can't pass as this frame
    # Blender lets other Python threads run while it evaluates the scene for the render. Python frees garbage cycles
    # in whichever thread happens to allocate, and freeing a Blender object there, in the middle of the render, can
    # crash Blender. So the cycles are freed here first, and no collection may start until the render is done (the
    # protocol client's thread is also held quiet below; other threads, such as a test's, may still run).
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        # Blender 4.2 has crashed in and right after this render while the protocol client's thread was alive (2 of 33
        # runs of the add-on tests' main file; none of 60 with this): the thread waits, running nothing, meanwhile.
        with _quiet_client(), bpy.context.temp_override(scene=scene):
            result = bpy.ops.render.render(write_still=True)
    finally:
        if collecting:
            gc.enable()
    if "FINISHED" not in result or not path.is_file():
        raise RuntimeError(f"Blender did not render frame {frame} of scene '{scene.name}' to {path}.")
    return path


def _quiet_client() -> AbstractContextManager:
    from .session import get_session  # here, not at the top: the session module builds on this one's callers

    return get_session().quiet_client()


@contextmanager
def _own_render_slot() -> Iterator[None]:
    # Rendering writes into the Render Result's active slot, which holds the artist's last render: render into a
    # slot of our own instead (made once and reused: the Python API cannot remove slots), then make the artist's
    # slot active again.
    result = next((image for image in bpy.data.images if image.type == "RENDER_RESULT"), None)
    if result is None:
        yield
        return
    slots = result.render_slots
    active = slots.active_index
    slot = next((slot for slot in slots if slot.name == REFERENCE_SLOT), None) or slots.new(name=REFERENCE_SLOT)
    slots.active = slot
    try:
        yield
    finally:
        slots.active_index = active


@contextmanager
def _no_new_render_result() -> Iterator[None]:
    # Rendering creates a "Render Result" image if there was none; remove it again so nothing new appears
    # in bpy.data.images (an existing one is the user's and stays).
    existing = {image.as_pointer() for image in bpy.data.images if image.type == "RENDER_RESULT"}
    try:
        yield
    finally:
        for image in [image for image in bpy.data.images if image.type == "RENDER_RESULT"]:
            if image.as_pointer() not in existing:
                bpy.data.images.remove(image)


def shrink_to(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pictures (N, H, W, 3) at least twice a job's size made smaller by averaging whole blocks of pixels, to no
    less than that size; others as they are.

    The backend resizes every reference and condition to the job's size itself; a strip or image file sent at its own
    size (a 4K movie) could pass its 2048-pixel and 512 MiB limits and would only cost transfer. The largest whole
    factor that keeps both sides at least the job's is used; the right and bottom edges lose less than one block.
    """
    factor = min(pixels.shape[2] // width, pixels.shape[1] // height)
    if factor < 2:
        return pixels
    rows, columns = pixels.shape[1] // factor, pixels.shape[2] // factor
    out = np.empty((pixels.shape[0], rows, columns, 3), dtype=np.uint8)
    for index, picture in enumerate(pixels):  # one picture at a time: a float copy of 60 4K frames would not fit
        blocks = picture[: rows * factor, : columns * factor].reshape(rows, factor, columns, factor, 3)
        out[index] = np.rint(blocks.mean(axis=(1, 3), dtype=np.float32)).astype(np.uint8)
    return out


def load_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file into a uint8 (height, width, 3) array, top row first, with the file's values.

    The image is loaded as a new datablock and removed again before returning. It is marked Non-Color with
    channel-packed alpha so Blender converts nothing: the values are those stored in the file (display-referred
    for renders). Alpha is dropped; float images are clipped to [0, 1].

    Args:
        path (`str | Path`): the image file.

    Returns:
        `np.ndarray`: uint8 array of shape (height, width, 3).

    Raises:
        ValueError: Blender cannot read the file or it has no pixels.
    """
    with own_changes():  # loading and removing a datablock is no edit of the artist's scene
        return _read_image_rgb(path)


def _read_image_rgb(path: str | Path) -> np.ndarray:
    try:
        image = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as error:
        raise ValueError(f"Cannot read image {path}: {error}") from error
    try:
        # Set before the first pixel access: that is when Blender decodes (and would convert) the file.
        image.colorspace_settings.name = "Non-Color"
        image.alpha_mode = "CHANNEL_PACKED"
        width, height = image.size
        channels = image.channels
        if width == 0 or height == 0:
            raise ValueError(f"Cannot read image {path}: Blender found no pixels in it.")
        values = np.empty(width * height * channels, dtype=np.float32)
        image.pixels.foreach_get(values)
    finally:
        bpy.data.images.remove(image)
    # Blender stores the bottom row first.
    values = values.reshape(height, width, channels)[::-1]
    rgb = values[..., :3] if channels >= 3 else np.repeat(values[..., :1], 3, axis=2)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def read_image_strip_frames(strip: Any, frames: list[int]) -> np.ndarray:
    """Read the frames an IMAGE strip shows at the given scene frames.

    Scene frame ``f`` shows element ``f - strip.frame_start`` of the strip, clamped to its elements (so frames
    before or after the strip hold its first or last image). Strip effects (transform, crop, modifiers, speed)
    are not applied: the files are read as they are.

    Args:
        strip (`bpy.types.ImageStrip`): the strip (``bpy.types.ImageSequence`` before Blender 4.4).
        frames (`list[int]`): scene frames, in output order.

    Returns:
        `np.ndarray`: uint8 array of shape (len(frames), height, width, 3).

    Raises:
        ValueError: not an image strip, no frames, a file Blender cannot read, or files of different sizes.
    """
    if strip.type != "IMAGE":
        raise ValueError(f"Strip '{strip.name}' is a {strip.type} strip; pick an image-sequence strip.")
    with StripRead(strip, frames) as read:
        return read.render_all()


def read_movie_strip_frames(strip: Any, frames: list[int]) -> np.ndarray:
    """Read the frames a MOVIE strip shows at the given scene frames, at the movie's own size.

    Scene frame ``f`` shows movie frame ``f - strip.frame_start`` (scaled by the movie's frame count over the scene
    frames the strip spans, when its playback rate follows the movie's frame rate), clamped to the movie. Blender's
    Python has no per-frame movie decoder (``Image.pixels`` of a loaded movie always returns the same frame in
    background mode), so the movie is played by Blender's sequencer in a temporary scene with the same frame rate,
    rendered to PNG and read back; the temporary scene is removed afterwards. The values are display-referred (view
    transform Standard), which for an 8-bit sRGB movie are the decoded values. Strip effects are not applied.

    The Render Result's slot keeps showing the artist's last render: it shows the render of the scene being looked
    at, and the temporary scene renders into its own. (Switching to another slot first, as a camera reference does,
    would make Blender move the temporary scene's render into the artist's slot.)

    Args:
        strip (`bpy.types.MovieStrip`): the strip (``bpy.types.MovieSequence`` before Blender 4.4).
        frames (`list[int]`): scene frames of the strip's scene, in output order.

    Returns:
        `np.ndarray`: uint8 array of shape (len(frames), height, width, 3).

    Raises:
        ValueError: not a movie strip, no frames, or a movie Blender cannot read.
        RuntimeError: Blender did not render a frame.
    """
    if strip.type != "MOVIE":
        raise ValueError(f"Strip '{strip.name}' is a {strip.type} strip; pick a movie strip.")
    with StripRead(strip, frames) as read:
        return read.render_all()


class StripRead(FrameByFrame):
    """The frames an image or movie strip shows, read one at a time like `CameraRender` (the same `step`, `done`,
    `rendered`, `render_all` and `pixels`), so that a modal operator keeps the UI alive and Esc stops it.

    A step reads one output frame: an image strip's file, or a movie frame played by Blender's sequencer in a
    temporary scene (see `read_movie_strip_frames`); a frame shown before is not read again. Entering makes the
    temporary scene, leaving removes it. With `width` and `height`, `pixels()` averages pictures far larger than that
    size down (`shrink_to`).

    What the read needs of the strip is copied when it is made: between steps the artist may edit or delete the strip
    (Blender does not always tell a Python reference that its strip is gone), and the temporary scene is looked up by
    name at each step.
    """

    def __init__(self, strip: Any, frames: list[int], width: int | None = None, height: int | None = None) -> None:
        if strip.type not in ("IMAGE", "MOVIE"):
            raise ValueError(f"Strip '{strip.name}' is a {strip.type.lower()} strip: pick an image or movie strip.")
        if not frames:
            raise ValueError("`frames` is empty: pass at least one scene frame to read.")
        self.frames, self.width, self.height = list(frames), width, height
        self.name, self.kind, self.frame_start = strip.name, strip.type, strip.frame_start
        self._image_paths: list[str] = []
        if self.kind == "IMAGE":
            self._image_paths = [bpy.path.abspath(strip.directory + element.filename) for element in strip.elements]
            if not self._image_paths:
                raise ValueError(f"Strip '{strip.name}' has no images.")
        else:
            render = strip.id_data.render  # the strip's scene: its frame rate maps scene frames to movie frames
            self._movie = MovieSource(
                bpy.path.abspath(strip.filepath), strip.colorspace_settings.name, render.fps, render.fps_base
            )
            # Scene frames the whole movie spans in the artist's strip: the movie's own frame count, unless its
            # playback rate follows the movie's frame rate (a movie added from the UI to a scene of another rate).
            self._strip_span = max(int(strip.frame_duration), 1)
        self._read: list[np.ndarray] = []
        self._by_index: dict[int, np.ndarray] = {}  # a held frame is read once
        self._stack = ExitStack()
        self._player_scene = ""  # the temporary scene's name, once entered
        self._movie_frames = 0
        self._folder: Path | None = None

    def __enter__(self) -> "StripRead":
        if self.kind == "MOVIE":
            stack = self._stack.__enter__()
            try:
                self._folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="motionclone-movie-")))
                stack.enter_context(_no_new_render_result())
                player = stack.enter_context(_movie_player(self._movie))
                self._player_scene, self._movie_frames = player.id_data.name, player.frame_final_duration
            except BaseException:
                self.__exit__(*sys.exc_info())
                raise
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        with own_changes():  # removing the temporary scene and render result is no edit of the artist's
            return bool(self._stack.__exit__(*exc_info))

    @property
    def rendered(self) -> int:
        return len(self._read)

    def step(self) -> None:
        """Read the next frame (Blender blocks while it decodes or plays it)."""
        offset = self.frames[len(self._read)] - self.frame_start
        if self.kind == "IMAGE":
            index = min(max(math.floor(offset), 0), len(self._image_paths) - 1)
        else:
            if not self._player_scene:
                raise RuntimeError("StripRead.step() outside its `with` block")
            # The player shows one movie frame per scene frame; the artist's strip may spread them otherwise.
            index = math.floor(offset * self._movie_frames / self._strip_span)
            index = min(max(index, 0), self._movie_frames - 1)
        if index not in self._by_index:
            self._by_index[index] = self._read_index(index)
        self._read.append(self._by_index[index])

    def _read_index(self, index: int) -> np.ndarray:
        if self.kind == "IMAGE":
            path = self._image_paths[index]
            rgb = load_image_rgb(path)
            if self._read and rgb.shape != self._read[0].shape:
                first = self._read[0].shape
                raise ValueError(
                    f"Image {path} is {rgb.shape[1]}x{rgb.shape[0]} but the first image read is "
                    f"{first[1]}x{first[0]}: all images of strip '{self.name}' must have one size."
                )
            return rgb
        assert self._folder is not None
        scene = bpy.data.scenes.get(self._player_scene)
        if scene is None:
            raise ValueError(f"The scene '{self._player_scene}' that plays the movie was deleted: Generate again.")
        with own_changes():  # playing the movie in the add-on's own scene is no edit of the artist's
            path = _render_still(scene, 1 + index, self._folder / f"frame_{index + 1:06d}.png")
        return load_image_rgb(path)

    def pixels(self) -> np.ndarray:
        """The frames as uint8 (frames, height, width, 3), once `done`."""
        if not self.done:
            raise RuntimeError(f"only {self.rendered} of {len(self.frames)} reference frames are read")
        pixels = np.stack(self._read)
        if self.width is None or self.height is None:
            return pixels
        return shrink_to(pixels, self.width, self.height)


@dataclass(frozen=True)
class MovieSource:
    """A movie strip's file and colour space, and its scene's frame rate: what playing it again needs."""

    path: str
    colorspace: str
    fps: int
    fps_base: float


@contextmanager
def _movie_player(movie: MovieSource) -> Iterator[Any]:
    """A temporary scene whose sequencer plays the movie from frame 1, at the strip's scene's frame rate and the
    movie's own size; yields its movie strip and removes the scene afterwards."""
    with own_changes():
        width, height = _movie_size(movie.path)
        scene = bpy.data.scenes.new("MotionClone movie reader")
        name = scene.name
    try:
        with own_changes():
            # Same frame rate as the user's scene, so the strip has the same length and frame mapping there.
            _prepare_player_scene(scene, movie.fps, movie.fps_base, width, height)
            player = compat.strips(scene.sequence_editor_create()).new_movie(
                name="reference", filepath=movie.path, channel=1, frame_start=1
            )
            player.colorspace_settings.name = movie.colorspace
            # new_movie may have switched the scene to the movie's frame rate.
            scene.render.fps, scene.render.fps_base = movie.fps, movie.fps_base
        yield player
    finally:
        with own_changes():
            left = bpy.data.scenes.get(name)  # by name: the artist may have deleted it meanwhile
            if left is not None:
                bpy.data.scenes.remove(left)


def _movie_size(path: str) -> tuple[int, int]:
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as error:
        raise ValueError(f"Cannot read movie {path}: {error}") from error
    try:
        width, height = image.size
    finally:
        bpy.data.images.remove(image)
    if width == 0 or height == 0:
        raise ValueError(f"Cannot read movie {path}: Blender found no frames in it.")
    return width, height


def _prepare_player_scene(scene: bpy.types.Scene, fps: int, fps_base: float, width: int, height: int) -> None:
    render = scene.render
    render.fps, render.fps_base = fps, fps_base
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.dither_intensity = 0.0  # dither noise would change the decoded values
    render.use_sequencer = True
    render.use_compositing = False
    render.use_stamp = False
    view = scene.view_settings
    view.view_transform, view.look, view.exposure, view.gamma = "Standard", "None", 0.0, 1.0
    scene.display_settings.display_device = "sRGB"
    image_settings = render.image_settings
    compat.set_media_type(image_settings, "IMAGE")
    image_settings.file_format = "PNG"
    image_settings.color_mode = "RGB"
    image_settings.color_depth = "8"
    image_settings.compression = 15
