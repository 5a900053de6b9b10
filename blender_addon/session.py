"""The add-on's link to the backend: one protocol client and the local backend it may start. No torch.

Network I/O happens on the client's own thread; `event_pump.pump()` applies what it receives to Blender data.

With a local backend (preferences: Local), Generate starts it when none runs. Its jobs wait here, "held", while it
starts and loads its model, and are submitted once its log says it listens: the client would give up on a Submit
that gets no Welcome within the timeout, and loading real weights takes longer than that.
"""

import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np

from . import local_backend, preferences
from ._protocol import client as protocol_client
from ._protocol import keys
from .job_records import HELD_PREFIX, all_jobs, find_job, follow_active_jobs, held_jobs, tag_redraw
from .model_fit import ModelDefaults
from .properties import ACTIVE_STATES

STOP_WAIT_S = 5.0  # on quit or disable, how long the local backend gets to stop before it is killed
# A job entry's fields that say what its result is and where it goes (`Session.remember_submitted`).
SUBMITTED_FIELDS = (
    "prompt",
    "seed",
    "config",
    "frame_start",
    "frame_end",
    "frame_mode",
    "frame_step",
    "sampled_frames",
    "params_json",
    "condition_json",
)
# Why a job sent but never accepted is failed: this session has no request of it whose answer could still come (the
# file was saved before the answer and opened again, or the add-on was disabled, reloaded or updated meanwhile).
UNTRACKED_JOB = (
    "The backend had not accepted this job when the add-on lost track of it (the file was saved before the answer "
    "came, or the add-on was reloaded): it may or may not have reached the backend, and its result cannot come here. "
    "Generate again, and Remove this entry."
)
UNSENT_HELD_JOB = (
    "This job was waiting for the local backend and was never sent (the file was saved and opened again, or the "
    "add-on was reloaded, meanwhile): Generate again."
)
SETTINGS_CHANGED = "The backend settings changed before the backend accepted this job: Generate again."


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
    model: ModelDefaults = field(default_factory=ModelDefaults)  # what the backend's model was made for
    condition_types: tuple[str, ...] | None = None  # the SparseCtrl kinds it runs; None: not known
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
        # job id -> folder of every result stored in this session. Python memory, not Blender data: undo cannot take
        # it back, so a job that undo set back to running can still be told where its frames are.
        self.stored_results: dict[str, str] = {}
        self.local_check: list[str] = []  # what the preferences' Check button found, shown under it
        # Request and job ids of running jobs of saved files that were closed: their results stay on the backend
        # until that file is opened again, instead of landing in whichever file is open.
        self.other_file_jobs: dict[str, str] = {}  # id -> the .blend file it belongs to
        # Request and job ids of running jobs of an unsaved file that was closed: no file can take their results, so
        # they are only stored (`preferences.unsaved_output_root`), never placed into whichever file is open.
        self.closed_unsaved_jobs: set[str] = set()
        self.result_writes: list[Any] = []  # `ResultWrite`s whose frames are going to disk
        # Request id -> job id ("" until accepted) of every job this session sent: a file saved before the answer
        # came has a job without a job id, which it learns here when opened again (or is told it was never accepted).
        self.sent: dict[str, str] = {}
        # Held id -> the request id it was sent under: undo, revert or reopening can bring back the job as it was
        # while it waited for the local backend.
        self.held_sent: dict[str, str] = {}
        # Request id -> what the job's list entry said when it was submitted, so that a result whose entry undo took
        # away is placed on the frames it was made for (`SUBMITTED_FIELDS`, and its scenes by name).
        self.submitted: dict[str, dict[str, Any]] = {}

    def other_file_of(self, request_id: str | None, job_id: str | None) -> str | None:
        """The closed .blend file a job belongs to (by either id), or None when it is the open file's."""
        return self.other_file_jobs.get(request_id or "") or self.other_file_jobs.get(job_id or "")

    def remember_submitted(self, job: Any) -> None:
        """Keep what `job`'s entry says, for `submitted_entry`."""
        entry = {name: getattr(job, name) for name in SUBMITTED_FIELDS}
        entry["scene"] = job.id_data.name
        entry["result_scene"] = job.result_scene.name if job.result_scene is not None else ""
        self.submitted[job.request_id] = entry

    def submitted_entry(self, job_id: str) -> dict[str, Any] | None:
        """What the entry of the job the backend accepted as `job_id` said when it was submitted, if this session
        submitted it."""
        for request_id, accepted in self.sent.items():
            if accepted and accepted == job_id and request_id in self.submitted:
                return self.submitted[request_id]
        return None

    def drop_held(self, request_id: str) -> bool:
        """Take a job that waits for the local backend out of the waiting list; False when it is not waiting."""
        kept = [item for item in self.held if item.request_id != request_id]
        dropped = len(kept) < len(self.held)
        self.held = kept
        return dropped

    def open_file(self, filepath: str) -> None:
        """A file was opened: jobs remembered as its own while another was open belong to the open file again."""
        self.other_file_jobs = {key: path for key, path in self.other_file_jobs.items() if path != filepath}

    def leave_file(self, filepath: str) -> None:
        """The open file is about to be replaced: remember its running jobs as another file's. An unsaved file's jobs
        have no file to go back to: their results are kept on disk, not placed into the next file."""
        for job in all_jobs():
            if job.state in ACTIVE_STATES:
                for key in (job.request_id, job.job_id):
                    if key and filepath:
                        self.other_file_jobs[key] = filepath
                    elif key:
                        self.closed_unsaved_jobs.add(key)

    def of_closed_unsaved_file(self, request_id: str | None, job_id: str | None) -> bool:
        """Whether a job (by either id) belongs to an unsaved file that was closed."""
        return any(key and key in self.closed_unsaved_jobs for key in (request_id, job_id))

    def forget_closed_unsaved(self, request_id: str | None, job_id: str | None) -> None:
        self.closed_unsaved_jobs -= {request_id, job_id}

    def tracks_request(self, job: Any) -> bool:
        """Whether an answer to `job`'s request can still come to this session: sent by its client and not answered,
        or held for the local backend."""
        waiting = any(item.request_id == job.request_id for item in self.held)
        return waiting or self.sent.get(job.request_id) == ""

    def lost_job_message(self, job: Any) -> str:
        """Why a job this session has no request of (`tracks_request`) can never be accepted here."""
        return UNSENT_HELD_JOB if job.request_id.startswith(HELD_PREFIX) else UNTRACKED_JOB

    def settle_submitted_jobs(self, lost_message: str) -> None:
        """Jobs sent and not accepted yet, in the open file: take the job id the backend answered meanwhile (another
        file was open), and fail with `lost_message` those whose answer cannot come here any more, instead of leaving
        them "Sent" for ever (held ones are left to `refetch_active_jobs` and the local backend)."""
        for job in all_jobs():
            if job.state != "SUBMITTED" or job.job_id or job.request_id.startswith(HELD_PREFIX):
                continue
            if self.sent.get(job.request_id):
                job.job_id, job.state = self.sent[job.request_id], "QUEUED"
            elif job.request_id not in self.sent:
                job.state = "FAILED"
                job.message = lost_message

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
        try:
            client = protocol_client.Client(
                endpoint,
                client_name=f"blender-{bpy.app.version_string}",
                heartbeat_interval=heartbeat,
                dead_after=prefs.timeout,
                max_backoff=max(heartbeat, 4.0),
                **options,
            )
        except ValueError as error:  # an address with no port, a key pair that does not belong together, ...
            raise RuntimeError(f"The backend settings in the add-on preferences cannot be used: {error}") from error
        self.client = client.start()
        self.settings_key = settings_key
        self.connection = Connection("connecting", f"Connecting to {endpoint} ...")
        # A new client has none of the requests an earlier one (or the add-on before a reload) sent: it asks for
        # every running job of the open file, and jobs whose acceptance can only reach an earlier client end here.
        self.settle_submitted_jobs(SETTINGS_CHANGED if reconfigured else UNTRACKED_JOB)
        follow_active_jobs(self.client)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        # Jobs the closed client sent and never heard back about: their answers (or errors) are gone with it.
        self.sent = {request_id: job_id for request_id, job_id in self.sent.items() if job_id}
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
        request_id = self.ensure_client(context).submit(frames, params, fps=fps, condition=condition)
        self.sent[request_id] = ""
        return request_id

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

    def max_message_bytes(self) -> int:
        """The largest message a job may make: the client's limit (lowered by the backend's once connected)."""
        if self.client is None:
            return protocol_client.DEFAULT_LIMITS.max_message_bytes
        return self.client.max_message_bytes()

    def quiet_client(self) -> AbstractContextManager:
        """Keeps the protocol client's thread idle while Blender renders (`Client.quiet`); nothing without a client."""
        return self.client.quiet() if self.client is not None else nullcontext()

    def settings_key_endpoint(self) -> str | None:
        return self.settings_key[0] if self.settings_key else None

    def connect_local(self, context: bpy.types.Context) -> None:
        """The local backend is ready: point the client at it, follow the jobs it accepted before (their results
        wait in its results folder) and send the held ones."""
        client = self.ensure_client(context)  # a new client follows the running jobs (`ensure_client`)
        held, self.held = self.held, []
        for item in held:
            job = find_job(item.request_id, None)
            if job is None or job.state != "SUBMITTED":
                continue  # removed or undone while it waited: nothing to send
            try:
                job.request_id = client.submit(item.frames, item.params, fps=item.fps, condition=item.condition)
                self.sent[job.request_id] = ""
                self.held_sent[item.request_id] = job.request_id
                if item.request_id in self.submitted:
                    self.submitted[job.request_id] = self.submitted[item.request_id]
            except (ValueError, RuntimeError) as error:  # refused before sending (too large, client closed)
                job.state = "FAILED"
                job.message = f"Not sent: {error} Change the settings and Generate again."
                continue  # the other held jobs still go
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
        if not _session.local.keep_running and not _session.local.borrowed:
            _session.local.stop(wait=STOP_WAIT_S)
    _session = None


def refetch_active_jobs(context: bpy.types.Context) -> int:
    """Ask the backend again for every job of the open file that was still running (after loading a file, after
    undo, and once the add-on is registered). Returns how many are followed."""
    session = get_session()
    settle_held_jobs(session)
    session.settle_submitted_jobs(UNTRACKED_JOB)
    if not any(job.state in ACTIVE_STATES and job.job_id for job in all_jobs()):
        return 0
    client = session.client
    session.prepare(context)  # a local backend that is starting follows them once it is ready
    if session.client is None:
        return 0
    if session.client is not client:  # a new client followed them already
        return sum(1 for job in all_jobs() if job.state in ACTIVE_STATES and job.job_id)
    return follow_active_jobs(session.client)


def settle_held_jobs(session: Session) -> None:
    """Held jobs of the open file: sent since (undo or revert brought back their state before), still waiting, or
    lost with the session that held them."""
    waiting = {item.request_id for item in session.held}
    for job in held_jobs():
        if job.request_id in session.held_sent:
            job.request_id = session.held_sent[job.request_id]
        elif job.request_id not in waiting:
            job.state = "FAILED"
            job.message = UNSENT_HELD_JOB
