"""Presets of the panel's settings through Blender's own preset system (Add/Remove in a menu, files under the user's
`scripts/presets/motionclone/`). No torch.

A preset keeps what the artist chooses per look: prompt, negative prompt, config, motion source, reference source and
engine, frames (count or step), size and the advanced values (windows included). Not the seed, the frame range or
the job list.
"""

import bpy
from bl_operators.presets import AddPresetBase

PRESET_SUBDIR = "motionclone"
PRESET_VALUES = [
    f"scene.motionclone.{name}"
    for name in (
        "prompt",
        "negative_prompt",
        "config",
        "motion_source",
        "inversion_prompt",
        "reference_word",
        "new_word",
        "frame_mode",
        "num_frames",
        "frame_step",
        "long_side",
        "source",
        "render_engine",
        "render_all_view_layers",
        "render_motion_blur",
        "use_advanced",
        "steps",
        "guidance_steps",
        "guidance_weight",
        "cfg_scale",
        "context_length",
        "context_overlap",
    )
]


class MOTIONCLONE_MT_presets(bpy.types.Menu):
    bl_label = "MotionClone Presets"
    preset_subdir = PRESET_SUBDIR
    preset_operator = "script.execute_preset"
    draw = bpy.types.Menu.draw_preset


class MOTIONCLONE_OT_preset_add(AddPresetBase, bpy.types.Operator):
    """Save the panel's settings as a preset, or remove the chosen one"""

    bl_idname = "motionclone.preset_add"
    bl_label = "Add MotionClone Preset"
    preset_menu = "MOTIONCLONE_MT_presets"
    preset_defines = ("scene = bpy.context.scene",)
    preset_values = PRESET_VALUES
    preset_subdir = PRESET_SUBDIR


classes = (MOTIONCLONE_MT_presets, MOTIONCLONE_OT_preset_add)
