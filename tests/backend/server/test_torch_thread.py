"""The server and the Ray actor keep their torch work on one thread (one OpenMP team per process)."""

import threading

import pytest

from motionclone.backend.models import load_preset
from motionclone.backend.server import ray_actor, server
from motionclone.backend.server.config import ServerConfig
from motionclone.backend.server.engine_job import JobInputs
from motionclone.backend.server.torch_thread import run_in_passing_thread


def test_the_work_runs_on_a_thread_that_has_ended_when_its_value_comes_back():
    ran_on: list[threading.Thread] = []

    def work() -> int:
        ran_on.append(threading.current_thread())
        return 42

    assert run_in_passing_thread(work, "test-passing") == 42
    assert ran_on[0] is not threading.current_thread()
    assert ran_on[0].name == "test-passing" and not ran_on[0].is_alive()


def test_the_works_exception_is_raised_in_the_callers_thread():
    def work() -> None:
        raise FileNotFoundError("no model here")

    with pytest.raises(FileNotFoundError, match="no model here"):
        run_in_passing_thread(work, "test-passing")


def recording_load(record: list[threading.Thread]):
    def load(preset, **options):
        record.append(threading.current_thread())
        return load_preset("tiny", **options)

    return load


def test_the_server_loads_its_model_on_a_thread_that_ends_before_it_serves(tmp_path, monkeypatch):
    loaded_on: list[threading.Thread] = []
    monkeypatch.setattr(server, "load_preset", recording_load(loaded_on))
    config = ServerConfig(bind="tcp://127.0.0.1:*", preset="tiny", results_dir=tmp_path / "results")
    made = server.Server(config)
    try:
        assert made.pipeline.unet is not None
        assert loaded_on[0] is not threading.current_thread() and not loaded_on[0].is_alive()
    finally:
        made.listener.close()


def test_the_actor_loads_and_runs_every_job_on_one_thread_of_its_own(tmp_path, monkeypatch, reference_frames):
    loaded_on: list[threading.Thread] = []
    ran_on: list[threading.Thread] = []
    monkeypatch.setattr(ray_actor, "load_preset", recording_load(loaded_on))

    def fake_job(pipeline, cache, inputs, emit, cancel, preview_every):
        ran_on.append(threading.current_thread())
        emit("done", {"job": inputs.job_id})

    monkeypatch.setattr(ray_actor, "run_engine_job", fake_job)
    actor = ray_actor.EngineActor("tiny", {}, "cpu", None, str(tmp_path / "cache"), 0)
    # Ray calls `run` from either of the actor's two threads; here, from two threads of this test.
    outcomes = []
    for job_id in ("a" * 32, "b" * 32):
        caller = threading.Thread(
            target=lambda job_id=job_id: outcomes.append(actor.run(JobInputs(job_id, None, reference_frames, 8.0)))
        )
        caller.start()
        caller.join()
    assert outcomes == [("done", {"job": "a" * 32}), ("done", {"job": "b" * 32})]
    assert len({*loaded_on, *ran_on}) == 1
    assert loaded_on[0] is not threading.current_thread() and loaded_on[0].is_alive()


def test_a_cancel_that_comes_after_its_job_ended_is_not_kept_for_ever(tmp_path, monkeypatch, reference_frames):
    monkeypatch.setattr(ray_actor, "load_preset", recording_load([]))
    seen = []

    def fake_job(pipeline, cache, inputs, emit, cancel, preview_every):
        seen.append(cancel())
        emit("done", {})

    monkeypatch.setattr(ray_actor, "run_engine_job", fake_job)
    actor = ray_actor.EngineActor("tiny", {}, "cpu", None, str(tmp_path / "cache"), 0)
    first, second = "a" * 32, "b" * 32
    actor.run(JobInputs(first, None, reference_frames, 8.0))
    actor.cancel(first)  # too late: the job has ended
    actor.cancel(second)  # before its run starts: it must still count
    actor.run(JobInputs(second, None, reference_frames, 8.0))
    assert seen == [False, True] and actor._cancelled == set()
