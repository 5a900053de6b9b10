"""The pump: applies what the backend sent to Blender data, on the main thread. No torch.

The persistent timer calls `pump()` (tests call it directly: timers never fire in background mode). It is the only
code that changes Blender data from backend events; network I/O stays on the protocol client's thread.
"""

import json
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import bpy

from . import compat, operators, preferences, result_files, sequencer
from ._protocol import errors, stages
from .job_records import all_jobs, any_active_job, fail_unaccepted_jobs, find_job, push_undo, scene_of, tag_redraw
from .model_fit import ModelDefaults
from .properties import ACTIVE_STATES, CONFIG_ITEMS
from .result_writes import ResultWrite
from .session import SUBMITTED_FIELDS, Connection, Session, get_session
from .thumbnails import show_image

PUMP_INTERVAL_ACTIVE = 0.1
PUMP_INTERVAL_IDLE = 0.5
# The image datablock the panel shows the latest preview from (it has no users, so it is never saved).
PREVIEW_IMAGE = "MotionClone Preview"
# A job in one of these states is over: late or repeated events never set it back.
FINISHED_STATES = {"DONE", "CANCELLED"}
BUSY_LOCAL = ("starting", "loading", "stopping")  # local backend states the pump follows closely
ENDING_SHOWN_S = 10.0  # how long the status bar reports a job that ended


def pump() -> float:
    """Apply everything the backend sent since the last call to Blender data; returns the next timer interval.

    Never raises: Blender unregisters a timer whose callback raises, and with it every later update. Each event is
    applied in its own guard, and one that fails is reported on its job (`report_event_failure`).
    """
    try:
        session = get_session()
        context = bpy.context
        for event in session.client.poll_events() if session.client is not None else ():
            try:
                apply_event(context, session, event)
            except Exception as error:  # any failure of one event must leave the pump running
                report_event_failure(session, event, error)
        # Placing a result pushes an undo step, which must not hold a reference render's temporary settings, nor the
        # middle of what the artist is doing: its frames are written meanwhile, and it is placed once that is over.
        if not operators.rendering and not artist_busy(open_windows(context)):
            place_written_results(context, session)
        # After the events: whatever the backend sent before it exited is applied before its exit is.
        session.watch_local(context)
        busy = any_active_job() or session.connection.state == "connecting" or session.local.state in BUSY_LOCAL
    except Exception:  # the same for anything around the events
        traceback.print_exc()
        return PUMP_INTERVAL_IDLE
    return PUMP_INTERVAL_ACTIVE if busy else PUMP_INTERVAL_IDLE


# How long a result waits for a modal operator or a playback to end (`artist_busy`), and when each began.
BUSY_WAIT_LIMIT_S = 30.0
_busy_since: dict[tuple[str, int], float] = {}


def open_windows(context: bpy.types.Context) -> list[Any]:
    """The windows of the window manager (none in background mode)."""
    return list(getattr(context.window_manager, "windows", ()))


def artist_busy(windows: Iterable[Any], now: float | None = None) -> bool:
    """Whether a modal operator runs in any window (a strip or object dragged with G, a transform, a file browser)
    or the animation plays: an undo step pushed now would capture a state half-way through. What has gone on for
    BUSY_WAIT_LIMIT_S is not waited for any more: some add-ons keep a modal operator running for good (an on-screen
    key display, an asset bar), and a looping playback may run for minutes."""
    now = time.monotonic() if now is None else now
    seen = set()
    for window in windows:
        for operator in getattr(window, "modal_operators", ()):  # Blender 4.2 and 5.x have it; feature-tested
            seen.add(("operator", _identity(operator)))
        if window.screen is not None and window.screen.is_animation_playing:
            seen.add(("playback", _identity(window.screen)))
    for gone in set(_busy_since) - seen:
        del _busy_since[gone]
    for key in seen:
        _busy_since.setdefault(key, now)
    return any(now - since < BUSY_WAIT_LIMIT_S for since in _busy_since.values())


def _identity(item: Any) -> int:
    # Blender's Python wrappers are made anew on each access; the data behind them stays where it is.
    return item.as_pointer() if hasattr(item, "as_pointer") else id(item)


def report_event_failure(session: Session, event: Any, error: Exception) -> None:
    """Say on the event's job what went wrong. A result that could not be stored was not acknowledged, so the
    backend keeps it: the message says how to fetch it again."""
    traceback.print_exc()
    reason = str(error) or type(error).__name__
    job = find_job(getattr(event, "request_id", None), getattr(event, "job_id", None))
    if getattr(event, "kind", None) == "result":
        message = (
            f"The result arrived but could not be stored: {reason}. The backend keeps it: fix the cause (the output "
            "folder in the add-on preferences, a free sequencer channel), then press Fetch Result Again."
        )
        if job is not None:
            job.state = "FAILED"
            job.message = message
        else:
            session.connection.message = message
    elif job is not None:
        job.message = f"Could not apply a '{getattr(event, 'kind', '?')}' update from the backend: {reason}"
    else:
        session.connection.message = f"Could not apply a message from the backend: {reason}"
    tag_redraw()


def mark_unreachable(context: bpy.types.Context, session: Session) -> str:
    """Say that no backend answers, and fail the jobs it never accepted. Returns the message."""
    prefs = preferences.get_preferences(context)
    if prefs.backend_mode == "LOCAL":
        message = (
            f"The local backend at {session.local.endpoint} did not answer within {prefs.timeout:g} s "
            f"({session.local.message}). Restart it from the MotionClone panel, then Generate again."
        )
    else:
        message = (
            f"No MotionClone backend answered at {prefs.endpoint} within {prefs.timeout:g} s. Start one with "
            "`motionclone serve`, or check the endpoint (and keys) in the add-on preferences, then Generate again."
        )
    session.connection = Connection("unreachable", message)
    fail_unaccepted_jobs(session.connection.message)
    return session.connection.message


def condition_types_of(limits: Any) -> tuple[str, ...] | None:
    """The SparseCtrl kinds a Welcome's limits say the backend runs; None when it does not say."""
    kinds = limits.get("condition_types") if isinstance(limits, dict) else None
    return tuple(kind for kind in kinds if isinstance(kind, str)) if isinstance(kinds, list) else None


def apply_event(context: bpy.types.Context, session: Session, event: Any) -> None:
    kind = event.kind
    if kind == "connected":
        welcome = event.message
        session.connection = Connection(
            "connected",
            f"Connected to {welcome.device}",
            welcome.server_version,
            welcome.device,
            welcome.default_preset,
            ModelDefaults.from_limits(welcome.limits, [item[0] for item in CONFIG_ITEMS]),
            condition_types_of(welcome.limits),
        )
        session.request_status()
        return
    if kind == "server_status":
        status = event.message
        session.connection.queued, session.connection.running = status.queued, status.running
        session.connection.message = f"Connected to {session.connection.device} · {session.connection.queue_text()}"
        return
    if kind == "error" and event.request_id is not None and event.request_id == session.status_request:
        return  # a backend older than the "status" message: the queue stays unknown
    if kind == "unreachable":  # the client's own verdict: no answer within the timeout
        mark_unreachable(context, session)
        return
    if kind == "disconnected":
        if session.connection.state != "unreachable":
            session.connection = Connection(
                "unreachable", "The backend stopped answering; retrying. Running jobs continue when it is back."
            )
        return
    if kind == "accepted" and event.request_id in session.sent:
        session.sent[event.request_id] = event.job_id
    elif kind == "error" and session.sent.get(event.request_id) == "":
        del session.sent[event.request_id]  # refused or never delivered: nothing to follow
    if kind == "result" and any(write.job_id == event.job_id for write in session.result_writes):
        return  # the same result again (a repeated fetch) while its frames are being written
    job = find_job(event.request_id, event.job_id)
    if job is None and (filepath := session.other_file_of(event.request_id, event.job_id)):
        wait_for_other_file(session, event, filepath)
        return
    if job is None and session.of_closed_unsaved_file(event.request_id, event.job_id):
        if kind == "accepted" and event.job_id:  # its result will name only the job id
            session.closed_unsaved_jobs.add(event.job_id)
        if kind == "result":
            keep_unsaved_file_result(context, session, event)
        return
    if job is None:
        if kind == "result":
            recover_result(context, session, event)  # its job was undone or removed: the result is still kept
        elif kind == "error":
            session.connection.message = event.message.message
        return
    if job.state in FINISHED_STATES:
        if kind == "result":
            acknowledge(session, event.job_id)  # a repeated result of a stored job: the backend may forget it
        return
    if kind == "accepted":
        job.job_id = event.job_id
        job.state = "QUEUED"
        job.message = f"Queue position {event.message.queue_position}"
    elif kind == "queued":
        job.state = "QUEUED"
        job.message = f"Queue position {event.message.queue_position}"
    elif kind == "job_status" and event.message.state in stages.ACTIVE_STATES:
        job.state = event.message.state.upper()
    elif kind == "progress":
        apply_progress(job, event)
    elif kind == "result" and event.job_id in session.stored_results:
        acknowledge(session, event.job_id)  # stored already; undo took its strip back: not a second folder and strip
        mark_result_undone(job, session.stored_results[event.job_id])
    elif kind == "result":
        apply_result(context, session, job, event)
    elif kind == "cancelled":
        job.state = "CANCELLED"
        job.message = "Cancelled"
    elif kind == "error" and event.message.code == errors.UNKNOWN_JOB and event.job_id in session.stored_results:
        mark_result_undone(job, session.stored_results[event.job_id])  # handed over and forgotten by the backend
    elif kind == "error" and event.message.code == errors.UNKNOWN_JOB and event.job_id in session.interrupted:
        job.state = "FAILED"
        job.message = "The local backend stopped before this job finished, so it was lost: Generate again."
    elif kind == "error" and event.message.code == errors.TAKEN_OVER:
        # Still running, for another client (another Blender with this file, `motionclone fetch`): not a failure,
        # and not fetched back on its own, or two clients would take it from each other.
        job.state = "ELSEWHERE"
        job.message = (
            "Another client fetched this job: its progress and result go there. Fetch Result Again brings it back here."
        )
    elif kind == "error" and event.message.code == errors.BACKEND_UNAVAILABLE:
        job.state = "FAILED"
        job.message = mark_unreachable(context, session)
    elif kind == "error":
        job.state = "FAILED"
        job.message = " ".join(part for part in (event.message.message, event.message.hint) if part)
    if job.state in ("DONE", "FAILED", "CANCELLED", "ELSEWHERE") and kind in ("result", "cancelled", "error"):
        note_ending(session, job)
    tag_redraw()


def wait_for_other_file(session: Session, event: Any, filepath: str) -> None:
    """An event of a job of `filepath`, a file that is closed now: the job follows that file. Its result is not
    acknowledged, so the backend keeps it until the file is opened again, when the job asks for it."""
    if event.kind == "accepted" and event.job_id:
        session.other_file_jobs[event.job_id] = filepath
    if event.kind == "result":
        session.connection.message = (
            f"A job of {Path(filepath).name} finished; its result waits on the backend: open that file to add it."
        )
        tag_redraw()


def keep_unsaved_file_result(context: bpy.types.Context, session: Session, event: Any) -> None:
    """A result of a job of an unsaved file that was closed: no file is its own, so its frames only go to disk where
    unsaved files' results go; `place_written_results` says where, and changes nothing in the open file."""
    parameters = event.message.metadata.get("parameters", {})
    seed = event.message.metadata.get("seed", parameters.get("seed", 0))
    base_name = f"{result_files.safe_name(str(parameters.get('prompt', '')))}-{seed}"
    root = preferences.unsaved_output_root(context)
    session.result_writes.append(ResultWrite(event, event.request_id or "", root, base_name, recovered=True))


def report_unsaved_file_result(session: Session, write: ResultWrite) -> None:
    """Say where the frames of a closed unsaved file's result are (the status bar and the panel), and let the
    backend forget it: no file will ask for it again."""
    session.forget_closed_unsaved(write.request_id, write.job_id)
    if write.error is not None:
        message = (
            f"A result of a job from an unsaved file that was closed could not be stored: {write.error}. The backend "
            f"keeps it for a while: fetch it with `motionclone fetch {write.job_id} --out FOLDER`."
        )
    else:
        message = (
            f"A job from an unsaved file that was closed finished: its {len(list(write.folder.glob('*.png')))} "
            f"frames are in {write.folder}, not added to this file. Add them from there (Add > Image/Sequence in "
            "the sequencer) if you want them here."
        )
        acknowledge(session, write.job_id)
    session.connection.message = message
    session.endings.append((time.monotonic(), f"MotionClone: {message}"))
    print(f"MotionClone: {message}")


def mark_result_undone(job: Any, folder: str) -> None:
    """Blender's data went back to before a result this session stored (undo, or reverting the file): the job is
    running again there, while the backend handed the result over. The job is done; its frames are in `folder`."""
    job.progress = 1.0
    job.strip_name = ""
    if not Path(folder).is_dir():
        job.state = "FAILED"
        job.message = f"This job's result was stored in {folder}, which is gone now: Generate again."
        return
    job.state = "DONE"
    job.result_dir = folder
    job.message = (
        f"Its result strip was taken back (undo or revert); the frames are in {folder}. Redo, or add them from there."
    )


def note_ending(session: Session, job: Any) -> None:
    """Remember for the status bar that `job` ended, with its outcome, and end its copies with it."""
    session.endings.append((time.monotonic(), f"MotionClone job (seed {job.seed}) {job.state.lower()}: {job.message}"))
    end_copies(job)


def end_copies(job: Any) -> None:
    """A scene copied while its job ran holds a copy of the job record, with the same ids. Events go to the first
    record only, so the copy would stay running for ever: it ends as the job did, pointing at where its outcome went."""
    for copy in all_jobs():
        same_job = bool(job.job_id) and copy.job_id == job.job_id
        same_request = bool(job.request_id) and copy.request_id == job.request_id  # recovered entries have none
        if (same_job or same_request) and copy.state in ACTIVE_STATES and copy != job:
            copy.state, copy.progress, copy.result_dir = job.state, job.progress, job.result_dir
            # Either entry may be the copy: the events went to whichever was found first.
            copy.message = (
                f"A scene copy made while the job ran holds it twice; its entry in scene '{job.id_data.name}' got "
                "the outcome"
            )


def status_lines(session: Session) -> list[tuple[str, float | None]]:
    """What the status bar shows: (text, progress) of every running job, then (text, None) of jobs that ended in
    the last ENDING_SHOWN_S seconds."""
    now = time.monotonic()
    session.endings = [(when, text) for when, text in session.endings if now - when < ENDING_SHOWN_S]
    lines: list[tuple[str, float | None]] = [
        (f"MotionClone (seed {job.seed}): {job.message or job.state.capitalize()}", job.progress)
        for job in all_jobs()
        if job.state in ACTIVE_STATES
    ]
    return lines + [(text, None) for _, text in session.endings]


def apply_progress(job: Any, event: Any) -> None:
    progress = event.message
    if progress.preview is not None and event.payload:
        folder = Path(bpy.app.tempdir or "/tmp") / "motionclone-previews"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{job.job_id or job.request_id}.png"
        path.write_bytes(event.payload)
        job.preview_path = str(path)
        show_preview(path)
        return
    job.state = "RUNNING"
    job.stage = progress.stage
    motion_source = json.loads(job.params_json or "{}").get("motion_source", "single-step")
    job.progress = stages.overall_progress(progress.stage, progress.step, progress.total, motion_source)
    eta = f", about {progress.eta:.0f} s left" if progress.eta is not None else ""
    job.message = f"{progress.stage.capitalize()} {progress.step}/{progress.total}{eta}"


def recover_result(context: bpy.types.Context, session: Session, event: Any) -> None:
    """A result whose job is in no list (undone or removed): store and place it under a new job entry."""
    apply_result(context, session, recovered_job(context, event), event, recovered=True)


def recovered_job(context: bpy.types.Context, event: Any) -> Any:
    """A new job entry for a result whose job is in no list: as its entry was when this session submitted it (its
    frames, its scenes), else from the scene's first frame, one scene frame per result frame, in the scene the
    sequencer shows."""
    submitted = get_session().submitted_entry(event.job_id) if event.job_id else None
    if submitted is not None:
        return job_as_submitted(context, event, submitted)
    result = event.message
    parameters = result.metadata.get("parameters", {})
    scene = compat.sequencer_scene(context)
    count = int(result.frames.shape[0])
    job = scene.motionclone.jobs.add()
    job.job_id = event.job_id or ""
    job.prompt = str(parameters.get("prompt", ""))
    job.seed = int(result.metadata.get("seed", parameters.get("seed", 0)))
    job.frame_start, job.frame_end = scene.frame_start, scene.frame_start + count - 1
    job.sampled_frames = json.dumps(list(range(job.frame_start, job.frame_end + 1)))
    job.params_json = json.dumps(parameters)
    job.result_scene = scene
    job.state = "RUNNING"
    return job


def job_as_submitted(context: bpy.types.Context, event: Any, submitted: dict[str, Any]) -> Any:
    """The entry of `submitted` (`Session.remember_submitted`) again, in its own scene if that is still there."""
    owner = bpy.data.scenes.get(submitted["scene"]) or compat.sequencer_scene(context)
    job = owner.motionclone.jobs.add()
    for name in SUBMITTED_FIELDS:
        setattr(job, name, submitted[name])
    job.job_id = event.job_id
    job.result_scene = bpy.data.scenes.get(submitted["result_scene"]) if submitted["result_scene"] else None
    job.state = "RUNNING"
    return job


def apply_result(context: bpy.types.Context, session: Session, job: Any, event: Any, recovered: bool = False) -> None:
    """Start writing the frames into a new folder on a thread of their own; `place_written_results` adds the strip
    and acknowledges once they are on disk."""
    base_name = f"{result_files.safe_name(job.prompt)}-{job.seed}"
    write = ResultWrite(event, job.request_id, preferences.output_root(context), base_name, recovered)
    session.result_writes.append(write)
    job.progress = 1.0
    job.message = f"Saving the {int(event.message.frames.shape[0])} result frames"


def finish_pending_results(wait_s: float = 60.0) -> None:
    """Before the add-on goes (disabled, reloaded, or Blender quits): place every result being written, waiting up
    to `wait_s` for each, so that no result that arrived is dropped. They are not acknowledged: when Blender quits,
    this runs after the last chance to save, and the saved file's job fetches its result again when opened (Blender
    does not say whether it quits or the add-on is only disabled; the backend keeps such a result until its retention
    time ends)."""
    session, context = get_session(), bpy.context
    for write in session.result_writes:
        write.wait(wait_s)
    place_written_results(context, session, acknowledge_results=False)


def place_written_results(context: bpy.types.Context, session: Session, acknowledge_results: bool = True) -> None:
    """For every result whose frames are written: add its strip, or report why not (the backend keeps the result
    until it is acknowledged, so Fetch Result Again can store it later)."""
    written, pending = [], []
    for write in session.result_writes:  # `done` read once per write: one may finish while this runs
        (written if write.done else pending).append(write)
    session.result_writes = pending
    for write in written:
        unsaved = session.of_closed_unsaved_file(write.request_id, write.job_id)
        if unsaved and find_job(write.request_id, write.job_id) is None:
            report_unsaved_file_result(session, write)  # its job's file is gone: not placed into this one
            continue
        if filepath := session.other_file_of(write.request_id, write.job_id):
            # Its file was closed while the frames were written: the result is not placed in this one, nor
            # acknowledged, so that the job fetches it again when its file is open.
            wait_for_other_file(session, write.event, filepath)
            continue
        try:
            if write.error is not None:
                raise write.error
            job = find_job(write.request_id, write.job_id)
            if job is None:  # undone or removed while its frames were written
                job, write.recovered = recovered_job(context, write.event), True
            place_result(session, job, write.event, write.folder, acknowledge_results)
            if write.recovered:
                job.message = f"Recovered a result whose job was no longer listed. {job.message}"
        except Exception as error:  # any failure of one result must leave the pump running
            report_event_failure(session, write.event, error)
        job = find_job(write.request_id, write.job_id)
        if job is not None:
            note_ending(session, job)
    if written:
        tag_redraw()


def place_result(session: Session, job: Any, event: Any, folder: Path, acknowledge_result: bool = True) -> None:
    """Add the strip of the frames in `folder`, mark the job done, and acknowledge (unless told not to)."""
    result = event.message
    scene = scene_of(job)
    takes_over = sequencer.first_strip_takes_over_render(scene)
    files = sorted(path.name for path in folder.glob("*.png"))
    strip = sequencer.add_result_strip(
        scene,
        folder,
        files,
        json.loads(job.sampled_frames),
        job.frame_start,
        job.frame_end,
        name=f"MotionClone {job.seed}",
        properties={
            "motionclone_prompt": job.prompt,
            "motionclone_seed": int(result.metadata.get("seed", job.seed)),
            "motionclone_job_id": event.job_id,
            "motionclone_config": job.config,
            "motionclone_backend_version": str(result.metadata.get("job", {}).get("server_version", "")),
            **({"motionclone_condition": job.condition_json} if job.condition_json else {}),
        },
    )
    job.result_dir = str(folder)
    session.stored_results[event.job_id] = str(folder)
    job.strip_name = strip.name
    job.state = "DONE"
    job.progress = 1.0
    job.message = f"Added strip '{strip.name}' on channel {strip.channel}"
    notes = [str(warning) for warning in result.metadata.get("warnings", [])]
    if takes_over:  # the artist's settings stay; they are told how the render changed and how to change it back
        notes.append(sequencer.render_takeover_note(scene))
    job.notes = "\n".join(notes)
    push_undo("MotionClone result")
    if acknowledge_result:
        acknowledge(session, event.job_id)


def acknowledge(session: Session, job_id: str) -> None:
    """The result is stored: the backend may delete its copy. Without a client (the local backend stopped while the
    frames were written) it keeps the copy until it expires, and the job is done all the same."""
    if session.client is not None:
        session.client.ack(job_id)


def show_preview(path: Path) -> None:
    """Point the preview image at `path` (draw code may not load images, so the pump does)."""
    show_image(PREVIEW_IMAGE, path)
