"""Long shots in the add-on: every Nth frame at the scene's frame rate / N, windows and their cost in the panel, and
a 120-frame shot through a real backend into a strip that spans the whole shot. No torch in this process."""

import json
from pathlib import Path

import bpy
import pytest

from blender_addon import compat, event_pump, frame_plan, jobs, panels, reference, sequencer
from blender_addon._protocol import client, windows
from tests.blender_addon.test_addon import RecordingLayout, addon, animated_scene, backend, configure_job, pump_until

__all__ = ["addon", "backend"]

SHOT_FRAMES = 120  # the blockout: scene frames 1-120 at 24 fps


# ---- pure functions ------------------------------------------------------------------------------------------------
def test_every_nth_frame_starts_on_the_first_and_counts_like_the_engine():
    assert frame_plan.step_frames(1, 120, 2) == list(range(1, 120, 2))
    assert len(frame_plan.step_frames(1, 120, 2)) == windows.sampled_count(120, 2) == 60
    assert frame_plan.step_frames(1, 10, 3) == [1, 4, 7, 10]  # the last frame when the step lands on it
    assert frame_plan.step_frames(1, 11, 3) == [1, 4, 7, 10]
    assert frame_plan.step_frames(5, 12, 1) == list(range(5, 13))
    assert frame_plan.step_frames(1, 511, 2)[-1] == 511 and len(frame_plan.step_frames(1, 511, 2)) == 256


def test_a_range_that_gives_too_many_or_too_few_frames_says_what_to_change():
    with pytest.raises(ValueError, match=r"gives 300 frames, more than the 256 .* raise the frame step to 3"):
        frame_plan.step_frames(1, 600, 2)
    with pytest.raises(ValueError, match="gives 257 frames"):
        frame_plan.step_frames(1, 513, 2)
    with pytest.raises(ValueError, match="only 1 frame: lower the frame step"):
        frame_plan.step_frames(1, 5, 12)
    with pytest.raises(ValueError, match="has 0 frames; a job needs at least 2: extend the frame range"):
        frame_plan.step_frames(10, 9, 1)


def test_the_suggested_step_is_the_smallest_that_fits():
    for total in range(2, 3000):
        step = frame_plan.smallest_step(total)
        assert windows.sampled_count(total, step) <= frame_plan.MAX_FRAMES
        assert step == 1 or windows.sampled_count(total, step - 1) > frame_plan.MAX_FRAMES


def test_ordinals_and_frame_rate_text():
    words = " ".join(frame_plan.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112))
    assert words == "1st 2nd 3rd 4th 11th 12th 13th 21st 22nd 23rd 101st 111th 112th"
    assert frame_plan.step_text(60, 2, 24.0) == "60 frames: every 2nd of 24 fps = 12 fps"
    assert frame_plan.step_text(40, 3, 30 / 1.001) == "40 frames: every 3rd of 29.97 fps = 9.99 fps"
    assert frame_plan.step_text(25, 2, 25.0) == "25 frames: every 2nd of 25 fps = 12.5 fps"
    assert frame_plan.step_text(120, 1, 24.0) == "120 frames: every frame at 24 fps"


def test_the_window_line_counts_the_engines_windows_and_their_work():
    assert frame_plan.window_text(60, 16, 4) == "5 windows of 16 (overlap 4), about 5.0x the work of one 16-frame job"
    assert frame_plan.window_count(60, 16, 4) == len(windows.context_windows(60, 16, 4)) == 5
    assert frame_plan.window_text(40, 16, 0) == "3 windows of 16 (overlap 0), about 3.0x the work of one 16-frame job"
    assert frame_plan.window_text(40, 24, 8) == "2 windows of 24 (overlap 8), about 3.0x the work of one 16-frame job"
    assert frame_plan.window_text(16, 16, 4) is None  # one window: no line
    assert frame_plan.window_text(30, 32, 4) is None
    assert frame_plan.relative_cost(16, 16, 4) == 1.0
    assert frame_plan.relative_cost(8, 16, 4) == 0.5  # one pass over 8 frames
    assert frame_plan.relative_cost(32, 32, 4) == 2.0  # one pass over 32 frames
    assert frame_plan.relative_cost(256, 16, 4) == frame_plan.window_count(256, 16, 4)


def test_windows_are_sent_whenever_the_engine_would_window_the_job():
    assert not frame_plan.sends_windows(16, 16)  # one pass: an older backend still takes the job
    assert frame_plan.sends_windows(17, 16)
    assert frame_plan.sends_windows(20, 24)  # the engine's own 16-frame window would split it: say 24
    assert frame_plan.sends_windows(12, 8)
    assert not frame_plan.sends_windows(8, 8)
    with pytest.raises(ValueError, match=r"overlap \(16\) must be smaller than the window length \(16\): lower"):
        frame_plan.check_windows(16, 16)
    frame_plan.check_windows(16, 15)


def test_inversion_is_refused_when_it_would_need_windows():
    with pytest.raises(ValueError, match="DDIM inversion works on one window only, and this job has 60 frames"):
        frame_plan.check_inversion(60, 16, "inversion")
    frame_plan.check_inversion(16, 16, "inversion")
    frame_plan.check_inversion(60, 16, "single-step")


def test_each_generated_frame_is_held_until_the_next_sampled_frame():
    files = [f"f{index:03d}.png" for index in range(60)]
    held = sequencer.element_files(files, frame_plan.step_frames(1, 120, 2), 1, 120)
    assert held == [name for name in files for _ in range(2)]  # 120 scene frames, the last one held to frame 120
    assert sequencer.element_files(["a", "b", "c", "d"], [1, 4, 7, 10], 1, 11) == list("aaabbbcccdd")


# ---- settings, planning and the panel in Blender -------------------------------------------------------------------
def long_shot(step: int = 2) -> bpy.types.Scene:
    scene = animated_scene(frames=SHOT_FRAMES)
    scene.render.fps, scene.render.fps_base = 24, 1.0
    settings = configure_job(scene)
    settings.frame_mode, settings.frame_step = "STEP", step
    return scene


def test_step_plans_every_nth_frame_at_the_scenes_rate_over_n(addon):
    scene = long_shot()
    settings = scene.motionclone
    assert jobs.sampled_frames(scene, settings) == list(range(1, 120, 2))
    assert jobs.job_fps(scene, settings) == 12.0
    params = jobs.request_params(settings, 7, 64, 48, jobs.job_fps(scene, settings), 60)
    assert (params["num_frames"], params["fps"]) == (60, 12.0)
    assert (params["context_length"], params["context_overlap"]) == (16, 4)
    scene.render.fps, scene.render.fps_base = 30, 1.001
    settings.frame_step = 3
    assert jobs.job_fps(scene, settings) == pytest.approx(30 / 1.001 / 3)
    settings.frame_mode = "SPREAD"  # today's behaviour: the frame count spread, the scene's rate, one pass
    assert jobs.sampled_frames(scene, settings) == reference.sample_frames(1, 120, 4)
    assert jobs.job_fps(scene, settings) == pytest.approx(30 / 1.001)
    params = jobs.request_params(settings, 7, 64, 48, 24.0)
    assert params["num_frames"] == 4 and "context_length" not in params and "context_overlap" not in params


def test_a_bad_step_or_window_stops_generate_with_what_to_do(addon):
    scene = long_shot()
    scene.frame_end = 600
    with pytest.raises(RuntimeError, match=r"gives 300 frames, more than the 256 .* raise the frame step to 3"):
        bpy.ops.motionclone.generate()  # reported as an error (raised in background mode)
    scene.frame_end = 120
    scene.motionclone.context_overlap = 16
    with pytest.raises(ValueError, match="lower Overlap under Advanced"):
        jobs.plan_job(bpy.context, scene)
    scene.motionclone.context_overlap, scene.motionclone.motion_source = 4, "inversion"
    with pytest.raises(ValueError, match="or the Single step motion source"):
        jobs.plan_job(bpy.context, scene)
    assert len(scene.motionclone.jobs) == 0


def drawn(context) -> list:
    calls = []
    panels.draw_motionclone(RecordingLayout(calls), context)
    return calls


def labels(calls: list) -> list[tuple[str, str]]:
    return [(kwargs["text"], kwargs.get("icon", "")) for name, _, kwargs in calls if name == "label"]


def props(calls: list) -> set[str]:
    return {args[1] for name, args, _ in calls if name == "prop"}


def test_the_panel_shows_the_step_frame_rate_and_windows(addon):
    scene = long_shot()
    scene.motionclone.show_advanced = True
    calls = drawn(bpy.context)
    assert ("60 frames: every 2nd of 24 fps = 12 fps", "TIME") in labels(calls)
    window_line = "5 windows of 16 (overlap 4), about 5.0x the work of one 16-frame job"
    assert (window_line, "SEQ_STRIP_DUPLICATE") in labels(calls)
    assert {"frame_mode", "frame_step", "context_length", "context_overlap"} <= props(calls)
    assert "num_frames" not in props(calls)  # with a step the count follows from the range: shown, not edited

    scene.motionclone.frame_step = 12  # 10 frames: one window, no window line
    assert [text for text, _ in labels(drawn(bpy.context)) if "window" in text] == []
    assert ("10 frames: every 12th of 24 fps = 2 fps", "TIME") in labels(drawn(bpy.context))


def test_the_panel_shows_spread_as_before_and_problems_as_errors(addon):
    scene = long_shot()
    settings = scene.motionclone
    settings.frame_mode = "SPREAD"
    calls = drawn(bpy.context)
    assert "num_frames" in props(calls) and "frame_step" not in props(calls)
    assert not any("frames:" in text or "windows" in text for text, _ in labels(calls))
    settings.num_frames = 40  # spread frames beyond the window are windowed too
    assert ("3 windows of 16 (overlap 4), about 3.0x the work of one 16-frame job", "SEQ_STRIP_DUPLICATE") in labels(
        drawn(bpy.context)
    )

    settings.frame_mode = "STEP"
    scene.frame_end = 600
    errors = [text for text, icon in labels(drawn(bpy.context)) if icon == "ERROR"]
    assert len(errors) == 1 and "more than the 256" in errors[0] and "raise the frame step to 3" in errors[0]
    scene.frame_end = 120
    settings.context_overlap = 16
    errors = [text for text, icon in labels(drawn(bpy.context)) if icon == "ERROR"]
    assert len(errors) == 1 and "lower Overlap" in errors[0]
    settings.context_overlap, settings.motion_source = 4, "inversion"
    errors = [text for text, icon in labels(drawn(bpy.context)) if icon == "ERROR"]
    assert len(errors) == 1 and "DDIM inversion works on one window only" in errors[0]


def test_use_job_settings_brings_back_the_step_and_windows(addon):
    scene = long_shot(step=3)
    settings = scene.motionclone
    settings.context_length, settings.context_overlap = 24, 6
    job = settings.jobs.add()
    job.frame_mode, job.frame_step = "STEP", 3
    job.frame_start, job.frame_end = 1, 120
    job.params_json = json.dumps(jobs.request_params(settings, 7, 64, 48, 8.0, 40))
    settings.frame_mode, settings.frame_step, settings.num_frames = "SPREAD", 2, 5
    settings.context_length, settings.context_overlap = 16, 4

    changed = jobs.use_job_settings(settings, job)
    assert (settings.frame_mode, settings.frame_step, settings.num_frames) == ("STEP", 3, 5)
    assert (settings.context_length, settings.context_overlap) == (24, 6)
    assert {"frame_mode", "frame_step", "context_length", "context_overlap"} <= set(changed)

    old = settings.jobs.add()  # a job made before the frame step: spread, its frame count as sent
    old.frame_start, old.frame_end = 1, 8
    old.params_json = json.dumps({"prompt": "a fox", "seed": 3, "num_frames": 6, "width": 64, "height": 48})
    jobs.use_job_settings(settings, old)
    assert (settings.frame_mode, settings.num_frames) == ("SPREAD", 6)
    assert (settings.context_length, settings.context_overlap) == (24, 6)  # not sent: left as they were


# ---- a 120-frame shot through a real backend -----------------------------------------------------------------------
def test_every_2nd_frame_of_a_120_frame_shot_makes_a_12_fps_job_whose_strip_spans_the_shot(addon, backend, monkeypatch):
    addon.endpoint = backend.endpoint
    scene = long_shot(step=2)
    settings = scene.motionclone
    rendered, sent, received = [], {}, {}
    render_still = reference._render_still
    submit = client.Client.submit

    def record_submit(self, frames, params, **kwargs):
        sent["shape"], sent["fps"] = frames.shape, kwargs["fps"]
        return submit(self, frames, params, **kwargs)

    def record_render(scene, frame, path):
        rendered.append(frame)
        return render_still(scene, frame, path)

    apply_result = event_pump.apply_result

    def record_result(context, current, job, event, **kwargs):
        received["metadata"], received["fps"] = event.message.metadata, event.message.fps
        received["count"] = int(event.message.frames.shape[0])
        apply_result(context, current, job, event, **kwargs)

    monkeypatch.setattr(reference, "_render_still", record_render)
    monkeypatch.setattr(event_pump, "apply_result", record_result)
    monkeypatch.setattr(client.Client, "submit", record_submit)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    assert rendered == list(range(1, 121, 2))  # only the sampled frames are rendered
    assert sent["shape"][0] == 60 and sent["fps"] == 12.0  # the reference is a 12 fps clip
    job = settings.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 600), job.message
    assert job.state == "DONE", job.message

    params = json.loads(job.params_json)
    assert (params["num_frames"], params["fps"]) == (60, 12.0)
    assert (params["context_length"], params["context_overlap"]) == (16, 4)
    assert json.loads(job.sampled_frames) == list(range(1, 121, 2))
    assert (job.frame_mode, job.frame_step) == ("STEP", 2)
    assert received["count"] == 60 and received["fps"] == 12.0
    assert len(list(Path(job.result_dir).glob("*.png"))) == 60
    # The backend used every one of the 60 frames it was sent, in order, at the rate the add-on sent them.
    assert received["metadata"]["reference_frames"] == {"indices": list(range(60)), "source_fps": 12.0}
    assert received["metadata"]["context_windows"] == windows.context_windows(60, 16, 4)  # the 5 the panel counted

    strip = compat.strips(scene.sequence_editor)[job.strip_name]
    assert (strip.frame_final_start, strip.frame_final_duration) == (1, SHOT_FRAMES)
    names = [element.filename for element in strip.elements]
    assert len(names) == SHOT_FRAMES and len(set(names)) == 60
    assert names == [name for name in sorted(set(names)) for _ in range(2)]  # each frame held for two scene frames
    assert (scene.render.fps, scene.render.fps_base) == (24, 1.0)  # the strip plays at the scene's rate
