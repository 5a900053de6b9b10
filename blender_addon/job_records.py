"""The add-on's job records (`scene.motionclone.jobs` of every scene): finding them, and what several modules do with
them. No torch, no network.
"""

from collections.abc import Iterator
from typing import Any

import bpy

from .properties import ACTIVE_STATES

HELD_PREFIX = "held-"  # request ids of jobs waiting in the session for the local backend to be ready


def all_jobs() -> Iterator[Any]:
    for scene in bpy.data.scenes:
        yield from scene.motionclone.jobs


def find_job(request_id: str | None, job_id: str | None) -> Any:
    for job in all_jobs():
        if (job_id and job.job_id == job_id) or (request_id and job.request_id == request_id):
            return job
    return None


def scene_of(job: Any) -> bpy.types.Scene:
    """Where the job's result goes: the scene the sequencer showed at Generate (held by reference, so that renaming it
    changes nothing), else the job's own scene. A scene linked from a library cannot take a strip, so it is passed
    over."""
    recorded = bpy.data.scenes.get(job.target_scene) if job.target_scene else None  # a job saved by name
    for scene in (job.result_scene, recorded):
        if scene is not None and scene.library is None:
            return scene
    return job.id_data


def any_active_job() -> bool:
    return any(job.state in ACTIVE_STATES for job in all_jobs())


def fail_unaccepted_jobs(message: str) -> None:
    """Fail the jobs sent to a backend that never accepted them (held ones wait for the local backend instead)."""
    for job in all_jobs():
        if job.state == "SUBMITTED" and not job.request_id.startswith(HELD_PREFIX):
            job.state = "FAILED"
            job.message = message


def held_jobs() -> Iterator[Any]:
    return (job for job in all_jobs() if job.state == "SUBMITTED" and job.request_id.startswith(HELD_PREFIX))


def follow_active_jobs(client: Any) -> int:
    """Have `client` fetch every running job the backend accepted, so that their events reach it, and cancel again
    those whose Cancel was pressed (an earlier client may never have delivered it)."""
    active = [job for job in all_jobs() if job.state in ACTIVE_STATES and job.job_id]
    for job in active:
        client.fetch(job.job_id)
        if job.cancel_requested:
            client.cancel(job.job_id)
    return len(active)


def tag_redraw() -> None:
    """Redraw the areas that show jobs (the panels and the sequencer)."""
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "SEQUENCE_EDITOR"):
                area.tag_redraw()


def push_undo(message: str) -> None:
    """Make what the add-on just did one undo step of its own (a result placed, the panel rewritten), so that Ctrl+Z
    takes back that and not the user's last action with it. Background mode has no undo stack."""
    if not bpy.app.background and bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message=message)
