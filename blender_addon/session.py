"""The add-on's link to the backend: one protocol client, the local backend it may start, and the pump that applies
their events to Blender data.

Network I/O happens on the client's own thread. Blender data is touched only here, in `pump()`, which the
persistent timer calls on the main thread (tests call it directly: timers never fire in background mode). No torch.

With a local backend (preferences: Local), Generate starts it when none runs. Its jobs wait here, "held", while it
starts and loads its model, and are submitted once its log says it listens: the client would give up on a Submit
that gets no Welcome within the timeout, and loading real weights takes longer than that.
"""

import json
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import compat, local_backend, preferences, result_files, sequencer
from ._protocol import client as protocol_client
from ._protocol import errors, keys, stages
from .properties import ACTIVE_STATES
from .thumbnails import show_image

PUMP_INTERVAL_ACTIVE = 0.1
PUMP_INTERVAL_IDLE = 0.5
# The image datablock the panel shows the latest preview from (it has no users, so it is never saved).
PREVIEW_IMAGE = "MotionClone Preview"
# A job in one of these states is over: late or repeated events never set it back.
FINISHED_STATES = {"DONE", "CANCELLED"}
BUSY_LOCAL = ("starting", "loading", "stopping")  # local backend states the pump follows closely
ENDING_SHOWN_S = 10.0  # how long the status bar reports a job that ended
HELD_PREFIX = "held-"  # request ids of jobs waiting here for the local backend to be ready
STOP_WAIT_S = 5.0  # on quit or disable, how long the local backend gets to stop before it is killed


@dataclass
class HeldSubmit:
    """A job waiting for the local backend: everything `Client.submit` takes."""

    request_id: str
    frames: np.ndarray
    params: dict[str, Any]
    fps: float
    condition: Any


@dataclass
class Connection:
    """What the panel shows about the backend link (plain values; safe to read from draw code)."""

    state: str = "disconnected"  # disconnected, connecting, connected, unreachable
    message: str = ""
    server_version: str = ""
    device: str = ""
    default_preset: str = ""
    queued: int | None = None  # from the backend's last status answer; None: not asked yet (or an older backend)
    running: int | None = None

    def describe(self) -> str:
        """One line for a report: what the backend answered, or where the connection stands."""
        if self.state != "connected":
            return self.message or self.state.capitalize()
        line = (
            f"Connected: MotionClone backend {self.server_version} on {self.device}, "
            f"default model {self.default_preset or 'unknown'}"
        )
        return line if self.queued is None else f"{line}, {self.queue_text()}"

    def queue_text(self) -> str:
        return f"{self.running} running, {self.queued} waiting"


class Session:
    """Owns the protocol client for the current preferences. It lives as long as the add-on is enabled; only a
    change of endpoint, keys or timeout replaces it, and the jobs the old one followed move to the new one."""

    def __init__(self) -> None:
        self.client: Any = None
        self.settings_key: tuple | None = None
        self.connection = Connection()
        self.endings: list[tuple[float, str]] = []  # (when, what) of jobs that ended, for the status bar
        self.status_request: str | None = None  # the last "status" asked for, whose answer updates `connection`
        self.local = local_backend.LocalBackend()
        self.local_state_seen = self.local.state  # what the pump last acted on
        self.held: list[HeldSubmit] = []
        self.interrupted: set[str] = set()  # ids of jobs that were queued or running when the local backend went down
        self.local_check: list[str] = []  # what the preferences' Check button found, shown under it

    def request_status(self) -> None:
        """Ask the backend how busy it is; the answer comes to the pump as a "server_status" event."""
        if self.client is not None and self.client.connected:
            self.status_request = self.client.status()

    def ensure_client(self, context: bpy.types.Context) -> Any:
        """The running client for the current preferences; raises RuntimeError with a user-facing message.

        With a local backend, starts it when none runs and raises until it is ready."""
        prefs = preferences.get_preferences(context)
        if prefs.backend_mode == "LOCAL":
            endpoint, server_key, client_key = self.local_endpoint(context), None, None
        else:
            problem = preferences.online_access_problem(prefs.endpoint)
            if problem:
                raise RuntimeError(problem)
            endpoint, (server_key, client_key) = prefs.endpoint, preferences.key_paths(prefs)
        settings_key = (endpoint, server_key, client_key, round(prefs.timeout, 3))
        if self.client is not None and settings_key == self.settings_key:
            return self.client
        reconfigured = self.client is not None
        self.close()
        options: dict[str, Any] = {}
        try:
            if server_key:
                options["server_public_key"] = keys.load_public_key(server_key)
            if client_key:
                options["client_public_key"], options["client_secret_key"] = keys.load_key_pair(client_key)
        except (OSError, ValueError) as error:
            raise RuntimeError(f"Cannot read the key files set in the add-on preferences: {error}") from error
        heartbeat = min(1.0, prefs.timeout / 3)
        self.client = protocol_client.Client(
            endpoint,
            client_name=f"blender-{bpy.app.version_string}",
            heartbeat_interval=heartbeat,
            dead_after=prefs.timeout,
            max_backoff=max(heartbeat, 4.0),
            **options,
        ).start()
        self.settings_key = settings_key
        self.connection = Connection("connecting", f"Connecting to {endpoint} ...")
        if reconfigured:
            fail_unaccepted_jobs("The backend settings changed before the backend accepted this job: Generate again.")
            follow_active_jobs(self.client)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.settings_key = None
        self.connection = Connection()

    # ---- the local backend ---------------------------------------------------------------------------------------
    def start_local(self, context: bpy.types.Context) -> None:
        """Make sure the local backend runs: adopt one an earlier Blender left running, else start one. Returns at
        once; raises LocalBackendError (a RuntimeError) with what to fix."""
        if not self.local.running:
            self.local.ensure_running(preferences.local_settings(context))
            tag_redraw()

    def local_endpoint(self, context: bpy.types.Context) -> str:
        """The ready local backend's endpoint; starts one when none runs, and raises RuntimeError until it is ready."""
        self.start_local(context)
        if self.local.state != "ready":
            raise RuntimeError(f"{self.local.message} The local backend is not ready yet: try again in a moment.")
        return self.local.endpoint

    def prepare(self, context: bpy.types.Context) -> None:
        """Before a job: connect to the backend, or start the local one (its jobs are held until it is ready)."""
        if preferences.get_preferences(context).backend_mode == "LOCAL":
            self.start_local(context)
            if self.local.state != "ready":
                return
        self.ensure_client(context)

    def submit(
        self, context: bpy.types.Context, frames: np.ndarray, params: dict[str, Any], fps: float, condition: Any
    ) -> str:
        """Submit a job, or hold it while the local backend starts. Returns its request id (held ones: HELD_PREFIX)."""
        if preferences.get_preferences(context).backend_mode == "LOCAL":
            self.start_local(context)
            if self.local.state != "ready":
                request_id = f"{HELD_PREFIX}{uuid.uuid4().hex}"
                self.held.append(HeldSubmit(request_id, frames, params, fps, condition))
                return request_id
        return self.ensure_client(context).submit(frames, params, fps=fps, condition=condition)

    def job_message(self, request_id: str) -> str:
        """What a job just submitted says: sent, or waiting for the local backend."""
        return self.local.message if request_id.startswith(HELD_PREFIX) else "Sent to the backend"

    def watch_local(self, context: bpy.types.Context) -> None:
        """Follow the local backend's log and life: connect when it is ready, tell the jobs when it is down."""
        self.local.poll()
        # Compared with what the pump last saw, not with poll()'s answer: Stop may have seen the exit already.
        changed, self.local_state_seen = self.local.state != self.local_state_seen, self.local.state
        local_mode = preferences.get_preferences(context).backend_mode == "LOCAL"
        if local_mode and self.local.state == "ready" and self.settings_key_endpoint() != self.local.endpoint:
            self.connect_local(context)
        elif changed and self.local.state in ("starting", "loading"):
            for job in held_jobs():
                job.message = self.local.message
        elif changed and self.local.state in ("crashed", "stopped"):
            self.on_local_down(local_mode)
        if changed:
            tag_redraw()

    def settings_key_endpoint(self) -> str | None:
        return self.settings_key[0] if self.settings_key else None

    def connect_local(self, context: bpy.types.Context) -> None:
        """The local backend is ready: point the client at it, follow the jobs it accepted before (their results
        wait in its results folder) and send the held ones."""
        had_client = self.client is not None
        client = self.ensure_client(context)  # a new endpoint: the old client's followed jobs move along
        if not had_client:
            follow_active_jobs(client)
        held, self.held = self.held, []
        for item in held:
            job = find_job(item.request_id, None)
            if job is None or job.state != "SUBMITTED":
                continue  # removed or undone while it waited: nothing to send
            job.request_id = client.submit(item.frames, item.params, fps=item.fps, condition=item.condition)
            job.message = "Sent to the backend"

    def on_local_down(self, local_mode: bool) -> None:
        """The local backend exited: fail the jobs it never accepted, and say how the others come back."""
        reason = self.local.message
        if local_mode:
            self.close()  # its endpoint is gone; a restart listens on a new port
            self.connection = Connection("unreachable", reason)
        self.held.clear()
        for job in all_jobs():
            if job.state == "SUBMITTED" and (local_mode or job.request_id.startswith(HELD_PREFIX)):
                job.state = "FAILED"
                job.message = f"{reason} It never accepted this job: Generate again once it runs."
            elif job.state in ACTIVE_STATES and job.job_id and local_mode:
                job.message = "The backend is down: Start (or Restart) Backend fetches this job if it finished."
                self.interrupted.add(job.job_id)

    def stop_local(self, wait: float = 0.0) -> None:
        """Stop the local backend (the pump reports it stopped); `wait` as in `LocalBackend.stop`."""
        self.local.stop(wait)
        tag_redraw()


_session: Session | None = None


def get_session() -> Session:
    global _session
    if _session is None:
        _session = Session()
    return _session


def close_session() -> None:
    """Close the client, and stop the local backend unless it should keep running (Blender quits, or the add-on is
    disabled). Touches no Blender data: it also runs at exit."""
    global _session
    if _session is not None:
        _session.close()
        if not _session.local.keep_running:
            _session.local.stop(wait=STOP_WAIT_S)
    _session = None


# ---- the pump ------------------------------------------------------------------------------------------------------
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
        # After the events: whatever the backend sent before it exited is applied before its exit is.
        session.watch_local(context)
        busy = any_active_job() or session.connection.state == "connecting" or session.local.state in BUSY_LOCAL
    except Exception:  # the same for anything around the events
        traceback.print_exc()
        return PUMP_INTERVAL_IDLE
    return PUMP_INTERVAL_ACTIVE if busy else PUMP_INTERVAL_IDLE


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
    job = find_job(event.request_id, event.job_id)
    if job is None:
        if kind == "result":
            recover_result(context, session, event)  # its job was undone or removed: the result is still kept
        elif kind == "error":
            session.connection.message = event.message.message
        return
    if job.state in FINISHED_STATES:
        if kind == "result":
            session.client.ack(event.job_id)  # a repeated result of a stored job: the backend may forget it
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
    elif kind == "result":
        apply_result(context, session, job, event)
    elif kind == "cancelled":
        job.state = "CANCELLED"
        job.message = "Cancelled"
    elif kind == "error" and event.message.code == errors.UNKNOWN_JOB and event.job_id in session.interrupted:
        job.state = "FAILED"
        job.message = "The local backend stopped before this job finished, so it was lost: Generate again."
    elif kind == "error" and event.message.code == errors.BACKEND_UNAVAILABLE:
        job.state = "FAILED"
        job.message = mark_unreachable(context, session)
    elif kind == "error":
        job.state = "FAILED"
        job.message = " ".join(part for part in (event.message.message, event.message.hint) if part)
    if job.state in ("DONE", "FAILED", "CANCELLED") and kind in ("result", "cancelled", "error"):
        note_ending(session, job)
    tag_redraw()


def note_ending(session: Session, job: Any) -> None:
    """Remember for the status bar that `job` ended, with its outcome."""
    session.endings.append((time.monotonic(), f"MotionClone job (seed {job.seed}) {job.state.lower()}: {job.message}"))


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
    """A result whose job is in no list (undone or removed): store and place it under a new job entry, from the
    scene's first frame, one scene frame per result frame, in the scene the sequencer shows."""
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
    job.target_scene = scene.name
    job.state = "RUNNING"
    apply_result(context, session, job, event, remember_seed=False)
    job.message = f"Recovered a result whose job was no longer listed. {job.message}"


def apply_result(
    context: bpy.types.Context, session: Session, job: Any, event: Any, remember_seed: bool = True
) -> None:
    """Write the frames into a new folder, add the strip, write the seed used back, acknowledge."""
    result = event.message
    frames = event.frames()
    scene = scene_of(job)
    folder = result_files.write_result_frames(
        preferences.output_root(context), f"{result_files.safe_name(job.prompt)}-{job.seed}", frames
    )
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
    job.strip_name = strip.name
    job.state = "DONE"
    job.progress = 1.0
    job.message = f"Added strip '{strip.name}' on channel {strip.channel}"
    if remember_seed:
        job.id_data.motionclone.seed = int(result.metadata.get("seed", job.seed))  # the seed actually used
    push_undo("MotionClone result")
    session.client.ack(event.job_id)


def push_undo(message: str) -> None:
    """Make what the pump just did one undo step of its own, so that Ctrl+Z takes back the user's last action and
    not a result with it. Background mode has no undo stack."""
    if not bpy.app.background and bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message=message)


def show_preview(path: Path) -> None:
    """Point the preview image at `path` (draw code may not load images, so the pump does)."""
    show_image(PREVIEW_IMAGE, path)


def tag_redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "SEQUENCE_EDITOR"):
                area.tag_redraw()


# ---- finding jobs --------------------------------------------------------------------------------------------------
def all_jobs():
    for scene in bpy.data.scenes:
        yield from scene.motionclone.jobs


def find_job(request_id: str | None, job_id: str | None) -> Any:
    for job in all_jobs():
        if (job_id and job.job_id == job_id) or (request_id and job.request_id == request_id):
            return job
    return None


def scene_of(job: Any) -> bpy.types.Scene:
    """Where the job's result goes: the scene the sequencer showed at Generate, else the job's own scene."""
    target = bpy.data.scenes.get(job.target_scene) if job.target_scene else None
    return target or job.id_data


def any_active_job() -> bool:
    return any(job.state in ACTIVE_STATES for job in all_jobs())


def fail_unaccepted_jobs(message: str) -> None:
    """Fail the jobs sent to a backend that never accepted them (held ones wait for the local backend instead)."""
    for job in all_jobs():
        if job.state == "SUBMITTED" and not job.request_id.startswith(HELD_PREFIX):
            job.state = "FAILED"
            job.message = message


def held_jobs():
    return (job for job in all_jobs() if job.state == "SUBMITTED" and job.request_id.startswith(HELD_PREFIX))


def refetch_active_jobs(context: bpy.types.Context) -> int:
    """Ask the backend again for every job of the open file that was still running (after loading a file)."""
    session = get_session()
    waiting = {item.request_id for item in session.held}
    for job in held_jobs():
        if job.request_id not in waiting:  # saved while it waited for the local backend: its frames are gone
            job.state = "FAILED"
            job.message = (
                "This job waited for the local backend when the file was saved and was never sent: Generate again."
            )
    if not any(job.state in ACTIVE_STATES and job.job_id for job in all_jobs()):
        return 0
    session.prepare(context)  # a local backend that is starting follows them once it is ready
    if session.client is None:
        return 0
    return follow_active_jobs(session.client)


def follow_active_jobs(client: Any) -> int:
    """Have `client` fetch every running job the backend accepted, so that their events reach it."""
    active = [job for job in all_jobs() if job.state in ACTIVE_STATES and job.job_id]
    for job in active:
        client.fetch(job.job_id)
    return len(active)
