"""A line-art render of the scene for sketch-to-video: black Freestyle lines on white. No torch.

SparseCtrl's scribble model was trained on line drawings: dark strokes on a white page. Workbench draws every surface
and the background in flat white and Freestyle draws the silhouettes, borders and creases on top. `line_art_look`
switches all of that on and puts back every setting it touched (Freestyle on the scene and each view layer, their line
sets, Workbench shading, the world, the view transform and the EEVEE samples the strokes are drawn with), whatever
happens.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import bpy
import numpy as np

from .reference import CameraRender
from .reference_cache import own_changes

LINE_SET = "MotionClone line art"
_RENDER = ("use_freestyle", "line_thickness_mode", "line_thickness")
_SHADING = (
    "light",
    "color_type",
    "single_color",
    "show_shadows",
    "show_cavity",
    "show_specular_highlight",
    "show_object_outline",
    "show_xray",
)
_VIEW = ("view_transform", "look", "exposure", "gamma")  # view_transform first: the looks depend on it
# Blender draws the Freestyle strokes with EEVEE at the scene's EEVEE render samples (64 by default). 8 keep the
# strokes' anti-aliasing within 0.2/255 of 64 on average (20/255 at most), and a render in software OpenGL (a
# machine without a GPU) takes 5 s instead of 30.
STROKE_SAMPLES = 8
_EEVEE = ("taa_render_samples",)


def line_thickness(width: int, height: int) -> float:
    """Stroke width in pixels: 1/160 of the longer side (3.2 px at 512), towards the bold strokes of the scribbles
    the scribble model learned from; at least 1 px."""
    return max(1.0, max(width, height) / 160)


def _plain(value: Any) -> Any:
    # Colour properties come back as live arrays that change with the property: keep a copy of their values.
    return value if isinstance(value, str | int | float | bool) or value is None else tuple(value)


@contextmanager
def _kept(owner: Any, names: tuple[str, ...]) -> Iterator[None]:
    saved = [(name, _plain(getattr(owner, name))) for name in names]
    try:
        yield
    finally:
        for name, value in saved:
            if _plain(getattr(owner, name)) != value:
                setattr(owner, name, value)


@contextmanager
def _own_line_sets(scene: bpy.types.Scene) -> Iterator[None]:
    # The artist's line sets stay as they are, only out of this render; ours is added, then removed with its style.
    style = bpy.data.linestyles.new(LINE_SET)
    style.color = (0.0, 0.0, 0.0)
    added: list[tuple[Any, Any, int]] = []
    with ExitStack() as stack:
        # Registered first, so it runs last: ours go also when setting up a later view layer fails.
        stack.callback(_remove_line_sets, added, style)
        for layer in scene.view_layers:
            settings = layer.freestyle_settings
            stack.enter_context(_kept(layer, ("use_freestyle",)))
            # Strokes drawn as a pass of their own would leave the picture white.
            stack.enter_context(_kept(settings, ("mode", "as_render_pass")))
            for line_set in settings.linesets:
                stack.enter_context(_kept(line_set, ("show_render",)))
                line_set.show_render = False
            layer.use_freestyle = True
            settings.mode = "EDITOR"
            settings.as_render_pass = False
            active_index = settings.linesets.active_index  # adding and removing ours moves it
            line_set = settings.linesets.new(LINE_SET)
            made_with_it = line_set.linestyle  # new() makes a line style of its own: ours replaces it
            line_set.linestyle = style
            if made_with_it is not None and made_with_it != style and made_with_it.users == 0:
                bpy.data.linestyles.remove(made_with_it)
            added.append((settings, line_set, active_index))
        yield


def _remove_line_sets(added: list[tuple[Any, Any, int]], style: Any) -> None:
    for settings, line_set, active_index in added:
        settings.linesets.remove(line_set)
        settings.linesets.active_index = active_index
    bpy.data.linestyles.remove(style)


@contextmanager
def _white_world(scene: bpy.types.Scene) -> Iterator[None]:
    # Workbench renders the background in the world's colour: lend the scene a white world of its own.
    world = bpy.data.worlds.new(LINE_SET)
    world.color = (1.0, 1.0, 1.0)
    previous = scene.world
    scene.world = world
    try:
        yield
    finally:
        scene.world = previous
        bpy.data.worlds.remove(world)


@contextmanager
def line_art_look(scene: bpy.types.Scene, thickness: float) -> Iterator[None]:
    """Make a Workbench render of `scene` black lines of `thickness` pixels on white; restore everything on exit."""
    render, shading, view = scene.render, scene.display.shading, scene.view_settings
    with ExitStack() as stack:
        for owner, names in ((render, _RENDER), (shading, _SHADING), (view, _VIEW), (scene.eevee, _EEVEE)):
            stack.enter_context(_kept(owner, names))
        stack.enter_context(_white_world(scene))
        stack.enter_context(_own_line_sets(scene))
        render.use_freestyle = True
        render.line_thickness_mode = "ABSOLUTE"
        render.line_thickness = thickness
        shading.light = "FLAT"
        shading.color_type = "SINGLE"
        shading.single_color = (1.0, 1.0, 1.0)
        shading.show_shadows = shading.show_cavity = shading.show_specular_highlight = False
        shading.show_object_outline = shading.show_xray = False
        view.view_transform = "Standard"  # white stays white: no filmic roll-off
        view.look, view.exposure, view.gamma = "None", 0.0, 1.0
        scene.eevee.taa_render_samples = min(scene.eevee.taa_render_samples, STROKE_SAMPLES)
        yield


def render_line_art(scene: bpy.types.Scene, frame: int, width: int, height: int) -> np.ndarray:
    """Render scene frame `frame` from the scene camera as line art.

    Returns:
        `np.ndarray`: uint8 (1, height, width, 3): dark lines on white.

    Raises:
        ValueError: no camera or a bad size (see `CameraRender`).
        RuntimeError: Blender did not render the frame.
    """
    look = line_art_look(scene, line_thickness(width, height))
    with own_changes(), CameraRender(scene, [frame], width, height, "WORKBENCH") as render, look:
        return render.render_all()
