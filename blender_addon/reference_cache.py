"""The last camera reference, reused while nothing in the scene changed. No torch.

Trying prompts and seeds on one blockout should not render the same frames again each time. Two records together
say whether anything a render sees has changed:

- Edits of the scene's data: Blender reports every change of an object, mesh, material, world, action ... to the
  dependency graph (`depsgraph_update_post`). The changes a reference render makes itself are flushed and ignored
  while it runs (`own_changes`); undo, redo and loading a file count as edits too.
- The scene's own settings: a change of the scene itself is reported only as "the scene changed", also when the
  artist edits this add-on's prompt. So scene updates are not counted; instead the key holds the values of the
  settings a render reads (render, shading, engine and colour-management settings, the view layers and which
  collections they render, camera markers, gravity and the rigid body world), compared when Generate is pressed.

An edit that is reported but alters nothing costs at most one render too many, never a stale reference.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np


@dataclass
class _State:
    edits: int = 0
    ignoring: int = 0
    key: tuple | None = None
    pixels: np.ndarray | None = None


_state = _State()


# Settings a render does not read, or that Blender cannot show as a value (reading them warns on the console):
# output formats (a reference render sets its own), baking, and input colour spaces.
_NOT_READ = {"image_settings", "bake", "ffmpeg", "linear_colorspace_settings", "wireframe_color_type"}

# Images the add-on itself loads and reloads (previews, the condition thumbnail): not part of any render.
OWN_IMAGES = {"MotionClone Preview", "MotionClone Condition"}


@bpy.app.handlers.persistent
def _on_depsgraph_update(_scene: Any, depsgraph: bpy.types.Depsgraph) -> None:
    if _state.ignoring:
        return
    for update in depsgraph.updates:
        changed = update.id
        if not isinstance(changed, bpy.types.Scene) and changed.name not in OWN_IMAGES:
            _state.edits += 1
            return


@bpy.app.handlers.persistent
def _on_anything_else(*_args: Any) -> None:
    # Undo, redo and loading a file can change anything without a depsgraph update of their own.
    _state.edits += 1


def _flush() -> None:
    # Evaluate pending changes now, so that their update reaches the handler before the ignore flag changes. Every
    # scene: adding or removing a datablock (an image read and removed again) updates the relations of all of them.
    # Only view layers evaluated already: one never shown has no updates to send, and evaluating it would build it
    # (seconds and memory for each layer of a file with many shots).
    for scene in bpy.data.scenes:
        for layer in scene.view_layers:
            if layer.depsgraph is not None:
                layer.update()


@contextmanager
def own_changes() -> Iterator[None]:
    """Changes made inside (a reference render's settings and frames, an image read) are not edits of a scene."""
    _flush()  # the artist's pending edits count
    _state.ignoring += 1
    try:
        yield
    finally:
        try:
            _flush()
        finally:
            _state.ignoring -= 1


def render_key(scene: bpy.types.Scene, settings: Any, frames: list[int], width: int, height: int) -> tuple:
    """Everything a camera reference depends on; its last item is the count of the artist's edits so far."""
    _flush()
    options = (settings.render_engine, settings.render_all_view_layers, settings.render_motion_blur)
    return (scene.name, tuple(frames), width, height, options, scene_settings(scene), _state.edits)


def scene_settings(scene: bpy.types.Scene) -> tuple:
    """The values of the scene settings a render reads (changes of which Blender reports only as a scene update)."""
    groups = [scene.render, scene.display, scene.eevee, scene.view_settings, scene.display_settings]
    if hasattr(scene, "cycles"):
        groups.append(scene.cycles)
    layers = tuple((layer.name, rna_values(layer), _collections(layer.layer_collection)) for layer in scene.view_layers)
    ids = tuple(getattr(item, "name", None) for item in (scene.camera, scene.world))
    return tuple(rna_values(group) for group in groups), layers, ids, _camera_markers(scene), _physics(scene)


def _camera_markers(scene: bpy.types.Scene) -> tuple:
    # A marker bound to a camera switches the render to that camera from its frame on.
    bound = ((marker.frame, marker.camera.name) for marker in scene.timeline_markers if marker.camera is not None)
    return tuple(sorted(bound))


def _physics(scene: bpy.types.Scene) -> tuple:
    """The scene's gravity and rigid body world: they move simulated objects in every frame."""
    world = scene.rigidbody_world
    if world is None:
        return tuple(scene.gravity), scene.use_gravity, None
    # Not the point cache's status (how many frames it holds), which simulating the frames changes.
    cache = (world.point_cache.frame_start, world.point_cache.frame_end)
    rigid_body = (rna_values(world, depth=0), cache, rna_values(world.effector_weights, depth=0))
    return tuple(scene.gravity), scene.use_gravity, rigid_body


def _collections(layer_collection: Any) -> tuple:
    flags = (layer_collection.exclude, layer_collection.holdout, layer_collection.indirect_only)
    return layer_collection.name, flags, tuple(_collections(child) for child in layer_collection.children)


def rna_values(owner: Any, depth: int = 2) -> tuple:
    """The plain values of an RNA struct's properties, and of the structs nested in it down to `depth` levels;
    datablocks by name. Collections are left out."""
    values = []
    for prop in owner.bl_rna.properties:
        name = prop.identifier
        if name == "rna_type" or name in _NOT_READ or prop.type == "COLLECTION":
            continue
        try:
            value = getattr(owner, name)
        except (AttributeError, RuntimeError):  # some properties exist only in some modes
            continue
        if prop.type == "POINTER":
            if isinstance(value, bpy.types.ID) or value is None:
                value = getattr(value, "name", None)
            elif depth > 0:
                value = rna_values(value, depth - 1)
            else:
                continue
        elif getattr(prop, "array_length", 0):
            value = tuple(value)
        values.append((name, value))
    return tuple(values)


def cached(key: tuple) -> np.ndarray | None:
    """The frames rendered under `key`, if they are the last ones rendered and nothing changed since."""
    return _state.pixels if _state.key == key else None


def store(key: tuple, pixels: np.ndarray) -> None:
    """Keep `pixels` for `key`, unless the scene was edited while they rendered (then `key` is already stale)."""
    _flush()
    if key[-1] == _state.edits:
        _state.key, _state.pixels = key, pixels


def clear() -> None:
    _state.key, _state.pixels = None, None


_HANDLERS = (
    (bpy.app.handlers.depsgraph_update_post, _on_depsgraph_update),
    (bpy.app.handlers.undo_post, _on_anything_else),
    (bpy.app.handlers.redo_post, _on_anything_else),
    (bpy.app.handlers.load_post, _on_anything_else),
)


def register() -> None:
    for handlers, handler in _HANDLERS:
        handlers.append(handler)


def unregister() -> None:
    for handlers, handler in _HANDLERS:
        if handler in handlers:
            handlers.remove(handler)
    clear()
