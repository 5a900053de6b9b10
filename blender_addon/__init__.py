"""MotionClone for Blender: clone the motion of an animation onto a text-prompted video. No torch.

The add-on renders a reference, sends it to a MotionClone backend over ZeroMQ and puts the result into the Video
Sequencer. All network I/O runs on the protocol client's thread; a persistent timer drains its events and watches the
local backend the add-on may have started (`local_backend`), which stops with Blender unless told to keep running.
"""

import atexit

import bpy

from . import event_pump, operators, panels, preferences, presets, properties, reference_cache, session

_modules = (properties, preferences, operators, presets, panels, reference_cache)
RESULT_WRITE_WAIT_S = 60.0  # how long Blender closing waits for a result's frames to reach the disk
_loaded_since_register = False  # a file was loaded after `register`: its jobs are followed already


def _timer() -> float:
    return event_pump.pump()


@bpy.app.handlers.persistent
def _on_load_post(*_args) -> None:
    # This file's jobs are this file's again (a result of one missing from it, started after its last save, is
    # recovered into it, as after undo).
    global _loaded_since_register
    _loaded_since_register = True
    session.get_session().open_file(bpy.data.filepath)
    refetch_jobs()


def refetch_jobs() -> None:
    """Ask the backend again for the open file's jobs that were still running (saved in the file, or left by the
    add-on before it was disabled, reloaded or updated)."""
    try:
        session.refetch_active_jobs(bpy.context)
    except RuntimeError as error:  # no usable connection settings; the panel shows the state
        session.get_session().connection.message = str(error)


def _refetch_after_register() -> None:
    # One shot, once Blender's data is reachable: a re-enabled add-on has a new session that follows nothing yet. A
    # file loaded since has had its jobs followed (`_on_load_post`); asking again could send a finished result twice.
    if not _loaded_since_register:
        refetch_jobs()


@bpy.app.handlers.persistent
def _on_load_pre(*_args) -> None:
    # The open file's running jobs stay on the backend while another file is open; their results wait for it there.
    session.get_session().leave_file(bpy.data.filepath)


@bpy.app.handlers.persistent
def _on_undo_redo(*_args) -> None:
    # Undo can set a job that had finished back to running (the file state before its result); ask the backend,
    # which answers with the job's real state, or that it no longer has it.
    if session.get_session().client is not None:
        refetch_jobs()  # connection settings that stopped working since are shown, not raised on every Ctrl+Z


def _on_exit() -> None:
    # Blender quits: close the connection and stop the local backend (unless Keep Running). No Blender data here, so
    # results being written are finished on disk (their folders complete) but not placed; the backend keeps them.
    for write in session.get_session().result_writes:
        write.wait(RESULT_WRITE_WAIT_S)
    session.close_session()


def register() -> None:
    for module in _modules:
        if hasattr(module, "register"):
            module.register()
        else:
            for cls in module.classes:
                bpy.utils.register_class(cls)
    bpy.app.timers.register(_timer, first_interval=0.1, persistent=True)
    # Persistent: Blender 4.2 crashes on exit after a file load has dropped a pending timer that is not.
    global _loaded_since_register
    _loaded_since_register = False
    bpy.app.timers.register(_refetch_after_register, first_interval=0.2, persistent=True)
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)
    bpy.app.handlers.save_pre.append(operators.stop_renders)
    bpy.app.handlers.load_pre.append(operators.stop_renders)
    bpy.app.handlers.undo_pre.append(operators.stop_renders)
    bpy.app.handlers.redo_pre.append(operators.stop_renders)
    bpy.app.handlers.undo_post.append(_on_undo_redo)
    bpy.app.handlers.redo_post.append(_on_undo_redo)
    atexit.register(_on_exit)


def unregister() -> None:
    # Blender frees a running modal operator without calling its `cancel`: put the artist's render settings back now.
    operators.stop_renders()
    event_pump.finish_pending_results()  # results that arrived are stored and placed, not dropped
    atexit.unregister(_on_exit)
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    stops = (bpy.app.handlers.save_pre, bpy.app.handlers.load_pre, bpy.app.handlers.undo_pre, bpy.app.handlers.redo_pre)
    for handlers in stops:
        if operators.stop_renders in handlers:
            handlers.remove(operators.stop_renders)
    for handlers in (bpy.app.handlers.undo_post, bpy.app.handlers.redo_post):
        if _on_undo_redo in handlers:
            handlers.remove(_on_undo_redo)
    for timer in (_timer, _refetch_after_register):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    session.close_session()
    for module in reversed(_modules):
        if hasattr(module, "unregister"):
            module.unregister()
        else:
            for cls in reversed(module.classes):
                bpy.utils.unregister_class(cls)
