"""The add-on's settings and job list, stored on the scene. No torch.

Everything the panel edits lives in one `PointerProperty` (`scene.motionclone`). The job list is saved with the
.blend file, so jobs that were still running when the file was saved are fetched again when it is opened.
"""

import bpy

from . import compat
from .frame_plan import DEFAULT_CONTEXT_LENGTH, MAX_FRAMES

# The official MotionClone configs, and the built-in model's; the backend expands the name (steps, guided steps, time
# fraction).
CONFIG_ITEMS = [
    ("camera", "Camera motion", "Official camera-motion config: 100 steps, 50 guided"),
    ("object", "Object motion", "Official object-motion config: 300 steps, 180 guided (slower)"),
    ("camera-fast", "Camera motion, fast", "Camera config in 40 steps, 20 guided: 40% of the work"),
    ("object-fast", "Object motion, fast", "Object config in 80 steps, 48 guided: 27% of the work"),
    ("blocks", "Built-in model", "For the backend's built-in blocks model (CPU, 64 x 64): 40 steps, 20 guided"),
]
# How the motion is taken from the reference (backend `motion_source`).
MOTION_SOURCE_ITEMS = [
    ("single-step", "Single step", "Current MotionClone: one noisy pass over the reference (fast)"),
    ("inversion", "DDIM inversion", "Paper v1-v3: DDIM-invert the reference, time-dependent guidance (slower)"),
]
# How a job takes its frames from the frame range (see frame_plan).
FRAME_MODE_ITEMS = [
    ("SPREAD", "Spread", "Spread the frame count evenly over the frame range; the result plays at the scene's rate"),
    ("STEP", "Every Nth Frame", "Take every Nth frame of the range; the result runs at the scene's frame rate / N"),
]
SOURCE_ITEMS = [
    ("CAMERA", "Render camera", "Render the active camera's animation as the motion reference"),
    ("STRIP", "Sequencer strip", "Use an image-sequence strip of the sequencer as the motion reference"),
]
CONDITION_SOURCE_ITEMS = [
    ("NONE", "None", "Text-to-video: no condition image"),
    ("FILE", "Image File", "An image file as the keyframe or sketch"),
    ("STRIP", "Sequencer Strip", "What an image or movie strip shows at the condition frame"),
    ("RENDER", "Render Frame", "Render the condition frame from the camera with the reference's engine (keyframe)"),
    ("LINE_ART", "Line Art", "Render the condition frame as black Freestyle lines on white (sketch)"),
]
CONDITION_TYPE_ITEMS = [
    ("rgb", "Keyframe", "The picture is a keyframe of the result (SparseCtrl RGB)"),
    ("scribble", "Sketch", "The picture is a line drawing the result follows (SparseCtrl scribble)"),
]
ENGINE_ITEMS = [
    ("WORKBENCH", "Workbench", "Fast flat shading; enough for motion"),
    ("EEVEE", "EEVEE", "Real-time renderer"),
    ("CYCLES", "Cycles", "Path tracer (slow)"),
]
JOB_STATES = [
    ("RENDERING", "Rendering", "Rendering the reference frames"),
    ("SUBMITTED", "Submitted", "Sent to the backend, waiting for it to accept"),
    ("QUEUED", "Queued", "Waiting in the backend's queue"),
    ("RUNNING", "Running", "Generating"),
    ("DONE", "Done", "The result is in the sequencer"),
    ("FAILED", "Failed", "The job failed; see its message"),
    ("ELSEWHERE", "Elsewhere", "Another client fetched this running job: its progress and result go there"),
    ("CANCELLED", "Cancelled", "The job was cancelled"),
]
ACTIVE_STATES = {"SUBMITTED", "QUEUED", "RUNNING"}


class MOTIONCLONE_PG_job(bpy.types.PropertyGroup):
    """One generation job: what was asked, and where it stands."""

    request_id: bpy.props.StringProperty(name="Request")
    job_id: bpy.props.StringProperty(name="Job ID")
    state: bpy.props.EnumProperty(name="State", items=JOB_STATES, default="SUBMITTED")
    stage: bpy.props.StringProperty(name="Stage")
    progress: bpy.props.FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    message: bpy.props.StringProperty(name="Message")
    notes: bpy.props.StringProperty(
        name="Notes", description="What the backend noted about the result, one per line (a prompt it cut short)"
    )
    cancel_requested: bpy.props.BoolProperty(
        name="Cancel requested", description="Cancel was pressed: asked again of every new connection until it ends"
    )
    prompt: bpy.props.StringProperty(name="Prompt")
    seed: bpy.props.IntProperty(name="Seed")
    config: bpy.props.StringProperty(name="Config")
    frame_start: bpy.props.IntProperty(name="Start")
    frame_end: bpy.props.IntProperty(name="End")
    frame_mode: bpy.props.EnumProperty(name="Frames", items=FRAME_MODE_ITEMS, default="SPREAD")
    frame_step: bpy.props.IntProperty(name="Frame step", default=1, min=1)
    sampled_frames: bpy.props.StringProperty(name="Sampled frames", description="JSON list of scene frames")
    params_json: bpy.props.StringProperty(name="Parameters", description="Parameters sent to the backend (JSON)")
    result_dir: bpy.props.StringProperty(name="Result folder", subtype="DIR_PATH")
    strip_name: bpy.props.StringProperty(name="Strip")
    result_scene: bpy.props.PointerProperty(
        type=bpy.types.Scene,
        name="Result scene",
        description="The scene whose sequencer gets the result: the one it showed at Generate",
    )
    target_scene: bpy.props.StringProperty(
        name="Result scene name", description="The result scene by name, as files of earlier versions record it"
    )
    preview_path: bpy.props.StringProperty(name="Preview", subtype="FILE_PATH")
    condition_json: bpy.props.StringProperty(
        name="Condition", description="The job's condition image: kind, frames, source and scale (JSON)"
    )


class MOTIONCLONE_PG_settings(bpy.types.PropertyGroup):
    """What the panel edits."""

    prompt: bpy.props.StringProperty(name="Prompt", description="What the new video shows")
    negative_prompt: bpy.props.StringProperty(
        name="Negative prompt", description="What to avoid; empty uses the official negative prompt"
    )
    config: bpy.props.EnumProperty(name="Motion", items=CONFIG_ITEMS, default="camera")
    motion_source: bpy.props.EnumProperty(name="Motion source", items=MOTION_SOURCE_ITEMS, default="single-step")
    inversion_prompt: bpy.props.StringProperty(
        name="Reference prompt", description="Inversion: what the reference video shows, e.g. 'Fox, moves its head'"
    )
    reference_word: bpy.props.StringProperty(
        name="Reference object", description="Inversion: the object's word in the reference prompt (optional)"
    )
    new_word: bpy.props.StringProperty(
        name="New object", description="Inversion: the new object's word in the prompt (optional)"
    )
    seed: bpy.props.IntProperty(
        name="Seed", default=2025, min=0, description="Seed of the noise; with Random seed, the one each Generate drew"
    )
    randomize_seed: bpy.props.BoolProperty(name="Random seed", default=False, description="New seed every run")
    seed_count: bpy.props.IntProperty(
        name="Seeds", default=1, min=1, max=16, description="Jobs per Generate, one reference, seeds counting up"
    )
    frame_mode: bpy.props.EnumProperty(name="Frames", items=FRAME_MODE_ITEMS, default="SPREAD")
    num_frames: bpy.props.IntProperty(
        name="Frames",
        default=16,
        min=2,
        max=MAX_FRAMES,
        soft_max=32,
        description="Frames sampled evenly over the frame range; more than the window length (Advanced) are made "
        "in overlapping windows",
    )
    frame_step: bpy.props.IntProperty(
        name="Every",
        default=2,
        min=1,
        max=12,
        description="Take every Nth scene frame: the result runs at the scene's frame rate divided by N, each of its "
        "frames held for N scene frames in the sequencer",
    )
    long_side: bpy.props.IntProperty(
        name="Size", default=512, min=64, max=2048, step=8, description="Longer side in pixels (multiple of 8)"
    )
    use_scene_range: bpy.props.BoolProperty(name="Scene frame range", default=True)
    frame_start: bpy.props.IntProperty(name="Start", default=1, min=0)
    frame_end: bpy.props.IntProperty(name="End", default=16, min=0)
    source: bpy.props.EnumProperty(name="Reference", items=SOURCE_ITEMS, default="CAMERA")
    render_engine: bpy.props.EnumProperty(name="Engine", items=ENGINE_ITEMS, default="WORKBENCH")
    render_all_view_layers: bpy.props.BoolProperty(
        name="All View Layers", description="Render every view layer for the reference, not just the active one"
    )
    reuse_reference: bpy.props.BoolProperty(
        name="Reuse Last Render",
        default=True,
        description="Send the last reference render again while nothing in the scene changed (new prompts and seeds "
        "on the same shot skip the render)",
    )
    render_motion_blur: bpy.props.BoolProperty(
        name="Motion Blur", description="Keep motion blur in the reference render (off: sharper motion to follow)"
    )
    reference_strip: bpy.props.StringProperty(name="Strip", description="Name of the image strip to use")
    condition_source: bpy.props.EnumProperty(name="Condition", items=CONDITION_SOURCE_ITEMS, default="NONE")
    condition_type: bpy.props.EnumProperty(name="Kind", items=CONDITION_TYPE_ITEMS, default="rgb")
    condition_path: bpy.props.StringProperty(
        name="Image",
        subtype="FILE_PATH",
        description="The condition image",
        options=compat.blend_relative_path_options(),
    )
    condition_strip: bpy.props.StringProperty(name="Strip", description="Image or movie strip holding the condition")
    condition_frame: bpy.props.IntProperty(
        name="Frame", default=1, description="Scene frame of the condition: it holds the output frame sampled nearest"
    )
    condition_scale: bpy.props.FloatProperty(
        name="Strength", default=1.0, min=0.0, max=2.0, description="How strongly the result keeps to the condition"
    )
    show_advanced: bpy.props.BoolProperty(name="Advanced", default=False)
    use_advanced: bpy.props.BoolProperty(
        name="Override config", default=False, description="Send the values below instead of the config's"
    )
    steps: bpy.props.IntProperty(name="Steps", default=100, min=1, max=1000)
    guidance_steps: bpy.props.IntProperty(name="Guided steps", default=50, min=0, max=1000)
    guidance_weight: bpy.props.FloatProperty(name="Guidance weight", default=2000.0, min=0.0, max=1e6)
    cfg_scale: bpy.props.FloatProperty(name="CFG", default=7.5, min=0.0, max=50.0)
    context_length: bpy.props.IntProperty(
        name="Window",
        default=DEFAULT_CONTEXT_LENGTH,
        min=2,
        max=32,
        description="Frames the motion model sees at once; longer jobs are made in overlapping windows of this "
        "many frames (16: what the motion model was trained on)",
    )
    context_overlap: bpy.props.IntProperty(
        name="Overlap",
        default=4,
        min=0,
        max=31,
        description="Frames shared by neighbouring windows, blended so they hand over smoothly (more: smoother, "
        "more windows to run); must be below the window length",
    )
    jobs: bpy.props.CollectionProperty(type=MOTIONCLONE_PG_job)
    active_job: bpy.props.IntProperty(name="Active job", default=0)


classes = (MOTIONCLONE_PG_job, MOTIONCLONE_PG_settings)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.motionclone = bpy.props.PointerProperty(type=MOTIONCLONE_PG_settings)


def unregister() -> None:
    del bpy.types.Scene.motionclone
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
