"""Every Blender API the add-on uses that changed between 4.2 LTS and 5.x, in one place. No torch.

| what | 4.2-4.3 | 4.4-4.5 | 5.x |
|---|---|---|---|
| top-level strips of a sequence editor | `sequences` | `strips` (and `sequences`) | `strips` |
| every strip, meta contents included | `sequences_all` | `strips_all` (and `sequences_all`) | `strips_all` |
| scene the sequencer shows | `context.scene` | `context.scene` | `context.sequencer_scene` (may differ) |
| length of a new effect strip | `frame_end=` | `length=` | `length=` |
| EEVEE's engine identifier | `BLENDER_EEVEE_NEXT` | `BLENDER_EEVEE_NEXT` | `BLENDER_EEVEE` |
| still-image vs video output | `file_format` only | `file_format` only | `media_type`, then `file_format` |
| a path property that may start with `//` | any | option `PATH_SUPPORTS_BLEND_RELATIVE` (4.5) | the same |
"""

from typing import Any

import bpy


def strips(editor: Any) -> Any:
    """The top-level strip collection of a sequence editor (new strips are made with it)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor: Any) -> Any:
    """Every strip of a sequence editor, those inside meta strips too (look strips up by name here)."""
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def all_strips_property(editor: Any) -> str:
    """The name of `all_strips`'s collection on the editor, for `UILayout.prop_search`."""
    return "strips_all" if hasattr(editor, "strips_all") else "sequences_all"


def sequencer_scene(context: Any) -> Any:
    """The scene the Video Sequencer shows: on 5.x it can be another scene than `context.scene`."""
    return getattr(context, "sequencer_scene", None) or context.scene


def source_strip_editor() -> Any:
    """The sequence editor whose image and movie strips can be a reference or a condition: the one the Video
    Sequencer shows (on 5.x, possibly another scene's), or None when that scene has none."""
    return sequencer_scene(bpy.context).sequence_editor


def new_effect_strip(editor: Any, name: str, kind: str, channel: int, frame_start: int, length: int) -> Any:
    """A new effect strip (COLOR, ...) of `length` frames from `frame_start`."""
    collection = strips(editor)
    try:
        return collection.new_effect(name=name, type=kind, channel=channel, frame_start=frame_start, length=length)
    except TypeError:  # 4.2-4.3: the end frame instead of the length
        return collection.new_effect(
            name=name, type=kind, channel=channel, frame_start=frame_start, frame_end=frame_start + length
        )


def eevee_engine() -> str:
    """EEVEE's identifier in `RenderSettings.engine` in this Blender."""
    items = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    for identifier in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE"):
        if identifier in items:
            return identifier
    return "BLENDER_EEVEE" if bpy.app.version >= (5, 0, 0) else "BLENDER_EEVEE_NEXT"


def set_media_type(image_settings: Any, media_type: str) -> None:
    """Select still images ("IMAGE") or video ("VIDEO") output before choosing a file format; 5.x only."""
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = media_type


def blend_relative_path_options() -> set[str]:
    """Options of a path property that may be relative to the .blend (`//...`): from 4.5 Blender marks such a value
    invalid, and its file browser writes absolute paths, unless the property says it supports one."""
    return {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()
