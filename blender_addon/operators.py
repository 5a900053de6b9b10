"""Operators: each translates the panel's state into one call and reports errors in one place. No torch."""

import os
import random
from typing import Any, NamedTuple

import bpy

from . import compat, jobs, local_backend, model_fit, preferences, reference_cache
from ._protocol import errors
from .job_records import push_undo, scene_of
from .properties import ACTIVE_STATES
from .reference import CameraRender, RenderCancelled, StripRead
from .session import Connection, get_session

USER_ERRORS = (ValueError, RuntimeError, RenderCancelled, errors.BackendUnavailable)
# Event types that are not keys: the mouse and its wheel, trackpads, pens, 3D mice, timers and window events.
# What a reference render lets through to Blender: looking around (mouse moves, wheel, middle-mouse orbit, trackpad,
# 3D mouse) and Blender's own timers and window events. A click or a key could change a setting or push an undo step
# while the render's temporary settings are in place (and Ctrl+Z could later bring them back), so those wait.
PASSED_WHILE_RENDERING = (
    "MOUSEMOVE",
    "INBETWEEN_MOUSEMOVE",
    "MIDDLEMOUSE",
    "WHEEL",
    "TRACKPAD",
    "MOUSEPAN",
    "MOUSEZOOM",
    "MOUSEROTATE",
    "MOUSESMARTZOOM",
    "NDOF",
    "TIMER",
    "WINDOW",
)

# Reference renders in progress (Generate from the UI renders one frame per timer tick). While one runs, the scene
# holds the render's temporary settings (engine, size, output path, camera), which a save would write into the file;
# `stop_renders` ends them first. Anything with a `stop(context, reason)` method.
rendering: list[Any] = []


@bpy.app.handlers.persistent
def stop_renders(*_args) -> None:
    """Before a save, a file load, an undo or a redo: stop every reference render, which puts the artist's settings
    back (an undo step must not see the render's temporary ones)."""
    for render in list(rendering):
        render.stop(bpy.context, "the file was saved, loaded, undone or redone during it")


class ReadWords(NamedTuple):
    """What the status bar and the reports say about a frame-by-frame reference."""

    doing: str
    cancelled: str
    stopped: str  # with {reason}


READ_WORDS = {
    CameraRender: ReadWords(
        "rendering the reference",
        "Reference render cancelled; your render settings are as they were",
        "Reference render stopped: {reason}. Your render settings are as they were; Generate again",
    ),
    StripRead: ReadWords(
        "reading the reference strip",
        "Reference strip read cancelled",
        "Reference strip read stopped: {reason}. Generate again",
    ),
}


class MOTIONCLONE_OT_generate(bpy.types.Operator):
    """Render the reference and send a MotionClone job to the backend"""

    bl_idname = "motionclone.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.scene is None:
            return False
        if not context.scene.motionclone.prompt.strip():
            cls.poll_message_set("Write a prompt first")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Scripts and background mode: render and send in one go.
        try:
            job = jobs.start_job(context, context.scene)
        except USER_ERRORS as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        push_undo("MotionClone Generate")
        self.report({"INFO"}, f"MotionClone job sent (seed {job.seed})")
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        # From the UI, a camera reference renders (a strip reference is read) one frame per timer tick: the UI stays
        # alive, the status bar shows the progress, and Esc cancels (every render setting is restored).
        if bpy.app.background:
            return self.execute(context)
        started = self.begin(context)
        if started == {"RUNNING_MODAL"}:
            context.window_manager.modal_handler_add(self)
        return started

    def begin(self, context: bpy.types.Context) -> set[str]:
        """Plan the job and start the frame-by-frame render (or strip read); a reference rendered before from the
        same scene state is sent at once instead."""
        settings = context.scene.motionclone
        try:
            self._scene = context.scene
            self._plan = plan = jobs.plan_job(context, self._scene)
            self._key = None  # a strip is read again each time: its files may have changed on disk
            if settings.source == "STRIP":
                self._render = jobs.strip_read(settings, plan.frames, plan.width, plan.height).__enter__()
            else:
                self._key = reference_cache.render_key(self._scene, settings, plan.frames, plan.width, plan.height)
                reused = jobs.reused_reference(settings, self._key)
                if reused is not None:  # nothing in the scene changed since the last render: no need to render again
                    job = jobs.submit_jobs(context, self._scene, plan, reused)[0]
                    push_undo("MotionClone Generate")
                    self.report({"INFO"}, f"MotionClone job sent with the last reference render (seed {job.seed})")
                    return {"FINISHED"}
                self._render = jobs.camera_render(
                    self._scene, settings, plan.frames, plan.width, plan.height
                ).__enter__()
        except USER_ERRORS as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(0.01, window=context.window)
        self._stopped = ""
        rendering.append(self)
        self._show_progress(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self._timer is None:  # stopped from outside (`stop_renders`)
            self.report({"WARNING"}, READ_WORDS[type(self._render)].stopped.format(reason=self._stopped))
            return {"CANCELLED"}
        if event.type in {"ESC", "RIGHTMOUSE"}:
            self._finish(context)
            self.report({"WARNING"}, READ_WORDS[type(self._render)].cancelled)
            return {"CANCELLED"}
        if event.type != "TIMER":
            # With Ctrl, Alt or Shift the wheel (or trackpad) changes a field's value or the frame; a 3D mouse's
            # buttons act too.
            held = event.ctrl or event.alt or event.shift
            acts = (held and event.type.startswith(("WHEEL", "TRACKPAD"))) or event.type.startswith("NDOF_BUTTON")
            looking = event.type.startswith(PASSED_WHILE_RENDERING) and not acts
            return {"PASS_THROUGH"} if looking else {"RUNNING_MODAL"}
        try:
            self._render.step()
            self._show_progress(context)
            if not self._render.done:
                return {"RUNNING_MODAL"}
            pixels = self._render.pixels()
            self._finish(context)
            if self._key is not None:
                reference_cache.store(self._key, pixels)
            job = jobs.submit_jobs(context, self._scene, self._plan, pixels)[0]
        except USER_ERRORS as error:
            self._finish(context)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._finish(context)  # whatever went wrong, the artist's settings come back
            raise
        # The new job entry (and a random seed drawn) as an undo step of its own: Ctrl+Z then takes back this
        # Generate, not the artist's edit before it together with the job it would silently drop.
        push_undo("MotionClone Generate")
        self.report({"INFO"}, f"MotionClone job sent (seed {job.seed})")
        return {"FINISHED"}

    def _show_progress(self, context: bpy.types.Context) -> None:
        done, total = self._render.rendered, len(self._render.frames)
        doing = READ_WORDS[type(self._render)].doing
        text = f"MotionClone: {doing}, frame {done} of {total} (Esc cancels; clicks wait till it ends)"
        context.workspace.status_text_set(text)

    def stop(self, context: bpy.types.Context, reason: str) -> None:
        """End the render from outside (a save, a file load): the artist's settings come back at once."""
        self._stopped = reason
        self._finish(context)

    def cancel(self, context: bpy.types.Context) -> None:
        self._finish(context)  # Blender ended the modal operator (window closed, file loaded)

    def _finish(self, context: bpy.types.Context) -> None:
        if self in rendering:
            rendering.remove(self)
        if self._timer is None:
            return  # finished already
        context.window_manager.event_timer_remove(self._timer)
        self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        self._render.__exit__(None, None, None)  # restores every render setting


class MOTIONCLONE_OT_cancel(bpy.types.Operator):
    """Cancel the selected job on the backend"""

    bl_idname = "motionclone.cancel"
    bl_label = "Cancel Job"

    index: bpy.props.IntProperty(default=-1, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not job_polls(cls, context, lambda job: job.state in ACTIVE_STATES, "The selected job is not running"):
            return False
        # Finished on the backend: a cancel would find no job there and mark the finished job failed.
        return job_polls(cls, context, lambda job: not result_being_saved(job), RESULT_BEING_SAVED)

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = selected_job(context, self.index)
        if job is None or job.state not in ACTIVE_STATES:
            self.report({"WARNING"}, "That job is not running")
            return {"CANCELLED"}
        session = get_session()
        if session.drop_held(job.request_id):  # still waiting for the local backend: it never reaches it
            job.state = "CANCELLED"
            job.message = "Cancelled before the local backend was ready"
            return {"FINISHED"}
        if not job.job_id and not session.tracks_request(job):
            # No answer can come to this session: there is nothing here to cancel it with, so it ends now.
            job.state, job.message = "FAILED", session.lost_job_message(job)
            self.report({"WARNING"}, job.message)
            return {"FINISHED"}
        if not job.job_id:
            self.report({"WARNING"}, "The backend has not accepted this job yet; try again in a moment")
            return {"CANCELLED"}
        if preferences.get_preferences(context).backend_mode == "LOCAL" and session.local.state != "ready":
            # Cancelling must not start a backend: with none running, nothing runs this job.
            self.report(
                {"WARNING"},
                "The local backend is not running, so neither is this job: Start Backend fetches it if it finished, "
                "or Remove it",
            )
            return {"CANCELLED"}
        try:
            session.ensure_client(context).cancel(job.job_id)
        except USER_ERRORS as error:
            self.report({"ERROR"}, f"Could not ask the backend to cancel: {error}")
            return {"CANCELLED"}
        # A client asks again after its own reconnects; this flag makes a new client (other backend settings, the
        # file opened again) ask too, instead of the job running on unseen.
        job.cancel_requested = True
        job.message = "Cancelling ..."
        return {"FINISHED"}


class MOTIONCLONE_OT_redo(bpy.types.Operator):
    """Run the selected job's settings again with a new random seed"""

    bl_idname = "motionclone.redo"
    bl_label = "Redo with New Seed"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return job_polls(cls, context, lambda job: bool(job.prompt.strip()), "The selected job has no prompt")

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = context.scene.motionclone
        job = selected_job(context, -1)
        if job is not None and job.params_json:
            try:
                jobs.use_job_settings(settings, job)  # every setting of the job: frames, size, condition, advanced
            except (ValueError, TypeError) as error:
                self.report({"ERROR"}, str(error))
                return {"CANCELLED"}
        elif job is not None:  # a job from an older add-on records only these
            settings.prompt = job.prompt
            settings.config = job.config
        settings.seed = random.randint(0, jobs.MAX_SEED)
        # The panel's new settings are an undo step of their own, pushed before Generate's render puts its temporary
        # settings in place (an UNDO flag would push it when this operator ends, with the render running).
        push_undo("Redo with New Seed")
        # From the UI, Generate renders frame by frame with Esc to cancel, as when its own button is pressed.
        started = bpy.ops.motionclone.generate("INVOKE_DEFAULT")
        return {"FINISHED"} if started & {"FINISHED", "RUNNING_MODAL"} else {"CANCELLED"}


class MOTIONCLONE_OT_test_connection(bpy.types.Operator):
    """Connect to the backend set in the preferences and show what it runs"""

    bl_idname = "motionclone.test_connection"
    bl_label = "Test Connection"

    def execute(self, context: bpy.types.Context) -> set[str]:
        session = get_session()
        try:
            # Keeps the running client and the jobs it follows; a changed endpoint or key moves them to a new one.
            session.ensure_client(context)
        except USER_ERRORS as error:
            session.connection = Connection("unreachable", str(error))
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        session.request_status()  # the queue, for the panel's connection line once the backend answers
        self.report({"INFO"}, session.connection.describe())
        return {"FINISHED"}


class MOTIONCLONE_OT_check_backend(bpy.types.Operator):
    """Run the local backend's `motionclone info` and show what it found: version, presets, torch, CUDA"""

    bl_idname = "motionclone.check_backend"
    bl_label = "Check Backend"

    def execute(self, context: bpy.types.Context) -> set[str]:
        # The one blocking call of the add-on: a few seconds, on request, before anything starts.
        session = get_session()
        settings = preferences.local_settings(context)
        try:
            info = local_backend.check_environment(settings.environment)
        except local_backend.LocalBackendError as error:
            session.local_check = [str(error)]
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        session.local_check = local_backend.describe_info(info, settings.preset)
        usable = settings.preset in local_backend.preset_names(info) and bool(info.get("torch"))
        self.report({"INFO"} if usable else {"WARNING"}, " ".join(session.local_check))
        return {"FINISHED"}


class MOTIONCLONE_OT_start_backend(bpy.types.Operator):
    """Start the local backend set in the add-on preferences (or use the one left running); returns at once"""

    bl_idname = "motionclone.start_backend"
    bl_label = "Start Backend"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if preferences.get_preferences(context).backend_mode != "LOCAL":
            cls.poll_message_set("Choose Local in the add-on preferences first")
            return False
        if get_session().local.running:
            cls.poll_message_set("The local backend runs already")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        session = get_session()
        try:
            session.start_local(context)
        except local_backend.LocalBackendError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, session.local.message)
        return {"FINISHED"}


class MOTIONCLONE_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend; jobs it is running end, finished results stay in its results folder"""

    bl_idname = "motionclone.stop_backend"
    bl_label = "Stop Backend"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        local = get_session().local
        if not local.running or local.state == "stopping":
            cls.poll_message_set("No local backend started by the add-on is running")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        get_session().stop_local()
        self.report({"INFO"}, "Stopping the local backend")
        return {"FINISHED"}


REFETCHABLE = {"FAILED", "ELSEWHERE"}  # job states that Fetch Result Again asks the backend about


class MOTIONCLONE_OT_fetch_again(bpy.types.Operator):
    """Ask the backend again for the selected job's state and result (after a result could not be stored)"""

    bl_idname = "motionclone.fetch_again"
    bl_label = "Fetch Result Again"

    index: bpy.props.IntProperty(default=-1, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        message = "Only a failed job that the backend had accepted, or one another client took, can be fetched again"
        return job_polls(cls, context, lambda job: job.state in REFETCHABLE and bool(job.job_id), message)

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = selected_job(context, self.index)
        if job is None or job.state not in REFETCHABLE or not job.job_id:
            self.report({"WARNING"}, "Only a failed job the backend accepted can be fetched again")
            return {"CANCELLED"}
        try:
            get_session().ensure_client(context).fetch(job.job_id)
        except USER_ERRORS as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        job.state = "QUEUED"
        job.message = "Asking the backend for this job again ..."
        return {"FINISHED"}


class MOTIONCLONE_OT_use_job_settings(bpy.types.Operator):
    """Put every setting of the selected job back into the panel (prompt, seed, config, size, frames, advanced)"""

    bl_idname = "motionclone.use_job_settings"
    bl_label = "Use These Settings"
    bl_options = frozenset({"REGISTER", "UNDO"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return job_polls(cls, context, lambda job: True, "")

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = selected_job(context, -1)
        try:
            jobs.use_job_settings(context.scene.motionclone, job)
        except (ValueError, TypeError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Settings of the job with seed {job.seed} restored")
        return {"FINISHED"}


class MOTIONCLONE_OT_use_model_settings(bpy.types.Operator):
    """Set Size, and Motion where it does not suit, to what the connected backend's model was made for"""

    bl_idname = "motionclone.use_model_settings"
    bl_label = "Use the Model's Size"
    bl_options = frozenset({"REGISTER", "UNDO"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        connection = get_session().connection
        if context.scene is None or connection.state != "connected":
            cls.poll_message_set("Connect to a backend first")
            return False
        if model_fit.mismatch(context.scene.motionclone, connection.model) is None:
            cls.poll_message_set("Size and Motion suit the backend's model already")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = context.scene.motionclone
        model = get_session().connection.model
        changed = model_fit.use_model_defaults(settings, model)
        labels = {"long_side": f"Size {settings.long_side}", "config": f"Motion '{settings.config}'"}
        self.report({"INFO"}, "Set " + " and ".join(labels[name] for name in changed))
        return {"FINISHED"}


class MOTIONCLONE_OT_show_result(bpy.types.Operator):
    """Select the selected job's result strip and jump to its first frame"""

    bl_idname = "motionclone.show_result"
    bl_label = "Show Result Strip"
    bl_options = frozenset({"REGISTER", "UNDO"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return job_polls(cls, context, lambda job: bool(job.strip_name), "The selected job has no result strip yet")

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = selected_job(context, -1)
        scene = scene_of(job)
        editor = scene.sequence_editor
        strip = editor and compat.all_strips(editor).get(job.strip_name)
        if strip is None:
            self.report({"WARNING"}, f"The strip '{job.strip_name}' is no longer in scene '{scene.name}'")
            return {"CANCELLED"}
        for other in compat.all_strips(editor):
            other.select = False
        strip.select = True
        editor.active_strip = strip
        scene.frame_current = int(strip.frame_final_start)
        return {"FINISHED"}


class MOTIONCLONE_OT_open_result_folder(bpy.types.Operator):
    """Open the selected job's result folder in the file browser of the system"""

    bl_idname = "motionclone.open_result_folder"
    bl_label = "Open Result Folder"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        def has_folder(job: Any) -> bool:
            return bool(job.result_dir) and os.path.isdir(bpy.path.abspath(job.result_dir))

        return job_polls(cls, context, has_folder, "The selected job has no result folder on this computer")

    def execute(self, context: bpy.types.Context) -> set[str]:
        return bpy.ops.wm.path_open(filepath=bpy.path.abspath(selected_job(context, -1).result_dir))


class MOTIONCLONE_OT_preview_condition(bpy.types.Operator):
    """Make the condition image now (rendering it if it is a render) and show it in the panel"""

    bl_idname = "motionclone.preview_condition"
    bl_label = "Preview Condition"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.scene is None or context.scene.motionclone.condition_source == "NONE":
            cls.poll_message_set("Choose a Condition source first")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            made = jobs.preview_condition(context.scene, context.scene.motionclone)
        except USER_ERRORS as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Condition: {made.description}, on output frame {made.condition.frames[0]}")
        return {"FINISHED"}


class MOTIONCLONE_OT_remove_job(bpy.types.Operator):
    """Remove the selected job from the list (its strip and files stay)"""

    bl_idname = "motionclone.remove_job"
    bl_label = "Remove Job"
    bl_options = frozenset({"REGISTER", "UNDO"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        message = "A job still running cannot be removed: cancel it first"
        return job_polls(cls, context, removable, message)

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = context.scene.motionclone
        settings.jobs.remove(settings.active_job)
        settings.active_job = max(0, min(settings.active_job, len(settings.jobs) - 1))
        return {"FINISHED"}


RESULT_BEING_SAVED = "The job has finished and its result is being saved"


def removable(job: Any) -> bool:
    """Over, or sent without an answer that could still reach this session (the add-on was reloaded since): such a
    job can never end by itself."""
    if job.state not in ACTIVE_STATES:
        return True
    return job.state == "SUBMITTED" and not job.job_id and not get_session().tracks_request(job)


def result_being_saved(job: Any) -> bool:
    """The job's result arrived and its frames are being written (the job shows running until its strip is added)."""
    return bool(job.job_id) and any(write.job_id == job.job_id for write in get_session().result_writes)


def job_polls(cls: Any, context: bpy.types.Context, fits: Any, message: str) -> bool:
    """A job operator's poll: a job is selected and `fits(job)`; otherwise the greyed button says why."""
    job = selected_job(context, -1)
    if job is None:
        cls.poll_message_set("Select a job in the list first")
        return False
    if not fits(job):
        cls.poll_message_set(message)
        return False
    return True


def selected_job(context: bpy.types.Context, index: int):
    settings = context.scene.motionclone if context.scene else None
    if settings is None or not settings.jobs:
        return None
    index = settings.active_job if index < 0 else index
    return settings.jobs[index] if 0 <= index < len(settings.jobs) else None


classes = (
    MOTIONCLONE_OT_generate,
    MOTIONCLONE_OT_cancel,
    MOTIONCLONE_OT_redo,
    MOTIONCLONE_OT_test_connection,
    MOTIONCLONE_OT_check_backend,
    MOTIONCLONE_OT_start_backend,
    MOTIONCLONE_OT_stop_backend,
    MOTIONCLONE_OT_fetch_again,
    MOTIONCLONE_OT_use_job_settings,
    MOTIONCLONE_OT_use_model_settings,
    MOTIONCLONE_OT_show_result,
    MOTIONCLONE_OT_open_result_folder,
    MOTIONCLONE_OT_preview_condition,
    MOTIONCLONE_OT_remove_job,
)
