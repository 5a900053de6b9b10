"""Starting a job from the panel's settings: render or read the reference, build the request, submit. No torch.

Operators call `start_job` and report what it raises; this module holds the steps so they stay testable.
"""

import json
import random
import re
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from . import compat, frame_plan, reference, reference_cache
from .condition import ConditionPlan, condition_kind, make_condition, restore_condition_settings, show_condition
from .session import get_session

MAX_SEED = 2**31 - 1


def timeline_scene(scene: bpy.types.Scene, settings: Any) -> bpy.types.Scene:
    """The scene whose timeline a job's frames are counted in: for a sequencer-strip reference, the scene the Video
    Sequencer shows, whose strip the job reads (on 5.x possibly another scene, with its own range and frame rate);
    otherwise `scene`."""
    return compat.sequencer_scene(bpy.context) if settings.source == "STRIP" else scene


def frame_range(scene: bpy.types.Scene, settings: Any) -> tuple[int, int]:
    if settings.use_scene_range:
        timeline = timeline_scene(scene, settings)
        return timeline.frame_start, timeline.frame_end
    return settings.frame_start, settings.frame_end


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def job_fps(scene: bpy.types.Scene, settings: Any) -> float:
    """The result's frame rate: the timeline's, or with every Nth frame taken, the timeline's divided by N."""
    step = settings.frame_step if settings.frame_mode == "STEP" else 1
    return scene_fps(timeline_scene(scene, settings)) / step


def request_params(
    settings: Any, seed: int, width: int, height: int, fps: float, num_frames: int | None = None
) -> dict[str, Any]:
    """The MotionClone parameters sent with the job (names as in the backend's docs/configuration.md).

    `num_frames` is the job's frame count (with every Nth frame taken, what the range gives); None: the panel's.
    """
    num_frames = settings.num_frames if num_frames is None else num_frames
    params: dict[str, Any] = {
        "config": settings.config,
        "prompt": settings.prompt,
        "seed": seed,
        "num_frames": num_frames,
        "width": width,
        "height": height,
        "fps": fps,
    }
    if frame_plan.sends_windows(num_frames, settings.context_length):
        params["context_length"] = settings.context_length
        params["context_overlap"] = settings.context_overlap
    if settings.negative_prompt.strip():
        params["negative_prompt"] = settings.negative_prompt
    if settings.motion_source == "inversion":
        params["motion_source"] = "inversion"
        params["inversion_prompt"] = settings.inversion_prompt
        if settings.reference_word.strip() and settings.new_word.strip():
            params["semantic_object_pair"] = [settings.reference_word.strip(), settings.new_word.strip()]
    if settings.condition_source != "NONE":
        params["controlnet_scale"] = settings.condition_scale
    if settings.use_advanced:
        params.update(
            num_inference_steps=settings.steps,
            guidance_steps=settings.guidance_steps,
            motion_guidance_weight=settings.guidance_weight,
            cfg_scale=settings.cfg_scale,
        )
    return params


def camera_render(
    scene: bpy.types.Scene, settings: Any, frames: list[int], width: int, height: int
) -> reference.CameraRender:
    """The reference render the panel's settings ask for, to run with `with` (see `reference.CameraRender`)."""
    return reference.CameraRender(
        scene,
        frames,
        width,
        height,
        settings.render_engine,
        all_view_layers=settings.render_all_view_layers,
        motion_blur=settings.render_motion_blur,
    )


def reference_frames(scene: bpy.types.Scene, settings: Any, frames: list[int], width: int, height: int) -> np.ndarray:
    """The reference as uint8 (N, H, W, 3): the camera rendered (or its last render, while nothing in the scene
    changed), or an image or movie strip read."""
    if settings.source == "STRIP":
        with strip_read(settings, frames, width, height) as read:
            return read.render_all()
    key = reference_cache.render_key(scene, settings, frames, width, height)
    pixels = reused_reference(settings, key)
    if pixels is None:
        with camera_render(scene, settings, frames, width, height) as render:  # in a temporary folder
            pixels = render.render_all()
        reference_cache.store(key, pixels)
    return pixels


def strip_read(settings: Any, frames: list[int], width: int, height: int) -> reference.StripRead:
    """The read of the panel's reference strip, to run with `with` (see `reference.StripRead`)."""
    editor = compat.source_strip_editor()
    strip = editor and compat.all_strips(editor).get(settings.reference_strip)
    if strip is None:
        raise ValueError(f"No sequencer strip named '{settings.reference_strip}': pick an image or movie strip.")
    return reference.StripRead(strip, frames, width, height)


def living_scene(scene: bpy.types.Scene) -> bpy.types.Scene | None:
    """`scene`, unless it was deleted since it was taken (while the reference rendered): then None, and the result
    goes to the job's own scene."""
    try:
        return scene if scene.name else None  # reading any attribute of a deleted scene raises
    except ReferenceError:
        return None


def reused_reference(settings: Any, key: tuple) -> np.ndarray | None:
    """The last camera reference if it was rendered under `key` and the panel allows reusing it."""
    return reference_cache.cached(key) if settings.reuse_reference else None


@dataclass
class JobPlan:
    """What a job needs besides its reference frames, fixed when Generate is pressed."""

    frames: list[int]
    width: int
    height: int
    fps: float
    start: int
    end: int
    # The scene the sequencer shows when Generate is pressed (5.x: possibly another scene), not when the render ends.
    target_scene: bpy.types.Scene
    condition: ConditionPlan | None = None


def plan_job(context: bpy.types.Context, scene: bpy.types.Scene) -> JobPlan:
    """Check the settings, connect (or start the local backend), draw the seed, pick the frames and size. Raises
    with a user-facing message."""
    settings = scene.motionclone
    if not settings.prompt.strip():
        raise ValueError("Write a prompt first: it says what the new video shows.")
    check_panel_values(settings)
    get_session().prepare(context)
    check_backend_offers(settings, get_session().connection)
    if settings.randomize_seed:
        settings.seed = random.randint(0, MAX_SEED)
    start, end = frame_range(scene, settings)
    frames, width, height = frames_and_size(scene, settings)
    check_windows(settings, len(frames))
    limit = get_session().max_message_bytes()
    check_message_size(len(frames), width, height, 0, limit)
    made = preview_condition(scene, settings)
    if made is not None:
        check_message_size(len(frames), width, height, len(made.condition.images), limit)
    target = compat.sequencer_scene(context)
    return JobPlan(frames, width, height, job_fps(scene, settings), start, end, target, made)


def sampled_frames(scene: bpy.types.Scene, settings: Any) -> list[int]:
    """The scene frames a job takes from its range: every Nth one, or the frame count spread evenly."""
    if settings.frame_mode == "STEP":
        return frame_plan.step_frames(*frame_range(scene, settings), settings.frame_step)
    return reference.sample_frames(*frame_range(scene, settings), settings.num_frames)


def frames_and_size(scene: bpy.types.Scene, settings: Any) -> tuple[list[int], int, int]:
    """The scene frames a job samples, and its width and height."""
    return sampled_frames(scene, settings), *reference.snapped_resolution(scene, settings.long_side)


def check_panel_values(settings: Any) -> None:
    """Raise a user-facing ValueError, naming the panel field, for values the backend would refuse only after the
    reference was rendered."""
    reference.check_long_side(settings.long_side)
    if settings.motion_source == "inversion" and settings.reference_word.strip() and settings.new_word.strip():
        for word, prompt, field in (
            (settings.reference_word, settings.inversion_prompt, "Reference prompt"),
            (settings.new_word, settings.prompt, "prompt"),
        ):
            if not re.search(rf"\b{re.escape(word.strip())}\b", prompt, re.IGNORECASE):
                raise ValueError(f"'{word.strip()}' is not a word of the {field}: the object's word must occur in it.")
    if settings.use_advanced and settings.guidance_steps > settings.steps:
        raise ValueError(
            f"Guided steps ({settings.guidance_steps}) cannot be more than Steps ({settings.steps}): lower Guided "
            "steps or raise Steps in the Advanced settings."
        )


def check_backend_offers(settings: Any, connection: Any) -> None:
    """Raise a user-facing ValueError when the connected backend cannot run the panel's condition."""
    if settings.condition_source == "NONE" or connection.state != "connected" or connection.condition_types is None:
        return
    kind = condition_kind(settings)
    if kind not in connection.condition_types:
        offered = ", ".join(connection.condition_types) or "none"
        raise ValueError(
            f"The backend runs no SparseCtrl {kind} model (conditions it runs: {offered}): set Condition to None, or "
            f"use a remote backend started with one (`motionclone serve --sparsectrl {kind}`): the local backend runs "
            "none."
        )


def check_message_size(num_frames: int, width: int, height: int, condition_images: int, limit: int) -> None:
    """Raise a user-facing ValueError when the reference (and condition) frames make a message larger than `limit`
    (the protocol client's `max_message_bytes`), before they are rendered: the client would refuse it only at the
    send."""
    size = (num_frames + condition_images) * width * height * 3  # RGB, one byte per channel
    if size <= limit:
        return
    mib = 1024 * 1024
    images = f" and {condition_images} condition images" if condition_images else ""
    # The longest side that fits at this aspect: long_side^2 / aspect pixels per frame.
    pixels_that_fit = limit // ((num_frames + condition_images) * 3)
    long_side = int((pixels_that_fit * max(width, height) / min(width, height)) ** 0.5) // 8 * 8
    what_to_do = f"lower Size to {long_side} or take fewer Frames" if long_side >= 64 else "take fewer Frames"
    raise ValueError(
        f"{num_frames} frames{images} of {width} x {height} make {size / mib:.0f} MiB, more than the {limit // mib} "
        f"MiB the backend takes in one message: {what_to_do}."
    )


def check_windows(settings: Any, num_frames: int) -> None:
    """Raise a user-facing ValueError when the window settings do not work for a job of `num_frames` frames."""
    frame_plan.check_windows(settings.context_length, settings.context_overlap)
    frame_plan.check_inversion(num_frames, settings.context_length, settings.motion_source)


def frame_summary(scene: bpy.types.Scene, settings: Any) -> list[tuple[str, str]]:
    """The panel's (text, icon) lines about the job's frames: with every Nth frame taken, the count and frame rate
    (or why the range does not work); with more than one window, the windows and their cost."""
    lines = []
    count = settings.num_frames
    if settings.frame_mode == "STEP":
        try:
            count = len(frame_plan.step_frames(*frame_range(scene, settings), settings.frame_step))
        except ValueError as error:
            return [(str(error), "ERROR")]
        fps = scene_fps(timeline_scene(scene, settings))
        lines.append((frame_plan.step_text(count, settings.frame_step, fps), "TIME"))
    try:
        check_windows(settings, count)
    except ValueError as error:
        return [*lines, (str(error), "ERROR")]
    windows = frame_plan.window_text(count, settings.context_length, settings.context_overlap)
    if windows is not None:
        lines.append((windows, "SEQ_STRIP_DUPLICATE"))
    return lines


def preview_condition(scene: bpy.types.Scene, settings: Any) -> ConditionPlan | None:
    """Make the panel's condition (rendering it if it is a render) and show it in the panel's thumbnail."""
    made = make_condition(scene, settings, *frames_and_size(scene, settings))
    if made is not None:
        show_condition(made.condition.images)
    return made


def submit_job(context: bpy.types.Context, scene: bpy.types.Scene, plan: JobPlan, pixels: np.ndarray) -> Any:
    """Send the reference and add a job to the scene's list. Returns the job item."""
    settings = scene.motionclone
    session = get_session()
    params = request_params(settings, settings.seed, plan.width, plan.height, plan.fps, len(plan.frames))
    made = plan.condition
    request_id = session.submit(context, pixels, params, plan.fps, None if made is None else made.condition)
    job = settings.jobs.add()
    job.request_id = request_id
    job.state = "SUBMITTED"
    job.prompt = settings.prompt
    job.seed = settings.seed
    job.config = settings.config
    job.frame_start, job.frame_end = plan.start, plan.end
    job.frame_mode, job.frame_step = settings.frame_mode, settings.frame_step
    job.result_scene = living_scene(plan.target_scene)
    job.sampled_frames = json.dumps(plan.frames)
    job.params_json = json.dumps(params)
    job.condition_json = "" if made is None else made.record(settings)
    job.message = session.job_message(request_id)
    settings.active_job = len(settings.jobs) - 1
    session.remember_submitted(job)
    return job


def submit_jobs(context: bpy.types.Context, scene: bpy.types.Scene, plan: JobPlan, pixels: np.ndarray) -> list[Any]:
    """One job per seed of the panel's seed count (seed, seed + 1, ...), all on the same reference frames."""
    settings = scene.motionclone
    first = settings.seed
    submitted = []
    try:
        for offset in range(settings.seed_count):
            settings.seed = (first + offset) % (MAX_SEED + 1)
            submitted.append(submit_job(context, scene, plan, pixels))
    finally:
        settings.seed = first  # also when a later seed's submit fails: the panel shows the seed it showed
    return submitted


def start_job(context: bpy.types.Context, scene: bpy.types.Scene) -> Any:
    """Render the reference, submit one job per seed, and add them to the scene's list, all at once. Returns the
    first job item."""
    plan = plan_job(context, scene)
    pixels = reference_frames(scene, scene.motionclone, plan.frames, plan.width, plan.height)
    return submit_jobs(context, scene, plan, pixels)[0]


def use_job_settings(settings: Any, job: Any) -> list[str]:
    """Put a job's stored parameters back into the panel; returns the names of the settings it set."""
    params = json.loads(job.params_json or "{}")
    if not params:
        raise ValueError("This job has no stored parameters (made by an older version of the add-on).")
    simple = {
        "prompt": "prompt",
        "negative_prompt": "negative_prompt",
        "config": "config",
        "seed": "seed",
        "inversion_prompt": "inversion_prompt",
    }
    changed = []
    for key, name in simple.items():
        if key in params:
            setattr(settings, name, params[key])
            changed.append(name)
    changed += restore_frame_settings(settings, job, params)
    settings.negative_prompt = params.get("negative_prompt", "")
    settings.motion_source = params.get("motion_source", "single-step")
    pair = params.get("semantic_object_pair") or ["", ""]
    settings.reference_word, settings.new_word = pair
    if "width" in params and "height" in params:
        settings.long_side = max(int(params["width"]), int(params["height"]))
        changed.append("long_side")
    advanced = ("num_inference_steps", "guidance_steps", "motion_guidance_weight", "cfg_scale")
    settings.use_advanced = all(key in params for key in advanced)
    if settings.use_advanced:
        settings.steps = params["num_inference_steps"]
        settings.guidance_steps = params["guidance_steps"]
        settings.guidance_weight = params["motion_guidance_weight"]
        settings.cfg_scale = params["cfg_scale"]
        changed += ["steps", "guidance_steps", "guidance_weight", "cfg_scale"]
    changed += restore_condition_settings(settings, job.condition_json)
    settings.randomize_seed = False  # the job's own seed, as stored
    settings.frame_start, settings.frame_end = job.frame_start, job.frame_end
    settings.use_scene_range = False
    return changed


def restore_frame_settings(settings: Any, job: Any, params: dict[str, Any]) -> list[str]:
    """How the job took its frames, and its windows if it sent them; returns the names of the settings it set."""
    settings.frame_mode = job.frame_mode  # SPREAD for jobs made before the frame step existed, as they were
    if job.frame_mode == "STEP":
        settings.frame_step = job.frame_step  # the frame count follows from the step and the range
        changed = ["frame_mode", "frame_step"]
    else:
        changed = ["frame_mode"]
        if "num_frames" in params:
            settings.num_frames = params["num_frames"]
            changed.append("num_frames")
    if "context_length" in params and "context_overlap" in params:
        settings.context_length = params["context_length"]
        settings.context_overlap = params["context_overlap"]
        changed += ["context_length", "context_overlap"]
    return changed
