"""The add-on in real Blender (bpy 5.0.1, background mode) against a real backend process.

Timers never fire in background mode, so the tests call the pump the timer would call.
"""

import json
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest

from blender_addon import compat
from tests.server_process import ServerProcess

ADDON = "blender_addon"


def enable_addon():
    import addon_utils

    addon_utils.enable(ADDON, default_set=True, handle_error=lambda error: (_ for _ in ()).throw(error))
    return bpy.context.preferences.addons[ADDON].preferences


def disable_addon():
    import addon_utils

    addon_utils.disable(ADDON, default_set=True)


@pytest.fixture
def addon(tmp_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    preferences = enable_addon()
    preferences.output_dir = str(tmp_path / "results")
    preferences.timeout = 3.0
    yield preferences
    disable_addon()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("addon-backend")).start()
    yield server
    server.kill()


def animated_scene(frames: int = 8) -> bpy.types.Scene:
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames
    scene.render.resolution_x, scene.render.resolution_y = 640, 480
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(-2, 0, 0))
    cube = bpy.context.active_object
    cube.keyframe_insert("location", frame=1)
    cube.location.x = 2
    cube.keyframe_insert("location", frame=frames)
    bpy.ops.object.camera_add(location=(0, -8, 0), rotation=(np.pi / 2, 0, 0))
    scene.camera = bpy.context.active_object
    return scene


def render_snapshot(scene):
    render = scene.render
    return (
        render.engine,
        render.resolution_x,
        render.resolution_y,
        render.resolution_percentage,
        render.filepath,
        render.image_settings.file_format,
        scene.frame_start,
        scene.frame_end,
        scene.frame_current,
        scene.camera.name,
    )


def strip_count(scene) -> int:
    return 0 if scene.sequence_editor is None else len(compat.strips(scene.sequence_editor))


def pump_until(condition, timeout: float):
    from blender_addon import event_pump

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event_pump.pump()
        if condition():
            return True
        time.sleep(0.05)
    return False


def configure_job(scene, prompt="a fox", steps=2, frames=4):
    settings = scene.motionclone
    settings.prompt = prompt
    settings.num_frames = frames
    settings.long_side = 64
    settings.use_advanced = True
    settings.steps = steps
    settings.guidance_steps = 1
    settings.seed = 7
    return settings


def test_register_and_unregister_twice_and_preferences_round_trip():
    for _ in range(2):
        preferences = enable_addon()
        preferences.endpoint = "tcp://127.0.0.1:5999"
        preferences.timeout = 2.5
        assert bpy.context.preferences.addons[ADDON].preferences.endpoint == "tcp://127.0.0.1:5999"
        assert hasattr(bpy.types.Scene, "motionclone")
        assert hasattr(bpy.ops.motionclone, "generate")
        disable_addon()
        assert not hasattr(bpy.types.Scene, "motionclone")
        assert "MOTIONCLONE_PT_view3d" not in dir(bpy.types)


def test_full_job_puts_the_result_strip_into_the_sequencer(addon, backend, monkeypatch):
    from blender_addon import event_pump

    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    before = render_snapshot(scene)
    settings = configure_job(scene)
    received = {}
    original = event_pump.apply_result

    def record(context, current, job, event):
        received["frames"] = np.array(event.frames())
        original(context, current, job, event)

    monkeypatch.setattr(event_pump, "apply_result", record)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    job = settings.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120), job.message
    assert job.state == "DONE", job.message
    strip = compat.strips(scene.sequence_editor)[job.strip_name]
    assert strip.channel == 1
    assert (strip.frame_final_start, strip.frame_final_duration) == (1, 8)
    assert strip["motionclone_prompt"] == "a fox"
    assert strip["motionclone_seed"] == 7
    assert strip["motionclone_job_id"] == job.job_id and len(job.job_id) == 32
    assert strip["motionclone_config"] == "camera"
    assert strip["motionclone_backend_version"]
    files = sorted(Path(job.result_dir).glob("*.png"))
    assert len(files) == 4
    on_disk = []
    for path in files:
        image = bpy.data.images.load(str(path), check_existing=False)
        pixels = np.empty(image.size[0] * image.size[1] * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        on_disk.append(np.round(pixels.reshape(image.size[1], image.size[0], 4)[::-1, :, :3] * 255).astype(np.uint8))
        bpy.data.images.remove(image)
    assert np.array_equal(np.stack(on_disk), received["frames"])
    assert render_snapshot(scene) == before
    assert scene.motionclone.seed == 7
    preview = bpy.data.images.get("MotionClone Preview")  # the server sends one every 2 steps here
    assert preview is not None and preview.size[0] > 0 and Path(job.preview_path).is_file()


class BrokenEvent:
    """A backend message the add-on cannot apply: its payload lacks every field."""

    kind = "progress"
    job_id = None

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.message = object()
        self.payload = b""


def fill_every_channel(scene, frames: int) -> None:
    editor = scene.sequence_editor_create()
    for channel in range(1, 129):
        compat.new_effect_strip(editor, f"busy {channel}", "COLOR", channel, 1, frames)


def test_the_pump_survives_failures_and_stores_the_result_once_they_are_fixed(addon, backend, tmp_path, monkeypatch):
    """An unwritable output folder, a sequencer without a free channel and a malformed event each fail only what
    they touch: the pump keeps running, the result stays on the backend, and Fetch Result Again stores it."""
    from blender_addon import event_pump, session

    addon.endpoint = backend.endpoint
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the results folder should be")
    addon.output_dir = str(blocked)
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    job = settings.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120), job.message
    assert job.state == "FAILED" and "could not be stored" in job.message and "Fetch Result Again" in job.message

    # A malformed event on top: reported on its job, and the pump goes on.
    client = session.get_session().client
    poll = client.poll_events
    monkeypatch.setattr(client, "poll_events", lambda: [BrokenEvent(job.request_id), *poll()])
    assert event_pump.pump() in (event_pump.PUMP_INTERVAL_ACTIVE, event_pump.PUMP_INTERVAL_IDLE)
    assert "Could not apply a 'progress' update" in job.message
    monkeypatch.setattr(client, "poll_events", poll)

    # The folder is fixed, but every channel is taken: the result is fetched again and fails again, kept.
    addon.output_dir = str(tmp_path / "results")
    fill_every_channel(scene, 8)
    assert bpy.ops.motionclone.fetch_again(index=0) == {"FINISHED"}
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 60), job.message
    assert job.state == "FAILED" and "channel" in job.message

    # With a free channel the third fetch stores it: the backend kept the result through both failures.
    strips = compat.strips(scene.sequence_editor)
    strips.remove(strips["busy 1"])
    assert bpy.ops.motionclone.fetch_again(index=0) == {"FINISHED"}
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 60), job.message
    assert job.state == "DONE", job.message
    assert strips[job.strip_name].channel == 1 and len(list(Path(job.result_dir).glob("*.png"))) == 4

    # The same result again (a repeated fetch) changes nothing: a finished job is never set back.
    strip_count = len(strips)
    client.fetch(job.job_id)
    pump_until(lambda: False, 2.0)
    assert job.state == "DONE" and len(strips) == strip_count


def denoising_job(addon, backend, steps: int):
    """A job generated on `backend` that has reached its denoising steps."""
    addon.endpoint = backend.endpoint
    settings = configure_job(animated_scene(frames=8), steps=steps)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(lambda: job.state == "RUNNING" and job.stage == "denoise", 120), job.message
    return job


def test_test_connection_keeps_a_running_job_and_new_settings_take_it_along(addon, backend):
    from blender_addon import session

    job = denoising_job(addon, backend, steps=40)
    client = session.get_session().client
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert session.get_session().client is client  # only a probe: the client and the jobs it follows stay
    assert "Connected: MotionClone backend" in session.get_session().connection.describe()
    # The backend's answer to the probe's status request: this job runs, none waits.
    answered = pump_until(lambda: session.get_session().connection.describe().endswith("1 running, 0 waiting"), 10)
    assert answered, session.get_session().connection
    step_seen = job.progress
    assert pump_until(lambda: job.progress > step_seen, 60), job.message
    # Another timeout is another client; the running job moves to it and still finishes there.
    addon.timeout = 4.0
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert session.get_session().client is not client
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120), job.message
    assert job.state == "DONE", job.message


def job_whose_frames_are_being_written(monkeypatch, release: threading.Event):
    """Generate one job and pump until its result's frames are being written; the write goes on once `release` is
    set. Returns (scene, job)."""
    from blender_addon import result_files

    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    writing = threading.Event()
    write = result_files.write_result_frames

    def slow_disk(*args):
        writing.set()
        release.wait(30)
        return write(*args)

    monkeypatch.setattr(result_files, "write_result_frames", slow_disk)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(writing.is_set, 120), job.message
    return scene, job


def test_result_frames_go_to_disk_on_a_thread_of_their_own_while_the_pump_keeps_returning(addon, backend, monkeypatch):
    """A long result is hundreds of PNGs: the pump, which runs on Blender's main thread, must not wait for them."""
    from blender_addon import event_pump, session

    addon.endpoint = backend.endpoint
    release = threading.Event()
    scene, job = job_whose_frames_are_being_written(monkeypatch, release)
    started = time.monotonic()
    assert event_pump.pump() == event_pump.PUMP_INTERVAL_ACTIVE  # returns at once, the job still active
    assert time.monotonic() - started < 1.0
    assert job.state == "RUNNING" and job.message == "Saving the 4 result frames" and strip_count(scene) == 0
    release.set()
    assert pump_until(lambda: job.state == "DONE", 30), job.message
    assert session.get_session().result_writes == [] and job.strip_name in compat.strips(scene.sequence_editor)


def test_a_result_written_after_its_backend_went_away_is_still_placed_and_done(addon, backend, monkeypatch):
    """The local backend stopped (its client closed) while the frames went to disk: the strip is added and the job is
    done, not reported as a result that could not be stored (whose Fetch Again would add a second strip)."""
    from blender_addon import session

    addon.endpoint = backend.endpoint
    release = threading.Event()
    scene, job = job_whose_frames_are_being_written(monkeypatch, release)
    session.get_session().close()  # what on_local_down does with the client
    release.set()
    assert pump_until(lambda: job.state != "RUNNING", 30), job.message
    assert job.state == "DONE", job.message
    assert job.strip_name in compat.strips(scene.sequence_editor)


def test_the_result_lands_in_the_scene_the_sequencer_shows(addon, backend):
    """5.x: the sequencer can show another scene than the one animated (`context.sequencer_scene`); the result
    goes there. Blender 4.2 has no such setting: the result goes to the animated scene."""
    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    edit = bpy.data.scenes.new("Edit")
    workspace = bpy.context.workspace
    shows_other_scene = hasattr(workspace, "sequencer_scene")
    if shows_other_scene:
        workspace.sequencer_scene = edit
    settings = configure_job(scene)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120), job.message
    assert job.state == "DONE", job.message
    target, other = (edit, scene) if shows_other_scene else (scene, edit)
    assert job.strip_name in compat.strips(target.sequence_editor)
    assert other.sequence_editor is None or job.strip_name not in compat.strips(other.sequence_editor)


def test_a_result_whose_job_was_removed_is_still_stored_and_placed(addon, backend):
    """Undo or a removed list entry takes the job away while it runs: its result still gets a folder and a strip."""
    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    settings = configure_job(scene, prompt="a lost fox", steps=6)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(lambda: bool(job.job_id), 60), job.message
    job_id, made_for = job.job_id, (job.frame_start, job.frame_end, job.sampled_frames)
    assert json.loads(job.sampled_frames) != [1, 2, 3, 4]  # 4 frames spread over the scene's 8
    settings.jobs.remove(0)
    assert pump_until(lambda: any(item.job_id == job_id and item.state == "DONE" for item in settings.jobs), 120)
    recovered = next(item for item in settings.jobs if item.job_id == job_id)
    assert recovered.state == "DONE" and recovered.message.startswith("Recovered"), recovered.message
    assert recovered.prompt == "a lost fox" and recovered.seed == 7
    # On the frames it was made for, as its entry said, not one scene frame per result frame from the start.
    assert (recovered.frame_start, recovered.frame_end, recovered.sampled_frames) == made_for
    strip = compat.strips(scene.sequence_editor)[recovered.strip_name]
    assert (strip.frame_final_start, strip.frame_final_end) == (made_for[0], made_for[1] + 1)
    assert len(list(Path(recovered.result_dir).glob("*.png"))) == 4


def test_undoing_a_result_leaves_the_job_done_with_its_frames_and_says_how_to_redo(addon, backend, monkeypatch):
    """Ctrl+Z after a result takes back its step: the strip goes and the job is running again in Blender's data,
    while the backend, which handed the result over, has forgotten the job. Background mode has no undo stack, so
    the test sets the data back as undo does and then runs the add-on's undo handler."""
    import blender_addon
    from blender_addon import event_pump, session

    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    settings = configure_job(scene, prompt="an undone fox", steps=6)
    results = []
    apply_result = event_pump.apply_result
    monkeypatch.setattr(event_pump, "apply_result", lambda *args: results.append(args[3]) or apply_result(*args))
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120) and job.state == "DONE", job.message
    folder, frames = job.result_dir, sorted(Path(job.result_dir).glob("*.png"))
    editor = scene.sequence_editor

    def undo_the_result() -> None:
        for strip in list(compat.strips(editor)):
            compat.strips(editor).remove(strip)
        job.state, job.result_dir, job.strip_name, job.progress = "RUNNING", "", "", 0.5  # the data before it

    def check_done() -> None:
        assert job.state == "DONE" and job.result_dir == folder, job.message
        assert "taken back" in job.message and folder in job.message and "Redo" in job.message
        assert sorted(Path(folder).glob("*.png")) == frames and len(frames) == 4
        assert len(compat.strips(editor)) == 0  # the undone strip is not put back behind the artist's back

    undo_the_result()
    blender_addon._on_undo_redo()
    assert pump_until(lambda: job.state != "RUNNING", 30), job.message
    check_done()

    # The same result once more (an acknowledgement that never reached the backend): no second folder or strip.
    undo_the_result()
    client = session.get_session().client
    monkeypatch.setattr(client, "poll_events", lambda: [results[0]])
    event_pump.pump()
    check_done()
    assert len(results) == 1 and len(list(Path(folder).parent.iterdir())) == 1


def test_undo_with_connection_settings_that_stopped_working_shows_why_instead_of_raising(addon, monkeypatch):
    """Ctrl+Z asks the backend about running jobs; when the preferences changed since (a key file that cannot be
    read, online access turned off), the panel says so rather than every undo printing a traceback."""
    import blender_addon
    from blender_addon import session

    settings = configure_job(animated_scene(frames=8))
    job = settings.jobs.add()
    job.state, job.job_id = "RUNNING", "a" * 32
    current = session.get_session()
    monkeypatch.setattr(current, "client", object())

    def unusable(context):
        raise RuntimeError("Cannot read the server key file: check it in the preferences.")

    monkeypatch.setattr(current, "prepare", unusable)
    blender_addon._on_undo_redo()
    assert current.connection.message == "Cannot read the server key file: check it in the preferences."


def test_two_seeds_in_one_click_then_use_their_settings_and_show_their_strip(addon, backend):
    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    settings = configure_job(scene, prompt="a fox")
    settings.seed_count = 2
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    assert [job.seed for job in settings.jobs] == [7, 8] and settings.seed == 7
    assert json.loads(settings.jobs[0].params_json)["seed"] == 7
    assert pump_until(lambda: all(job.state in ("DONE", "FAILED") for job in settings.jobs), 180)
    assert [job.state for job in settings.jobs] == ["DONE", "DONE"]
    assert settings.seed == 7  # the panel keeps the seed it showed: the next Generate does not repeat seed 8
    second = settings.jobs[1]

    settings.prompt, settings.seed, settings.steps, settings.use_advanced = "something else", 99, 50, False
    settings.active_job = 1
    assert bpy.ops.motionclone.use_job_settings() == {"FINISHED"}
    assert (settings.prompt, settings.seed, settings.use_advanced, settings.steps) == ("a fox", 8, True, 2)
    assert (settings.guidance_steps, settings.num_frames, settings.long_side) == (1, 4, 64)
    assert (settings.use_scene_range, settings.frame_start, settings.frame_end) == (False, 1, 8)

    # Redo with New Seed runs the selected job's settings, all of them, not the panel's.
    settings.long_side, settings.steps, settings.num_frames = 128, 50, 6
    assert bpy.ops.motionclone.redo() == {"FINISHED"}
    redone = json.loads(settings.jobs[2].params_json)
    assert (redone["prompt"], redone["num_inference_steps"], redone["num_frames"]) == ("a fox", 2, 4)
    assert max(redone["width"], redone["height"]) == 64 and redone["seed"] == settings.jobs[2].seed != 8
    assert pump_until(lambda: settings.jobs[2].state in ("DONE", "FAILED"), 180)
    assert settings.jobs[2].state == "DONE", settings.jobs[2].message

    settings.active_job = 1
    scene.frame_current = 5
    assert bpy.ops.motionclone.show_result() == {"FINISHED"}
    strip = compat.strips(scene.sequence_editor)[second.strip_name]
    assert strip.select and scene.sequence_editor.active_strip == strip
    assert scene.frame_current == strip.frame_final_start == 1
    assert not compat.strips(scene.sequence_editor)[settings.jobs[0].strip_name].select
    assert bpy.ops.motionclone.open_result_folder.poll()
    # Last: adding a job moves the collection, and Python references to its items go stale.
    settings.jobs.add()  # a job record without a prompt: Redo is greyed out, not a traceback
    settings.active_job = len(settings.jobs) - 1
    assert not bpy.ops.motionclone.redo.poll()
    settings.jobs.remove(settings.active_job)


def test_the_status_bar_shows_running_jobs_and_reports_the_ones_that_end(addon, backend):
    from blender_addon import event_pump, panels, session

    assert panels.draw_status in bpy.types.STATUSBAR_HT_header._dyn_ui_initialize()
    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    # Longer than the tiny preset's text encoder reads (a character per token): the job keeps the backend's note.
    settings = configure_job(scene, prompt="a fox " * 20 + "at the end", steps=6)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(lambda: job.state == "RUNNING" and job.stage == "denoise", 120), job.message

    def drawn():
        calls = []
        panels.draw_status(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
        return calls

    running = drawn()
    assert [name for name, _, _ in running] == ["progress"]
    assert running[0][2]["factor"] == job.progress and "seed 7" in running[0][2]["text"]
    assert pump_until(lambda: job.state == "DONE", 120), job.message
    ended = drawn()
    assert [name for name, _, _ in ended] == ["label"] and "done: Added strip" in ended[0][2]["text"]
    assert job.notes.startswith("`prompt` is 90 tokens long") and "at the end' was left out" in job.notes
    when, text = session.get_session().endings[0]
    session.get_session().endings[0] = (when - event_pump.ENDING_SHOWN_S, text)  # ten seconds later
    assert drawn() == []


def test_presets_save_and_restore_the_look_but_not_the_seed(addon):
    from blender_addon import presets

    scene = animated_scene(frames=8)
    settings = configure_job(scene, prompt="a red fox in snow", steps=30)
    settings.config, settings.long_side = "object-fast", 256
    name = f"Test preset {time.monotonic_ns()}"  # never one the user made
    try:
        assert bpy.ops.motionclone.preset_add(name=name) == {"FINISHED"}
        path = Path(bpy.utils.preset_find(name, presets.PRESET_SUBDIR, display_name=True))
        settings.prompt, settings.config, settings.long_side, settings.steps, settings.seed = "x", "camera", 512, 3, 99
        assert bpy.ops.script.execute_preset(filepath=str(path), menu_idname="MOTIONCLONE_MT_presets") == {"FINISHED"}
        assert (settings.prompt, settings.config, settings.long_side, settings.steps) == (
            "a red fox in snow",
            "object-fast",
            256,
            30,
        )
        assert settings.seed == 99  # the seed is per run, not part of a look
    finally:
        leftover = bpy.utils.preset_find(name, presets.PRESET_SUBDIR, display_name=True)
        if leftover:
            Path(leftover).unlink()


def test_cancel_reaches_the_backend(addon, backend):
    job = denoising_job(addon, backend, steps=300)
    assert bpy.ops.motionclone.cancel() == {"FINISHED"}
    assert pump_until(lambda: job.state == "CANCELLED", 30), job.message


def test_a_cancel_the_replaced_client_never_delivered_is_sent_by_the_new_one(addon, backend):
    """The backend settings changed right after Cancel (the endpoint fixed, a longer timeout), before the old
    client delivered it: the new client follows the job, and must cancel it too rather than let it run on."""
    from blender_addon import session

    job = denoising_job(addon, backend, steps=300)
    old_client = session.get_session().client
    old_client.cancel = lambda job_id: "never sent"  # as if the connection dropped before it went out
    assert bpy.ops.motionclone.cancel() == {"FINISHED"}
    addon.timeout += 1.0  # other settings: the next use replaces the client
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert session.get_session().client is not old_client
    assert pump_until(lambda: job.state == "CANCELLED", 30), job.message


def test_jobs_saved_before_the_backend_accepted_them_are_followed_or_failed_when_the_file_opens_again(addon, backend):
    """Saved while 'Sent to the backend', a job has no job id in the file. Opened again in the same Blender, it takes
    the id the backend answered meanwhile; one sent by an earlier Blender fails with what to do, instead of
    staying 'Sent' for ever (no Cancel, no Remove)."""
    from blender_addon import session

    addon.endpoint = backend.endpoint
    settings = configure_job(animated_scene(frames=8), steps=4)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(lambda: job.job_id != "", 60), job.message
    accepted_id = job.job_id
    job.job_id, job.state = "", "SUBMITTED"  # as the file saved before the answer holds it
    earlier = settings.jobs.add()
    earlier.request_id, earlier.state, earlier.message = "sent-by-an-earlier-blender", "SUBMITTED", "Sent"
    session.refetch_active_jobs(bpy.context)
    assert (job.job_id, job.state) == (accepted_id, "QUEUED")
    assert earlier.state == "FAILED" and "may or may not have reached the backend" in earlier.message
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120) and job.state == "DONE", job.message
    # A closed client's unanswered jobs will never hear back: a file that holds one fails it when opened again.
    session.get_session().sent["unanswered"] = ""
    session.get_session().close()
    assert session.get_session().sent == {job.request_id: accepted_id}


def test_a_failed_second_seed_leaves_the_panel_on_the_seed_it_showed(addon, monkeypatch):
    from blender_addon import session

    settings = configure_job(animated_scene(frames=8), prompt="a fox")
    settings.seed, settings.seed_count = 7, 2
    sent = []

    def submit(context, frames, params, fps, condition):
        if sent:
            raise RuntimeError("the backend refused the second job")
        sent.append(params["seed"])
        return "request-1"

    monkeypatch.setattr(session.get_session(), "submit", submit)
    with pytest.raises(RuntimeError, match="refused the second job"):  # reported as an error by the operator
        bpy.ops.motionclone.generate()
    assert sent == [7] and settings.seed == 7


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_backend_that_is_not_running_gives_a_clear_error_within_the_timeout(addon):
    from blender_addon import session

    addon.endpoint = f"tcp://127.0.0.1:{free_port()}"
    addon.timeout = 1.5
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    started = time.monotonic()
    assert bpy.ops.motionclone.generate() == {"FINISHED"}  # returns at once; the client works in the background
    assert time.monotonic() - started < 10
    job = settings.jobs[0]
    assert pump_until(lambda: job.state == "FAILED", 1.5 + 3.0)
    connection = session.get_session().connection
    assert connection.state == "unreachable"
    assert "No MotionClone backend answered" in connection.message and "motionclone serve" in connection.message
    assert "No MotionClone backend answered" in job.message


class RecordingLayout:
    """Stands in for bpy.types.UILayout: records every call; containers return new recorders."""

    def __init__(self, calls: list):
        self.calls = calls
        self.active = True

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name in ("row", "column", "box", "split", "column_flow", "grid_flow"):
                return RecordingLayout(self.calls)
            if name == "operator":
                return SimpleNamespace()  # operator properties the panel may set
            return None

        return record


def test_panels_draw_against_a_recording_layout(addon):
    from blender_addon import panels

    scene = animated_scene()
    settings = configure_job(scene)
    settings.show_advanced = True
    job = settings.jobs.add()
    job.state, job.progress, job.message, job.prompt = "RUNNING", 0.5, "Denoise 3/6", "a fox"
    calls = []
    panels.draw_motionclone(RecordingLayout(calls), bpy.context)
    names = [name for name, _, _ in calls]
    props = {args[1] for name, args, _ in calls if name == "prop"}
    assert {"prompt", "negative_prompt", "config", "seed", "randomize_seed", "steps", "cfg_scale"} <= props
    assert ("operator", ("motionclone.generate",), {"icon": "PLAY"}) in calls
    assert "template_list" in names
    progress = [kwargs for name, _, kwargs in calls if name == "progress"]
    assert progress == [{"factor": 0.5, "type": "BAR", "text": "Denoise 3/6"}]

    # Without an Output folder an unsaved file's results go to the add-on's folder, which an uninstall deletes: the
    # panel says so.
    def info_notes(calls):
        return [kwargs["text"] for name, _, kwargs in calls if name == "label" and kwargs.get("icon") == "INFO"]

    assert not bpy.data.filepath and addon.output_dir and not info_notes(calls)
    output_dir, addon.output_dir = addon.output_dir, ""
    unsaved = []
    panels.draw_motionclone(RecordingLayout(unsaved), bpy.context)
    assert info_notes(unsaved)[0].startswith("This file is not saved: results go to the")
    addon.output_dir = output_dir
    assert "template_icon" not in names  # no preview has arrived yet
    image = bpy.data.images.new("MotionClone Preview", 8, 8)
    image.preview_ensure()
    job.preview_path = "preview.png"
    calls.clear()
    panels.draw_motionclone(RecordingLayout(calls), bpy.context)
    icons = [kwargs for name, _, kwargs in calls if name == "template_icon"]
    assert icons == [{"icon_value": image.preview.icon_id, "scale": 6.0}]

    # A finished job's notes, wrapped: a label shows one line.
    job.state, job.message, job.notes = "DONE", "Added strip", "word " * 30 + "\nA second note"
    calls.clear()
    panels.draw_motionclone(RecordingLayout(calls), bpy.context)
    labels = [(kwargs["text"], kwargs["icon"]) for name, _, kwargs in calls if name == "label" and "icon" in kwargs]
    notes = labels[labels.index(("Added strip", "CHECKMARK")) + 1 :]
    assert notes[-1] == ("A second note", "ERROR") and notes[0][1] == "ERROR"
    assert len(notes) > 3 and {icon for _, icon in notes[1:-1]} == {"BLANK1"}
    assert all(len(text) <= panels.NOTE_LINE_CHARACTERS for text, _ in notes)
    assert " ".join(text for text, _ in notes[:-1]) == ("word " * 30).strip()


def test_the_panel_offers_the_size_and_config_the_connected_backends_model_was_made_for(addon, backend):
    from blender_addon import model_fit, panels, properties, session

    addon.endpoint = backend.endpoint
    scene = animated_scene()
    settings = scene.motionclone
    settings.config = "blocks"  # the built-in model's config, on a backend that runs the tiny one
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    model = session.get_session().connection.model
    assert model == model_fit.ModelDefaults(64, "camera")  # from the tiny backend's Welcome
    assert settings.long_side == 512  # the panel's default, SD-1.5's size

    calls = []
    panels.draw_motionclone(RecordingLayout(calls), bpy.context)
    hints = [args[0] if args else kwargs["text"] for name, args, kwargs in calls if name == "label"]
    assert "The backend's model is made for 64 px (Size is 512) and the 'camera' Motion config" in hints
    assert ("operator", ("motionclone.use_model_settings",), {"icon": "CHECKMARK"}) in calls

    assert bpy.ops.motionclone.use_model_settings() == {"FINISHED"}
    assert (settings.long_side, settings.config) == (64, "camera")
    assert not bpy.ops.motionclone.use_model_settings.poll()  # nothing left to change
    calls.clear()
    panels.draw_motionclone(RecordingLayout(calls), bpy.context)
    assert ("operator", ("motionclone.use_model_settings",), {"icon": "CHECKMARK"}) not in calls

    # A blocks backend wants its own config; another config that suits SD-1.5 is left alone there.
    configs = [item[0] for item in properties.CONFIG_ITEMS]
    native = {"num_frames": 16, "height": 64, "width": 64}
    blocks = model_fit.ModelDefaults.from_limits({"native_size": native, "default_config": "blocks"}, configs)
    settings.config = "object"
    assert model_fit.use_model_defaults(settings, blocks) == ["config"] and settings.config == "blocks"
    settings.long_side, settings.config = 768, "object"  # a deliberate size on SD-1.5: not pointed out
    sd15 = model_fit.ModelDefaults(512, "camera")
    assert model_fit.mismatch(settings, sd15) is None and model_fit.use_model_defaults(settings, sd15) == []
    settings.long_side = 256
    assert model_fit.mismatch(settings, sd15) == "The backend's model is made for 512 px (Size is 256)"
    # An older backend says nothing about its model, and a config the panel does not offer is left out.
    assert model_fit.mismatch(settings, model_fit.ModelDefaults.from_limits({"max_frames": 1024}, configs)) is None
    unknown = model_fit.ModelDefaults.from_limits({"native_size": native, "default_config": "i2v-rgb"}, configs)
    assert unknown == model_fit.ModelDefaults(64, "")


def test_a_size_or_guided_steps_the_backend_would_refuse_stop_generate_before_the_render(addon):
    """Found before the reference is rendered, named as the panel names them, with what to do."""
    scene = animated_scene()
    settings = configure_job(scene)
    renders = []

    def record(*args):
        renders.append(args)

    bpy.app.handlers.render_pre.append(record)
    try:
        settings.long_side = 500
        with pytest.raises(RuntimeError, match="Size must be a multiple of 8 pixels, got 500: use 496 or 504"):
            bpy.ops.motionclone.generate()
        settings.long_side, settings.steps, settings.guidance_steps = 64, 10, 20
        with pytest.raises(RuntimeError, match=r"Guided steps \(20\) cannot be more than Steps \(10\)"):
            bpy.ops.motionclone.generate()
        settings.guidance_steps = 5
        settings.motion_source, settings.inversion_prompt = "inversion", "a grey figure walking"
        settings.reference_word, settings.new_word = "mannequin", "cat"
        with pytest.raises(RuntimeError, match="'mannequin' is not a word of the Reference prompt"):
            bpy.ops.motionclone.generate()
        settings.reference_word = "Figure"  # any case
        with pytest.raises(RuntimeError, match="'cat' is not a word of the prompt"):
            bpy.ops.motionclone.generate()
    finally:
        bpy.app.handlers.render_pre.remove(record)
    assert renders == [] and len(settings.jobs) == 0


def test_saving_or_loading_during_a_reference_render_stops_it_first_so_the_file_keeps_the_artists_settings(
    addon, tmp_path
):
    """Generate from the UI renders frame by frame with the render's own settings in the scene; the add-on's save_pre
    and load_pre handlers stop such a render (what the modal operator's `stop` does) before Blender writes or leaves
    the file. Modal operators do not run in background mode, so a stand-in takes the operator's place."""
    from blender_addon import jobs, operators

    scene = animated_scene()
    settings = configure_job(scene)
    before = render_snapshot(scene)

    class RunningRender:
        def __init__(self):
            self.render = jobs.camera_render(scene, settings, [1, 2, 3, 4], 64, 48).__enter__()
            self.reason = None
            operators.rendering.append(self)

        def stop(self, context, reason):
            self.reason = reason
            operators.rendering.remove(self)
            self.render.__exit__(None, None, None)

    running = RunningRender()
    running.render.step()
    assert render_snapshot(scene) != before  # mid-render: the scene holds the render's settings
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "saved.blend"))
    assert running.reason == "the file was saved, loaded, undone or redone during it" and operators.rendering == []
    assert render_snapshot(scene) == before
    again = RunningRender()
    again.render.step()
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "saved.blend"))
    assert again.reason is not None and operators.rendering == []
    assert render_snapshot(bpy.context.scene) == before  # what was saved: the artist's settings

    # Disabling the add-on mid-render: Blender frees a modal operator without calling its `cancel`.
    scene, settings = bpy.context.scene, bpy.context.scene.motionclone
    last = RunningRender()
    last.render.step()
    assert render_snapshot(scene) != before
    disable_addon()
    assert last.reason is not None and render_snapshot(scene) == before
    enable_addon()  # the fixture disables it again


def test_a_result_that_arrives_during_a_reference_render_waits_until_the_render_ends(addon, backend):
    """Placing a result pushes an undo step, which would hold the render's temporary settings."""
    from blender_addon import event_pump, jobs, operators, session

    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    settings = configure_job(scene)
    before = render_snapshot(scene)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    render = jobs.camera_render(scene, settings, [1, 2, 3, 4], 64, 48).__enter__()  # a second Generate's render
    render.step()
    stand_in = SimpleNamespace(stop=lambda context, reason: None)
    operators.rendering.append(stand_in)
    try:
        assert pump_until(lambda: any(write.done for write in session.get_session().result_writes), 120), job.message
        event_pump.pump()  # the frames are on disk, but the strip waits
        assert job.state != "DONE" and render_snapshot(scene) != before and strip_count(scene) == 0
        # Finished on the backend: a cancel now would find no job there and mark the finished job failed.
        with pytest.raises(RuntimeError, match="The job has finished and its result is being saved"):
            bpy.ops.motionclone.cancel(index=0)  # greyed out, saying why
    finally:
        operators.rendering.remove(stand_in)
        render.__exit__(None, None, None)
    assert pump_until(lambda: job.state == "DONE", 10), job.message
    assert render_snapshot(scene) == before and job.strip_name in compat.strips(scene.sequence_editor)
    assert session.get_session().result_writes == []


class RecordingWorkspace:
    def __init__(self):
        self.status = []

    def status_text_set(self, text):
        self.status.append(text)


class UIContext:
    """bpy.context with a workspace that records the status bar's text."""

    def __init__(self):
        self.workspace = RecordingWorkspace()

    def __getattr__(self, name):
        return getattr(bpy.context, name)


def driven_generate():
    """The Generate operator's own methods on a plain object: Blender runs no modal operator in background mode, so
    the test sends the events that Blender would."""
    from blender_addon import operators

    generate = operators.MOTIONCLONE_OT_generate
    methods = ("begin", "modal", "stop", "cancel", "_finish", "_show_progress")
    driven = type("DrivenGenerate", (), {name: getattr(generate, name) for name in methods})()
    driven.reports = []
    driven.report = lambda kind, text: driven.reports.append((next(iter(kind)), text))
    return driven


def event(kind, **modifiers):
    return SimpleNamespace(type=kind, **{"ctrl": False, "alt": False, "shift": False, **modifiers})


def test_the_result_goes_to_the_scene_the_sequencer_showed_when_generate_was_pressed(addon, backend):
    from blender_addon import session

    workspace = bpy.context.workspace
    if not hasattr(workspace, "sequencer_scene"):
        pytest.skip("Blender 4.2's sequencer always shows the animated scene: there is no other scene to switch to")
    addon.endpoint = backend.endpoint
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    scene = animated_scene()
    pressed_on, switched_to = bpy.data.scenes.new("Edit at Generate"), bpy.data.scenes.new("Edit later")
    workspace.sequencer_scene = pressed_on
    settings = configure_job(scene)
    context = UIContext()
    render = driven_generate()
    try:
        assert render.begin(context) == {"RUNNING_MODAL"}
        workspace.sequencer_scene = switched_to  # while the reference renders
        while render.modal(context, event("TIMER")) == {"RUNNING_MODAL"}:
            pass
    finally:
        workspace.sequencer_scene = None
    from blender_addon import job_records

    job = settings.jobs[0]
    pressed_on.name = "Edit, renamed"  # before the result arrives: the result still goes there
    assert job_records.scene_of(job) == pressed_on and pressed_on.name == "Edit, renamed"
    bpy.data.scenes.remove(pressed_on)  # gone: the result goes to the job's own scene
    assert job_records.scene_of(job) == scene


def test_generate_makes_its_job_an_undo_step_of_its_own(addon, backend, monkeypatch):
    """Without one, Ctrl+Z right after Generate took back the artist's last edit and silently dropped the job."""
    from blender_addon import operators

    addon.endpoint = backend.endpoint
    steps = []
    monkeypatch.setattr(operators, "push_undo", steps.append)  # background mode has no undo stack to look at
    settings = configure_job(animated_scene())
    context = UIContext()
    rendered = driven_generate()
    assert rendered.begin(context) == {"RUNNING_MODAL"}
    while rendered.modal(context, event("TIMER")) == {"RUNNING_MODAL"}:
        assert steps == []  # not while the render's temporary settings are there
    assert len(settings.jobs) == 1 and steps == ["MotionClone Generate"]
    assert driven_generate().begin(context) == {"FINISHED"}  # the same scene: the last render is sent again
    assert len(settings.jobs) == 2 and steps == ["MotionClone Generate"] * 2
    assert bpy.ops.motionclone.generate() == {"FINISHED"}  # from a script
    assert len(settings.jobs) == 3 and steps == ["MotionClone Generate"] * 3


def test_a_backend_address_the_client_cannot_use_is_a_clear_error_of_the_preferences(addon):
    """Raised as the RuntimeError every caller of ensure_client handles (loading a file with running jobs, too)."""
    from blender_addon import session

    addon.endpoint = "tcp://127.0.0.1"  # no port
    with pytest.raises(RuntimeError, match="The backend settings in the add-on preferences cannot be used"):
        session.get_session().ensure_client(bpy.context)
    assert session.get_session().client is None


def test_a_result_scene_deleted_while_the_reference_renders_is_not_recorded():
    from blender_addon import jobs

    doomed = bpy.data.scenes.new("Deleted during the render")
    assert jobs.living_scene(doomed) == doomed
    bpy.data.scenes.remove(doomed)
    assert jobs.living_scene(doomed) is None  # the job's own scene gets the result


def test_a_result_scene_linked_from_a_library_is_passed_over_for_the_jobs_own_scene(addon, tmp_path):
    from blender_addon import job_records

    scene = animated_scene()
    settings = configure_job(scene)
    library_scene = bpy.data.scenes.new("Shot in a library")
    library_path = str(tmp_path / "shots.blend")
    bpy.data.libraries.write(library_path, {library_scene})
    bpy.data.scenes.remove(library_scene)
    with bpy.data.libraries.load(library_path, link=True) as (_source, linked):
        linked.scenes = ["Shot in a library"]
    linked_scene = linked.scenes[0]
    assert linked_scene.library is not None
    job = settings.jobs.add()
    job.result_scene = linked_scene
    job.target_scene = linked_scene.name
    assert job_records.scene_of(job) == scene  # a strip cannot be added to a linked scene


def test_generate_from_the_ui_renders_frame_by_frame_holds_keys_and_esc_cancels(addon, backend):
    from blender_addon import operators, session

    addon.endpoint = backend.endpoint
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    scene = animated_scene()
    settings = configure_job(scene)
    before = render_snapshot(scene)
    context = UIContext()

    first = driven_generate()
    assert first.begin(context) == {"RUNNING_MODAL"} and operators.rendering == [first]
    assert render_snapshot(scene) != before  # the render's own settings while it runs
    assert first.modal(context, event("S")) == {"RUNNING_MODAL"}  # a key (Ctrl+S, say) is held back
    # Looking around keeps the interface alive; a click waits: it could change a setting or push an undo step that
    # holds the render's temporary settings.
    for passed in ("MOUSEMOVE", "WHEELUPMOUSE", "MIDDLEMOUSE", "TRACKPADPAN"):
        assert first.modal(context, event(passed)) == {"PASS_THROUGH"}, passed
    assert first.modal(context, event("LEFTMOUSE")) == {"RUNNING_MODAL"}
    assert first.modal(context, event("WHEELUPMOUSE", ctrl=True)) == {"RUNNING_MODAL"}  # Ctrl+wheel edits a field
    assert first.modal(context, event("MIDDLEMOUSE", shift=True)) == {"PASS_THROUGH"}  # Shift+middle pans the view
    assert first.modal(context, event("NDOF_BUTTON_MENU")) == {"RUNNING_MODAL"}
    ticks = 1
    while first.modal(context, event("TIMER")) == {"RUNNING_MODAL"}:
        ticks += 1
        assert ticks <= 4, "four frames take four timer ticks"
    assert ticks == 4 and operators.rendering == [] and render_snapshot(scene) == before
    assert context.workspace.status[:4] == [
        f"MotionClone: rendering the reference, frame {done} of 4 (Esc cancels; clicks wait till it ends)"
        for done in range(4)
    ]
    assert context.workspace.status[-1] is None  # the status bar is given back
    assert first.reports == [("INFO", "MotionClone job sent (seed 7)")] and len(settings.jobs) == 1

    again = driven_generate()  # nothing changed in the scene: the frames just rendered are sent again
    assert again.begin(context) == {"FINISHED"} and len(settings.jobs) == 2
    assert again.reports == [("INFO", "MotionClone job sent with the last reference render (seed 7)")]

    bpy.data.objects["Cube"].scale = (1.5, 1.5, 1.5)  # an edit: the next Generate renders again
    cancelled = driven_generate()
    assert cancelled.begin(context) == {"RUNNING_MODAL"}
    assert cancelled.modal(context, event("TIMER")) == {"RUNNING_MODAL"}
    assert cancelled.modal(context, event("ESC")) == {"CANCELLED"}
    assert cancelled.reports == [("WARNING", "Reference render cancelled; your render settings are as they were")]
    assert operators.rendering == [] and render_snapshot(scene) == before and len(settings.jobs) == 2

    stopped = driven_generate()  # stopped from outside (an undo, a save): the next event ends the operator
    assert stopped.begin(context) == {"RUNNING_MODAL"}
    for handler in bpy.app.handlers.undo_pre:  # what Blender runs before an undo
        handler(scene)
    assert render_snapshot(scene) == before
    assert stopped.modal(context, event("TIMER")) == {"CANCELLED"}
    assert "Reference render stopped: the file was saved, loaded, undone or redone during it" in stopped.reports[0][1]
    assert len(settings.jobs) == 2


def test_generate_from_the_ui_reads_a_strip_reference_frame_by_frame_and_esc_cancels(addon, backend, tmp_path):
    from blender_addon import compat, operators, png, session

    addon.endpoint = backend.endpoint
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    scene = animated_scene()
    settings = configure_job(scene)
    names = [f"ref_{frame:02d}.png" for frame in range(1, 9)]
    for frame, name in enumerate(names, start=1):
        png.write_png(tmp_path / name, np.full((48, 64, 3), 20 * frame, np.uint8))
    strip = compat.strips(scene.sequence_editor_create()).new_image(
        name="ref", filepath=str(tmp_path / names[0]), channel=1, frame_start=1
    )
    for name in names[1:]:
        strip.elements.append(name)
    settings.source, settings.reference_strip = "STRIP", "ref"
    context = UIContext()

    read = driven_generate()
    assert read.begin(context) == {"RUNNING_MODAL"} and operators.rendering == [read]
    assert read.modal(context, event("LEFTMOUSE")) == {"RUNNING_MODAL"}  # a click waits, as during a render
    ticks = 1
    while read.modal(context, event("TIMER")) == {"RUNNING_MODAL"}:
        ticks += 1
        assert ticks <= 4, "four frames take four timer ticks"
    assert ticks == 4 and operators.rendering == []
    assert context.workspace.status[:4] == [
        f"MotionClone: reading the reference strip, frame {done} of 4 (Esc cancels; clicks wait till it ends)"
        for done in range(4)
    ]
    assert context.workspace.status[-1] is None
    assert read.reports == [("INFO", "MotionClone job sent (seed 7)")] and len(settings.jobs) == 1

    again = driven_generate()  # a strip is read again every time: its files may have changed on disk
    assert again.begin(context) == {"RUNNING_MODAL"}
    assert again.modal(context, event("TIMER")) == {"RUNNING_MODAL"}
    assert again.modal(context, event("ESC")) == {"CANCELLED"}
    assert operators.rendering == [] and len(settings.jobs) == 1


def test_a_movie_strip_reference_read_from_the_ui_ends_cleanly_on_esc_a_save_or_a_lost_scene(addon, backend, tmp_path):
    from blender_addon import compat, operators, session
    from tests.blender_addon.test_reference import colour_movie_strip

    addon.endpoint = backend.endpoint
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    made = colour_movie_strip(bpy.data.scenes.new("Movie maker"), tmp_path, [0.1 * k for k in range(8)], 1)
    scene = animated_scene()
    settings = configure_job(scene)
    compat.strips(scene.sequence_editor_create()).new_movie(
        name="ref", filepath=made.filepath, channel=1, frame_start=1
    )
    settings.source, settings.reference_strip = "STRIP", "ref"
    scenes = sorted(bpy.data.scenes.keys())
    context = UIContext()

    escaped = driven_generate()
    assert escaped.begin(context) == {"RUNNING_MODAL"} and "MotionClone movie reader" in bpy.data.scenes
    assert escaped.modal(context, event("TIMER")) == {"RUNNING_MODAL"}
    assert escaped.modal(context, event("ESC")) == {"CANCELLED"}
    assert escaped.reports == [("WARNING", "Reference strip read cancelled")]
    assert sorted(bpy.data.scenes.keys()) == scenes

    saved = driven_generate()
    assert saved.begin(context) == {"RUNNING_MODAL"}
    operators.stop_renders()  # what Blender runs before a save: the temporary scene must not be saved
    assert sorted(bpy.data.scenes.keys()) == scenes
    assert saved.modal(context, event("TIMER")) == {"CANCELLED"}
    assert saved.reports == [
        (
            "WARNING",
            "Reference strip read stopped: the file was saved, loaded, undone or redone during it. Generate again",
        )
    ]

    lost = driven_generate()
    assert lost.begin(context) == {"RUNNING_MODAL"}
    bpy.data.scenes.remove(bpy.data.scenes["MotionClone movie reader"])  # deleted from another window
    assert lost.modal(context, event("TIMER")) == {"CANCELLED"}
    assert lost.reports == [
        ("ERROR", "The scene 'MotionClone movie reader' that plays the movie was deleted: Generate again.")
    ]
    assert sorted(bpy.data.scenes.keys()) == scenes and operators.rendering == [] and len(settings.jobs) == 0


def test_a_job_another_client_fetches_shows_as_elsewhere_and_fetch_result_again_brings_it_back(addon, backend):
    from motionclone.protocol.client import Client

    addon.endpoint = backend.endpoint
    settings = configure_job(animated_scene(), steps=60)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    assert pump_until(lambda: settings.jobs[0].state == "RUNNING", 60)
    with Client(backend.endpoint) as other:  # `motionclone fetch`, or another Blender with this file
        other.start().wait_connected(10)
        other.fetch(settings.jobs[0].job_id)
        assert pump_until(lambda: settings.jobs[0].state == "ELSEWHERE", 30)
    assert "Another client fetched this job" in settings.jobs[0].message  # not marked failed: it still runs

    assert bpy.ops.motionclone.fetch_again(index=0) == {"FINISHED"}
    assert pump_until(lambda: settings.jobs[0].state == "DONE", 120), settings.jobs[0].message


def test_a_scene_copied_while_its_job_runs_ends_the_copied_job_with_the_original(addon, backend):
    addon.endpoint = backend.endpoint
    scene = animated_scene()
    settings = configure_job(scene, steps=20)
    assert bpy.ops.motionclone.generate() == {"FINISHED"}
    assert pump_until(lambda: settings.jobs[0].state == "RUNNING", 60)
    assert bpy.ops.scene.new(type="FULL_COPY") == {"FINISHED"}  # Scene > New > Full Copy, job records and all
    copied = bpy.context.scene.motionclone.jobs[0]
    assert copied.job_id == settings.jobs[0].job_id and copied.state == "RUNNING"
    assert pump_until(lambda: settings.jobs[0].state == "DONE", 120), settings.jobs[0].message
    assert pump_until(lambda: copied.state == "DONE", 5), copied.message  # not running for ever
    assert f"its entry in scene '{scene.name}' got the outcome" in copied.message
    assert copied.result_dir == settings.jobs[0].result_dir


def test_entries_without_a_request_id_are_not_taken_for_copies_of_each_other(addon):
    """Recovered entries have no request id: two of them are two jobs."""
    from blender_addon import event_pump

    settings = configure_job(animated_scene())
    ended, running = settings.jobs.add(), settings.jobs.add()
    ended.state, ended.job_id = "DONE", "a" * 32
    running.state, running.job_id = "RUNNING", "b" * 32
    event_pump.end_copies(ended)
    assert running.state == "RUNNING"


def test_an_output_folder_relative_to_an_unsaved_blend_falls_back_to_the_user_folder(addon, tmp_path):
    from blender_addon import preferences

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        addon.output_dir = "//renders"  # Blender 4.5+ warns unless the property supports relative paths
        bpy.context.scene.motionclone.condition_path = "//sketches/first.png"  # saved in the .blend: may move
    assert [str(warning.message) for warning in caught] == []
    assert not bpy.data.filepath
    assert preferences.output_root(bpy.context) == preferences.user_folder("results")
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    assert preferences.output_root(bpy.context) == tmp_path / "renders"


def test_a_condition_the_connected_backend_cannot_run_stops_generate_before_the_render(addon, backend):
    from blender_addon import session

    addon.endpoint = backend.endpoint
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    assert session.get_session().connection.condition_types == ()  # the tiny backend runs no SparseCtrl model
    scene = animated_scene()
    settings = configure_job(scene)
    settings.condition_source = "RENDER"
    before = render_snapshot(scene)
    with pytest.raises(RuntimeError, match=r"runs no SparseCtrl rgb model \(conditions it runs: none\): set Condition"):
        bpy.ops.motionclone.generate()
    assert len(settings.jobs) == 0 and render_snapshot(scene) == before


def test_a_reference_larger_than_the_backend_takes_stops_generate_before_the_render(addon, backend, monkeypatch):
    """The client would refuse the message only when sending it, after the whole render."""
    from blender_addon import session

    addon.endpoint = backend.endpoint
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    assert session.get_session().max_message_bytes() == 512 * 1024 * 1024  # the client's, and the backend's Welcome
    scene = animated_scene()
    scene.frame_end = 300
    settings = configure_job(scene, frames=256)
    settings.long_side = 2048
    before = render_snapshot(scene)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (640, 480)
    with pytest.raises(
        RuntimeError, match=r"256 frames of 2048 x 1536 make 2304 MiB, more than the 512 MiB .*: lower Size to 960 "
    ):
        bpy.ops.motionclone.generate()
    client = session.get_session().client
    monkeypatch.setattr(client, "max_message_bytes", lambda: 4 * 1024 * 1024)  # a backend that takes less
    settings.num_frames, settings.long_side = 16, 512
    with pytest.raises(
        RuntimeError, match=r"16 frames of 512 x 384 make 9 MiB, more than the 4 MiB .*: lower Size to 336 "
    ):
        bpy.ops.motionclone.generate()
    assert len(settings.jobs) == 0 and render_snapshot(scene) == before


def test_greyed_out_job_buttons_say_why(addon):
    """Blender shows a poll's message on a greyed-out button; calling the operator anyway raises with it."""
    settings = bpy.context.scene.motionclone
    with pytest.raises(RuntimeError, match="Select a job in the list first"):
        bpy.ops.motionclone.remove_job()
    job = settings.jobs.add()
    job.state = "RUNNING"
    for operator, reason in [
        (bpy.ops.motionclone.remove_job, "A job still running cannot be removed: cancel it first"),
        (bpy.ops.motionclone.show_result, "The selected job has no result strip yet"),
        (bpy.ops.motionclone.open_result_folder, "The selected job has no result folder on this computer"),
        (
            bpy.ops.motionclone.fetch_again,
            "Only a failed job that the backend had accepted, or one another client took, can be fetched again",
        ),
        (bpy.ops.motionclone.preview_condition, "Choose a Condition source first"),
        (bpy.ops.motionclone.stop_backend, "No local backend started by the add-on is running"),
    ]:
        with pytest.raises(RuntimeError, match=re.escape(reason)):
            operator()
    job.state = "DONE"
    with pytest.raises(RuntimeError, match="The selected job is not running"):
        bpy.ops.motionclone.cancel()


def test_the_engine_is_offered_wherever_a_render_uses_it(addon):
    from blender_addon import panels

    settings = configure_job(animated_scene())

    def engine_fields() -> int:
        calls = []
        panels.draw_motionclone(RecordingLayout(calls), bpy.context)
        return sum(1 for name, args, _ in calls if name == "prop" and args[1] == "render_engine")

    assert engine_fields() == 1  # a camera reference: in the reference box
    settings.source = "STRIP"
    assert engine_fields() == 0  # nothing is rendered
    settings.condition_source = "RENDER"
    assert engine_fields() == 1  # the condition's keyframe is rendered: in the condition box
    settings.source = "CAMERA"
    assert engine_fields() == 1  # once, in the reference box, for both renders


def client_threads():
    import threading

    return [thread for thread in threading.enumerate() if thread.name == "motionclone-client"]


def test_disable_closes_the_client_thread_and_loading_a_file_keeps_the_pump(addon, backend, tmp_path):
    import blender_addon
    from blender_addon import session

    addon.endpoint = backend.endpoint
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}
    assert pump_until(lambda: session.get_session().connection.state == "connected", 20)
    assert len(client_threads()) == 1
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "saved.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "saved.blend"))
    assert bpy.app.timers.is_registered(blender_addon._timer)  # persistent across file loads
    assert blender_addon._on_load_post in bpy.app.handlers.load_post
    disable_addon()
    assert client_threads() == []
    assert not bpy.app.timers.is_registered(blender_addon._timer)
    enable_addon()  # the fixture disables it again


def test_a_job_saved_in_a_file_is_fetched_again_when_the_file_is_opened(addon, backend, tmp_path):
    from blender_addon import session

    addon.endpoint = backend.endpoint
    scene = animated_scene(frames=8)
    settings = configure_job(scene, steps=12)
    bpy.ops.motionclone.generate()
    job = settings.jobs[0]
    assert pump_until(lambda: bool(job.job_id), 60), job.message
    path = str(tmp_path / "with-job.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    session.close_session()  # as if Blender had been closed: the connection is gone
    bpy.ops.wm.open_mainfile(filepath=path)  # load_post asks the backend for the saved job again
    job = bpy.context.scene.motionclone.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 120), job.message
    assert job.state == "DONE", job.message
    assert compat.strips(bpy.context.scene.sequence_editor)[job.strip_name]["motionclone_job_id"] == job.job_id


def test_a_result_of_a_closed_files_job_waits_for_that_file_instead_of_landing_in_the_open_one(
    addon, backend, tmp_path
):
    from blender_addon import session

    addon.endpoint = backend.endpoint
    other = str(tmp_path / "other.blend")
    bpy.ops.wm.save_as_mainfile(filepath=other)
    scene = animated_scene(frames=8)
    settings = configure_job(scene, prompt="a fox of the first file", steps=8)
    bpy.ops.motionclone.generate()
    assert pump_until(lambda: bool(settings.jobs[0].job_id), 60), settings.jobs[0].message
    first = str(tmp_path / "first.blend")
    bpy.ops.wm.save_as_mainfile(filepath=first)
    bpy.ops.wm.open_mainfile(filepath=other)
    connection = session.get_session().connection
    assert pump_until(lambda: "waits on the backend" in session.get_session().connection.message, 120), connection
    assert "first.blend" in session.get_session().connection.message
    assert len(bpy.context.scene.motionclone.jobs) == 0 and strip_count(bpy.context.scene) == 0
    bpy.ops.wm.open_mainfile(filepath=first)  # the job asks the backend again, which kept the result
    job = bpy.context.scene.motionclone.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 60), job.message
    assert job.state == "DONE", job.message
    assert compat.strips(bpy.context.scene.sequence_editor)[job.strip_name]["motionclone_prompt"] == job.prompt


def test_a_result_written_while_another_file_opens_waits_for_its_own_file(addon, backend, tmp_path):
    from blender_addon import operators, session

    addon.endpoint = backend.endpoint
    other = str(tmp_path / "other.blend")
    bpy.ops.wm.save_as_mainfile(filepath=other)
    configure_job(animated_scene(frames=8), prompt="a fox of the first file")
    bpy.ops.motionclone.generate()
    stand_in = SimpleNamespace(stop=lambda context, reason: None)  # a render holds the strip back, as a slow write
    operators.rendering.append(stand_in)
    try:
        assert pump_until(lambda: any(write.done for write in session.get_session().result_writes), 120)
        first = str(tmp_path / "first.blend")
        bpy.ops.wm.save_as_mainfile(filepath=first)
        bpy.ops.wm.open_mainfile(filepath=other)  # while the frames are on their way to the strip
    finally:
        operators.rendering.remove(stand_in)
    assert pump_until(lambda: "waits on the backend" in session.get_session().connection.message, 10)
    assert len(bpy.context.scene.motionclone.jobs) == 0 and strip_count(bpy.context.scene) == 0  # not recovered here
    bpy.ops.wm.open_mainfile(filepath=first)  # not acknowledged: the backend still has it
    job = bpy.context.scene.motionclone.jobs[0]
    assert pump_until(lambda: job.state in ("DONE", "FAILED"), 60), job.message
    assert job.state == "DONE", job.message


def test_reopening_the_same_file_recovers_a_job_started_after_its_last_save(addon, backend, tmp_path):
    """File > Revert: the job is not in the saved file, but its result belongs to this file, not to another one."""
    from blender_addon import session

    addon.endpoint = backend.endpoint
    path = str(tmp_path / "reverted.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    settings = configure_job(animated_scene(frames=8), prompt="a fox after the save", steps=8)
    bpy.ops.motionclone.generate()
    assert pump_until(lambda: bool(settings.jobs[0].job_id), 60), settings.jobs[0].message
    job_id = settings.jobs[0].job_id
    bpy.ops.wm.open_mainfile(filepath=path)  # back to the saved state, which has no job
    jobs = bpy.context.scene.motionclone.jobs
    assert pump_until(lambda: any(job.job_id == job_id and job.state == "DONE" for job in jobs), 120), (
        session.get_session().connection.message
    )
    assert "waits on the backend" not in session.get_session().connection.message


def test_disabling_the_add_on_while_a_result_is_written_still_places_it_and_the_backend_keeps_it(
    addon, backend, monkeypatch
):
    """Blender quitting disables every add-on after its last chance to save: the saved file's job must still find
    its result on the backend when it is opened again."""
    from motionclone.protocol.client import Client

    addon.endpoint = backend.endpoint
    release = threading.Timer(1.0, lambda: None)  # the write waits for this one second
    scene, job = job_whose_frames_are_being_written(monkeypatch, release.finished)
    release.start()
    job_id = job.job_id
    disable_addon()  # while the frames are still being written
    strip = compat.strips(scene.sequence_editor)["MotionClone 7"]
    assert strip["motionclone_job_id"] == job_id
    assert len(list(Path(bpy.path.abspath(strip.directory)).glob("*.png"))) == 4
    with Client(backend.endpoint) as other:  # not acknowledged
        other.start().wait_connected(10)
        assert other.fetch_result(job_id, timeout=30).frames().shape[0] == 4
    enable_addon()  # the fixture disables it again
    assert scene.motionclone.jobs[0].state == "DONE"


@pytest.mark.parametrize(("overridden", "advice"), [(True, "--offline-mode"), (False, "Allow Online Access")])
def test_offline_blender_says_why_a_remote_backend_is_blocked(monkeypatch, overridden, advice):
    from blender_addon import preferences

    # bpy.app's flags are read-only; the add-on reads these two of its attributes, which this Blender has.
    assert hasattr(bpy.app, "online_access") and hasattr(bpy.app, "online_access_override")
    offline = SimpleNamespace(app=SimpleNamespace(online_access=False, online_access_override=overridden))
    monkeypatch.setattr(preferences, "bpy", offline)
    assert advice in preferences.online_access_problem("tcp://gpu-box:5555")
    assert preferences.online_access_problem("tcp://127.0.0.1:5555") is None


def reload_addon(preferences):
    """Disable and enable the add-on (as Reload Scripts or an update does), keeping its preferences: its session
    starts afresh, with no client and no request of the open file's jobs."""
    kept = {name: getattr(preferences, name) for name in ("endpoint", "output_dir", "timeout")}
    disable_addon()
    preferences = enable_addon()
    for name, value in kept.items():
        setattr(preferences, name, value)
    return preferences


def running_job_and_a_lost_one_after_a_reload(addon, backend):
    """A job the backend accepted and one sent without an answer yet, when the add-on is reloaded. Returns the jobs."""
    addon.endpoint = backend.endpoint
    settings = configure_job(animated_scene(frames=8), steps=8)
    bpy.ops.motionclone.generate()
    assert pump_until(lambda: bool(settings.jobs[0].job_id), 60), settings.jobs[0].message
    lost = settings.jobs.add()
    lost.request_id, lost.state, lost.message = "sent-before-the-reload", "SUBMITTED", "Sent to the backend"
    reload_addon(addon)
    return bpy.context.scene.motionclone.jobs


def assert_followed_and_ended(jobs) -> None:
    assert pump_until(lambda: jobs[0].state in ("DONE", "FAILED"), 60), jobs[0].message
    assert jobs[0].state == "DONE", jobs[0].message
    assert jobs[1].state == "FAILED" and "may or may not have reached the backend" in jobs[1].message


def test_after_a_reload_a_new_client_follows_the_running_jobs_and_ends_the_lost_ones(addon, backend):
    jobs = running_job_and_a_lost_one_after_a_reload(addon, backend)
    assert bpy.ops.motionclone.test_connection() == {"FINISHED"}  # the first client of the new session
    assert_followed_and_ended(jobs)


def test_registering_the_add_on_fetches_the_open_files_running_jobs_once(addon, backend):
    import blender_addon

    jobs = running_job_and_a_lost_one_after_a_reload(addon, backend)
    assert bpy.app.timers.is_registered(blender_addon._refetch_after_register)  # timers never fire in background
    assert blender_addon._refetch_after_register() is None  # what the timer calls, once
    assert_followed_and_ended(jobs)


def test_a_sent_job_without_a_request_in_this_session_can_be_cancelled_or_removed(addon):
    from blender_addon import session

    settings = bpy.context.scene.motionclone
    for request_id in ("lost-1", "lost-2", "answer-to-come"):
        job = settings.jobs.add()
        job.request_id, job.state, job.message = request_id, "SUBMITTED", "Sent to the backend"
    session.get_session().sent["answer-to-come"] = ""  # sent by this session's client: its answer may still come
    settings.active_job = 0
    assert bpy.ops.motionclone.cancel() == {"FINISHED"}
    assert settings.jobs[0].state == "FAILED" and "may or may not have reached the backend" in settings.jobs[0].message
    settings.active_job = 1
    assert bpy.ops.motionclone.remove_job() == {"FINISHED"}
    assert [job.request_id for job in settings.jobs] == ["lost-1", "answer-to-come"]
    settings.active_job = 1
    with pytest.raises(RuntimeError, match="A job still running cannot be removed: cancel it first"):
        bpy.ops.motionclone.remove_job()
    assert bpy.ops.motionclone.cancel() == {"CANCELLED"}  # "try again in a moment"
    assert settings.jobs[1].state == "SUBMITTED"


def test_removing_a_job_is_an_undo_step(addon):
    from blender_addon import operators

    assert operators.MOTIONCLONE_OT_remove_job.bl_options == {"REGISTER", "UNDO"}


def result_event(job_id: str, warnings: tuple[str, ...] = ()) -> SimpleNamespace:
    """A result event of 4 frames, as the protocol client hands it to the pump."""
    pixels = np.full((4, 8, 8, 3), 200, dtype=np.uint8)
    metadata = {"seed": 7, "parameters": {"prompt": "a fox", "seed": 7}, "warnings": list(warnings)}
    message = SimpleNamespace(frames=pixels, metadata=metadata)
    return SimpleNamespace(
        kind="result", request_id="", job_id=job_id, payload=b"", message=message, frames=lambda: pixels
    )


def running_job(scene, job_id: str):
    """A running job of 4 frames sampled over frames 1 to 8 of `scene`."""
    job = scene.motionclone.jobs.add()
    job.request_id, job.job_id, job.state = f"request-{job_id}", job_id, "RUNNING"
    job.prompt, job.seed = "a fox", 7
    job.frame_start, job.frame_end = 1, 8
    job.sampled_frames = json.dumps([1, 3, 5, 8])
    return job


def test_a_result_waits_while_the_artist_drags_something_or_plays_the_animation(addon, tmp_path, monkeypatch):
    from blender_addon import event_pump, session
    from blender_addon.result_writes import ResultWrite

    # Both names exist in Blender 4.2 and 5.x; the pump still feature-tests the list.
    assert "modal_operators" in bpy.types.Window.bl_rna.properties
    assert "is_animation_playing" in bpy.types.Screen.bl_rna.properties
    scene = animated_scene(frames=8)
    job = running_job(scene, "job-1")
    write = ResultWrite(result_event(job.job_id), job.request_id, tmp_path / "results", "a-fox-7", recovered=False)
    assert write.wait(10)
    session.get_session().result_writes.append(write)
    idle, playing = SimpleNamespace(is_animation_playing=False), SimpleNamespace(is_animation_playing=True)
    dragging = SimpleNamespace(modal_operators=[SimpleNamespace(bl_idname="TRANSFORM_OT_seq_slide")], screen=idle)
    windows = [SimpleNamespace(modal_operators=[], screen=idle), dragging]  # G pressed in the second window
    monkeypatch.setattr(event_pump, "open_windows", lambda context: windows)
    event_pump.pump()
    assert job.state == "RUNNING" and strip_count(scene) == 0
    windows[1] = SimpleNamespace(modal_operators=[], screen=playing)
    event_pump.pump()
    assert job.state == "RUNNING" and strip_count(scene) == 0
    windows[1] = SimpleNamespace(screen=idle)  # a window without the list
    event_pump.pump()
    assert job.state == "DONE" and strip_count(scene) == 1


def test_the_first_strip_of_a_scene_with_a_camera_says_it_now_renders_its_sequencer(addon, tmp_path):
    from blender_addon import event_pump, result_files, session

    scene = animated_scene(frames=8)
    edit = bpy.data.scenes.new("Edit")  # no camera: it renders its sequencer anyway
    frames = result_event("").message.frames

    def place(target, job_id: str):
        job = running_job(scene, job_id)
        job.result_scene = target
        folder = result_files.write_result_frames(tmp_path, job_id, frames)
        event = result_event(job_id, warnings=("The prompt was cut short",))
        event_pump.place_result(session.get_session(), job, event, folder, acknowledge_result=False)
        return job.notes.splitlines()

    assert place(scene, "first") == [
        "The prompt was cut short",
        "Scene 'Scene' now renders its sequencer (this strip) instead of its camera. To render the camera again, "
        "switch off Output Properties > Post Processing > Sequencer, or remove the strip.",
    ]
    assert scene.render.use_sequencer  # the artist's setting stays as it was
    assert place(scene, "second") == ["The prompt was cut short"]  # it rendered its sequencer already
    assert place(edit, "third") == ["The prompt was cut short"]


def unsaved_file_with_a_running_job(addon, backend, tmp_path, monkeypatch) -> tuple[str, Path]:
    """A saved file to open later, then a new unsaved file whose job the backend accepted. Returns the saved file's
    path and the folder unsaved files' results go to (the add-on's user folder: no Output folder is set)."""
    from blender_addon import preferences

    user_results = tmp_path / "user" / "results"
    monkeypatch.setattr(preferences, "user_folder", lambda name: user_results)
    addon.endpoint, addon.output_dir = backend.endpoint, ""
    other = str(tmp_path / "other.blend")
    bpy.ops.wm.save_as_mainfile(filepath=other)
    bpy.ops.wm.read_homefile(use_empty=True)  # File > New: never saved
    assert not bpy.data.filepath
    settings = configure_job(animated_scene(frames=8), prompt="a fox of an unsaved file", steps=8)
    bpy.ops.motionclone.generate()
    assert pump_until(lambda: bool(settings.jobs[0].job_id), 60), settings.jobs[0].message
    return other, user_results


def assert_kept_on_disk_only(tmp_path: Path, user_results: Path) -> None:
    """The open file is unchanged, and the status bar and panel say where the frames are."""
    from blender_addon import event_pump, session

    current = session.get_session()
    assert pump_until(lambda: "unsaved file that was closed finished" in current.connection.message, 120), current
    folder = user_results / "a-fox-of-an-unsaved-file-7"
    assert f"its 4 frames are in {folder}, not added to this file" in current.connection.message
    assert len(list(folder.glob("*.png"))) == 4
    assert any(str(folder) in text for text, _ in event_pump.status_lines(current))
    assert len(bpy.context.scene.motionclone.jobs) == 0 and strip_count(bpy.context.scene) == 0
    assert not (tmp_path / "motionclone").exists()  # nothing next to the open file


def test_a_result_of_a_closed_unsaved_files_job_is_kept_on_disk_not_added_to_the_next_file(
    addon, backend, tmp_path, monkeypatch
):
    other, user_results = unsaved_file_with_a_running_job(addon, backend, tmp_path, monkeypatch)
    bpy.ops.wm.open_mainfile(filepath=other)
    assert_kept_on_disk_only(tmp_path, user_results)


def test_a_result_written_while_another_file_opens_after_an_unsaved_one_is_kept_on_disk(
    addon, backend, tmp_path, monkeypatch
):
    from blender_addon import operators, session

    other, user_results = unsaved_file_with_a_running_job(addon, backend, tmp_path, monkeypatch)
    stand_in = SimpleNamespace(stop=lambda context, reason: None)  # a render holds the strip back, as a slow write
    operators.rendering.append(stand_in)
    try:
        assert pump_until(lambda: any(write.done for write in session.get_session().result_writes), 120)
        bpy.ops.wm.open_mainfile(filepath=other)  # while the frames are on their way to the strip
    finally:
        operators.rendering.remove(stand_in)
    assert_kept_on_disk_only(tmp_path, user_results)


def test_results_wait_for_a_tool_or_playback_at_most_the_wait_limit():
    """Some add-ons keep a modal operator running for good (an on-screen key display): results must not wait for
    it for ever, nor for a playback that loops for minutes. A new tool is waited for again."""
    from blender_addon import event_pump

    limit = event_pump.BUSY_WAIT_LIMIT_S
    idle = SimpleNamespace(is_animation_playing=False)
    key_display = SimpleNamespace(modal_operators=[SimpleNamespace(bl_idname="WM_OT_screencast_keys")], screen=idle)
    assert event_pump.artist_busy([key_display], now=1000.0)
    assert not event_pump.artist_busy([key_display], now=1000.0 + limit + 1)
    drag = SimpleNamespace(bl_idname="TRANSFORM_OT_seq_slide")
    key_display.modal_operators.append(drag)
    assert event_pump.artist_busy([key_display], now=1000.0 + limit + 2)
    looping = SimpleNamespace(modal_operators=[], screen=SimpleNamespace(is_animation_playing=True))
    assert event_pump.artist_busy([looping], now=2000.0)
    assert not event_pump.artist_busy([looping], now=2000.0 + limit + 1)


def test_a_job_of_a_closed_unsaved_file_accepted_after_it_closed_is_known_by_its_job_id_too(addon):
    """Its result names only the job id: without it, the result was recovered into the file opened next."""
    from blender_addon import event_pump, session

    current = session.get_session()
    current.closed_unsaved_jobs.add("request-1")
    accepted = SimpleNamespace(
        kind="accepted", request_id="request-1", job_id="job-1", message=SimpleNamespace(queue_position=0)
    )
    event_pump.apply_event(bpy.context, current, accepted)
    assert current.of_closed_unsaved_file(None, "job-1")
