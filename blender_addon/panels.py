"""Panels in the 3D viewport and sequencer sidebars, and the job list. Layout only. No torch."""

import textwrap
from typing import Any

import bpy

from . import compat, jobs, model_fit, preferences
from .condition import CONDITION_IMAGE
from .event_pump import PREVIEW_IMAGE, status_lines
from .properties import ACTIVE_STATES
from .session import get_session

STATE_ICONS = {
    "RENDERING": "RENDER_ANIMATION",
    "SUBMITTED": "EXPORT",
    "QUEUED": "SORTTIME",
    "RUNNING": "PLAY",
    "DONE": "CHECKMARK",
    "FAILED": "ERROR",
    "ELSEWHERE": "UNLINKED",
    "CANCELLED": "X",
}
LOCAL_ICONS = {
    "stopped": "PAUSE",
    "starting": "TIME",
    "loading": "TIME",
    "ready": "CHECKMARK",
    "stopping": "TIME",
    "crashed": "ERROR",
}
CONNECTION_ICONS = {"connected": "LINKED", "connecting": "TIME", "unreachable": "ERROR", "disconnected": "UNLINKED"}
# About what fits on a line of a sidebar panel of the default width.
NOTE_LINE_CHARACTERS = 48
UNSAVED_RESULTS_NOTE = (
    "This file is not saved: results go to the add-on's own folder, which Blender deletes with the add-on. Save the "
    ".blend to keep them next to it, or choose an Output folder in the preferences."
)


class MOTIONCLONE_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.label(text=item.prompt or "(no prompt)", icon=STATE_ICONS.get(item.state, "DOT"))
        row.label(text=f"{item.state.capitalize()} · seed {item.seed}")


def draw_motionclone(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """The whole panel; shared by the viewport and sequencer panels."""
    settings = context.scene.motionclone
    row = layout.row(align=True)
    row.menu("MOTIONCLONE_MT_presets", text=bpy.types.MOTIONCLONE_MT_presets.bl_label)
    row.operator("motionclone.preset_add", text="", icon="ADD")
    row.operator("motionclone.preset_add", text="", icon="REMOVE").remove_active = True
    if preferences.get_preferences(context).backend_mode == "LOCAL":
        draw_local_backend(layout)
    draw_connection(layout)

    col = layout.column()
    col.prop(settings, "prompt", text="", icon="TEXT")
    col.prop(settings, "negative_prompt", text="", icon="REMOVE")
    col.prop(settings, "config")
    col.prop(settings, "motion_source")
    if settings.motion_source == "inversion":
        col.prop(settings, "inversion_prompt", text="", icon="FILE_MOVIE")
        row = col.row(align=True)
        row.prop(settings, "reference_word")
        row.prop(settings, "new_word")
    row = col.row(align=True)
    row.prop(settings, "seed")
    row.prop(settings, "randomize_seed", text="", icon="FILE_REFRESH")
    row.prop(settings, "seed_count")

    box = layout.box()
    box.prop(settings, "source")
    if settings.source == "CAMERA":
        box.prop(settings, "render_engine")
        if settings.show_advanced:
            row = box.row(align=True)
            row.prop(settings, "render_all_view_layers")
            row.prop(settings, "render_motion_blur")
            box.prop(settings, "reuse_reference")
    else:
        editor = compat.source_strip_editor()
        if editor is not None:
            # A list of the sequencer's strips (image and movie strips work), not a typed name.
            box.prop_search(settings, "reference_strip", editor, compat.all_strips_property(editor), icon="SEQUENCE")
        else:
            box.label(text="Add an image or movie strip to the sequencer first", icon="INFO")
    draw_frames(box, context.scene, settings)

    draw_condition(layout.box(), context, settings)

    layout.prop(settings, "show_advanced", icon="PREFERENCES", emboss=False)
    if settings.show_advanced:
        col = layout.column()
        col.prop(settings, "use_advanced")
        sub = col.column()
        sub.active = settings.use_advanced
        sub.prop(settings, "steps")
        sub.prop(settings, "guidance_steps")
        sub.prop(settings, "guidance_weight")
        sub.prop(settings, "cfg_scale")
        row = col.row(align=True)
        row.prop(settings, "context_length")
        row.prop(settings, "context_overlap")

    draw_model_fit(layout, settings)
    if not preferences.results_outlive_addon(context):
        draw_notes(layout.box(), UNSAVED_RESULTS_NOTE, icon="INFO")
    layout.operator("motionclone.generate", icon="PLAY")
    draw_jobs(layout, settings)


def draw_model_fit(layout: bpy.types.UILayout, settings: Any) -> None:
    """When the panel's size or config does not suit the connected backend's model: what it was made for, and a
    button that takes it."""
    connection = get_session().connection
    if connection.state != "connected":
        return
    line = model_fit.mismatch(settings, connection.model)
    if line is None:
        return
    box = layout.box()
    box.label(text=line, icon="INFO")
    box.operator("motionclone.use_model_settings", icon="CHECKMARK")


def draw_frames(box: bpy.types.UILayout, scene: bpy.types.Scene, settings: Any) -> None:
    """How the job takes its frames from the range, the size, and what that makes (frame rate, windows)."""
    box.row().prop(settings, "frame_mode", expand=True)
    row = box.row(align=True)
    row.prop(settings, "frame_step" if settings.frame_mode == "STEP" else "num_frames")
    row.prop(settings, "long_side")
    box.prop(settings, "use_scene_range")
    if not settings.use_scene_range:
        row = box.row(align=True)
        row.prop(settings, "frame_start")
        row.prop(settings, "frame_end")
    for text, icon in jobs.frame_summary(scene, settings):
        box.label(text=text, icon=icon)


def draw_condition(box: bpy.types.UILayout, context: bpy.types.Context, settings: Any) -> None:
    """Image- and sketch-to-video: where the condition image comes from, and its thumbnail."""
    box.prop(settings, "condition_source")
    source = settings.condition_source
    if source == "NONE":
        return
    if source == "FILE":
        box.prop(settings, "condition_path")
    elif source == "STRIP":
        editor = compat.source_strip_editor()
        if editor is not None:
            box.prop_search(settings, "condition_strip", editor, compat.all_strips_property(editor), icon="SEQUENCE")
        else:
            box.label(text="Add an image or movie strip to the sequencer first", icon="INFO")
    if source in ("FILE", "STRIP"):
        box.prop(settings, "condition_type", expand=True)
    if source == "RENDER" and settings.source != "CAMERA":
        box.prop(settings, "render_engine")  # the reference box shows it only for a camera reference
    row = box.row(align=True)
    row.prop(settings, "condition_frame")
    row.prop(settings, "condition_scale")
    box.operator("motionclone.preview_condition", icon="IMAGE_DATA")
    image = bpy.data.images.get(CONDITION_IMAGE)
    if image is not None and image.preview is not None:
        box.template_icon(icon_value=image.preview.icon_id, scale=5.0)


def draw_connection(layout: bpy.types.UILayout) -> None:
    connection = get_session().connection
    row = layout.row(align=True)
    row.label(text=connection.message or "Not connected", icon=CONNECTION_ICONS.get(connection.state, "DOT"))
    row.operator("motionclone.test_connection", text="", icon="FILE_REFRESH")


def draw_local_backend(layout: bpy.types.UILayout) -> None:
    """The local backend's status line with Start or Stop, and after a crash the end of its log and Restart."""
    local = get_session().local
    row = layout.row(align=True)
    row.label(text=local.status_line(), icon=LOCAL_ICONS.get(local.state, "DOT"))
    if local.running:
        row.operator("motionclone.stop_backend", text="", icon="PAUSE")
    else:
        row.operator("motionclone.start_backend", text="", icon="PLAY")
    if local.state != "crashed":
        return
    box = layout.box()
    col = box.column(align=True)
    for line in local.log_tail(6):
        col.label(text=line)
    box.operator("motionclone.start_backend", text="Restart Backend", icon="FILE_REFRESH")


def draw_jobs(layout: bpy.types.UILayout, settings) -> None:
    if not settings.jobs:
        return
    layout.template_list("MOTIONCLONE_UL_jobs", "", settings, "jobs", settings, "active_job", rows=3)
    if not 0 <= settings.active_job < len(settings.jobs):
        return
    job = settings.jobs[settings.active_job]
    col = layout.column()
    if job.state in ACTIVE_STATES:
        col.progress(factor=job.progress, type="BAR", text=job.message or job.state.capitalize())
        preview = bpy.data.images.get(PREVIEW_IMAGE)
        if job.preview_path and preview is not None and preview.preview is not None:
            col.template_icon(icon_value=preview.preview.icon_id, scale=6.0)
    elif job.message:
        col.label(text=job.message, icon=STATE_ICONS.get(job.state, "INFO"))
    if job.notes:
        draw_notes(col.box(), job.notes)
    row = col.row(align=True)
    row.operator("motionclone.cancel", icon="CANCEL")
    row.operator("motionclone.redo", icon="FILE_REFRESH")
    row.operator("motionclone.fetch_again", text="", icon="IMPORT")
    row.operator("motionclone.remove_job", text="", icon="TRASH")
    row = col.row(align=True)
    row.operator("motionclone.use_job_settings", icon="PASTEDOWN")
    row.operator("motionclone.show_result", text="", icon="SEQUENCE")
    row.operator("motionclone.open_result_folder", text="", icon="FILE_FOLDER")


def draw_notes(layout: bpy.types.UILayout, notes: str, width: int = NOTE_LINE_CHARACTERS, icon: str = "ERROR") -> None:
    """Each note wrapped into lines (a label shows one line and cuts the rest), `icon` on its first."""
    col = layout.column(align=True)
    for note in notes.splitlines():
        for index, line in enumerate(textwrap.wrap(note, width, break_on_hyphens=False)):
            col.label(text=line, icon=icon if index == 0 else "BLANK1")


class MOTIONCLONE_PT_view3d(bpy.types.Panel):
    bl_label = "MotionClone"
    bl_idname = "MOTIONCLONE_PT_view3d"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "MotionClone"

    def draw(self, context: bpy.types.Context) -> None:
        draw_motionclone(self.layout, context)


class MOTIONCLONE_PT_sequencer(bpy.types.Panel):
    bl_label = "MotionClone"
    bl_idname = "MOTIONCLONE_PT_sequencer"
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "MotionClone"

    def draw(self, context: bpy.types.Context) -> None:
        draw_motionclone(self.layout, context)


def draw_status(self: Any, context: bpy.types.Context) -> None:
    """Blender's status bar: the progress of every running job, and a line for each job that just ended."""
    for text, progress in status_lines(get_session()):
        if progress is None:
            self.layout.label(text=text, icon="INFO")
        else:
            self.layout.progress(factor=progress, type="BAR", text=text)


classes = (MOTIONCLONE_UL_jobs, MOTIONCLONE_PT_view3d, MOTIONCLONE_PT_sequencer)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.STATUSBAR_HT_header.append(draw_status)


def unregister() -> None:
    bpy.types.STATUSBAR_HT_header.remove(draw_status)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
