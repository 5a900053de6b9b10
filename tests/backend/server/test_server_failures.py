"""The server's checks and failure paths on objects without a model: what `_on_submit` refuses before it queues a
job, a result the disk cannot take, a worker thread that a job breaks, and a client that fetches faster than it
reads."""

import contextlib
import functools
import gc
import multiprocessing
import os
import queue
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zmq

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.errors import ParameterError
from motionclone.backend.models import load_preset
from motionclone.backend.server import engine_job as engine_job_module
from motionclone.backend.server import server as server_module
from motionclone.backend.server import worker as worker_module
from motionclone.backend.server.config import ServerConfig
from motionclone.backend.server.disk_thread import DiskThread
from motionclone.backend.server.engine_job import JobInputs, run_engine_job
from motionclone.backend.server.in_flight import SendsInFlight
from motionclone.backend.server.jobs import Job, JobQueue
from motionclone.backend.server.listener import Listener
from motionclone.backend.server.ray_pool import RayPoolError
from motionclone.backend.server.result_loads import ResultLoads
from motionclone.backend.server.result_saves import ResultSaves
from motionclone.backend.server.results_store import DamagedResult, ResultsStore
from motionclone.backend.server.server import Server
from motionclone.backend.server.worker import Worker, WorkerEvent
from motionclone.protocol import errors as codes
from motionclone.protocol.codec import Limits, decode
from motionclone.protocol.errors import ProtocolError
from motionclone.protocol.messages import (
    Accepted,
    ArraySpec,
    Cancel,
    Echo,
    Error,
    Fetch,
    JobStatus,
    Queued,
    Result,
    Submit,
)


def bare_server(limits: Limits | None = None) -> Server:
    """A Server whose submit checks run for real: the tiny preset's name, its limits, an rgb SparseCtrl model that
    checks conditions with the engine's own rule, and an empty queue."""
    server = Server.__new__(Server)
    server.config = ServerConfig(preset="tiny", limits=limits or Limits())
    server.queue = []
    model = SimpleNamespace(controlnet_kind="rgb")
    server.pipeline = SimpleNamespace(
        check_inputs=lambda params: None,
        check_condition_inputs=lambda params, condition, check_size=True: MotionClonePipeline.check_condition_inputs(
            model, params, condition, check_size
        ),
    )
    return server


def submit(num_frames: int, size: int, **condition) -> tuple[Submit, dict[str, memoryview]]:
    params = {"prompt": "a fox", "num_frames": num_frames, "width": size, "height": size, "guidance_steps": 1}
    reference = np.zeros((num_frames, 8, 8, 3), dtype=np.uint8)
    payloads = {"reference": memoryview(reference.tobytes())}
    if condition:
        images = condition.pop("images")
        payloads["condition"] = memoryview(images.tobytes())
        condition = {"condition": ArraySpec(images.shape), **condition}
    params["num_inference_steps"] = 2
    return Submit("r1", params, ArraySpec(reference.shape), **condition), payloads


def test_a_job_whose_result_would_not_fit_into_one_message_is_refused_with_the_frames_that_would():
    server = bare_server(Limits(max_message_bytes=8 * 64 * 64 * 3 + 64 * 1024))
    message, payloads = submit(num_frames=16, size=64)  # twice what fits
    with pytest.raises(ProtocolError) as refused:
        server._on_submit(b"client", message, payloads)
    assert refused.value.code == codes.TOO_LARGE and refused.value.field == "num_frames"
    assert "at this size at most 8 frames" in str(refused.value)


def test_condition_frames_out_of_range_are_refused_before_any_image_is_resized(monkeypatch):
    def resize_not_expected(*_args):
        raise AssertionError("a condition that is refused anyway was resized")

    monkeypatch.setattr(server_module, "fit_condition", resize_not_expected)
    images = np.zeros((12, 4, 4, 3), dtype=np.uint8)  # tiny images for frames far beyond the clip's 8
    message, payloads = submit(8, 64, images=images, condition_frames=list(range(12)), condition_type="rgb")
    with pytest.raises(ParameterError) as refused:
        bare_server()._on_submit(b"client", message, payloads)
    assert refused.value.name == "condition_frames" and "[0, 7]" in str(refused.value)


def test_a_job_whose_frames_would_take_the_waiting_jobs_past_the_byte_budget_is_refused_but_an_empty_queue_takes_it():
    server = bare_server()
    message, _ = submit(num_frames=8, size=64)
    reference = np.zeros((8, 256, 256, 3), np.uint8)  # 1.5 MiB
    message, payloads = replace(message, reference=ArraySpec(reference.shape)), {"reference": reference.data}
    server.config = replace(server.config, max_queued_bytes=2 << 20)
    server.queue, server.jobs, server._accepted, server._current_client = JobQueue(), {}, 0, b"client"
    server.worker = SimpleNamespace(running=0)
    sent = []
    server._send = lambda identity, message, *payload, **options: sent.append(message)
    server._on_submit(b"client", message, payloads)  # alone in the queue: over any budget would still be taken
    server._on_submit(b"client", message, payloads)  # 3 MiB waiting: past 2 MiB
    accepted, refused = sent
    assert isinstance(accepted, Accepted) and len(server.queue) == 1
    assert (refused.code, refused.field, refused.request_id) == (codes.QUEUE_FULL, "reference", "r1")
    assert "1.5 MiB more; the limit is 2.0 MiB (max_queued_bytes, motionclone serve --max-queued-mb)" in refused.message


def done_event(job, frames):
    return WorkerEvent("done", job, {"frames": frames, "fps": 8.0, "metadata": {"parameters": {}}})


def queued_job() -> Job:
    params = MotionCloneParams.from_dict({"prompt": "a fox", "num_frames": 2, "width": 64, "height": 64})
    return Job(b"client", params, np.zeros((2, 8, 8, 3), dtype=np.uint8), 8.0, "tiny")


def storing_server(tmp_path) -> Server:
    """A bare server with a results store, its disk thread, and a queue of worker events."""
    server = bare_server()
    server.results = ResultsStore(tmp_path / "results", retention_s=60)
    server.result_saves = ResultSaves(server.results, DiskThread("test-writer"))
    server.worker_events, server.jobs, server._completed = queue.Queue(), {}, 0
    return server


def pass_on_worker_events(server: Server) -> None:
    """The loop's turns that pass on the worker's events and, once their results are stored, send them."""
    server._send_worker_events()
    for save in list(server.result_saves._waiting):
        save.future.exception(timeout=30)  # done, whether stored or refused
    server._send_saved_results()


def test_a_result_the_disk_cannot_take_still_reaches_its_client_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    server = storing_server(tmp_path)
    sent = []
    server._send_result = lambda identity, job_id, frames, fps, metadata: sent.append((identity, job_id))

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    job = queued_job()
    server.jobs[job.job_id] = job
    server.worker_events.put(done_event(job, np.zeros((2, 64, 64, 3), dtype=np.uint8)))
    pass_on_worker_events(server)  # raised OSError out of the server loop before
    assert sent == [(b"client", job.job_id)] and job.job_id not in server.jobs
    assert list((tmp_path / "results").iterdir()) == []  # no half-written `.partial` folder


def test_an_outcome_the_server_cannot_send_fails_that_job_and_the_next_one_still_arrives(tmp_path):
    """Memory running out while a result is sent, say: that job's client hears it failed (its result is stored, so
    the hint says to fetch it), and the server loop goes on to the next event instead of ending."""
    server = storing_server(tmp_path)
    sent, messages = [], []
    server._send = lambda identity, message, *payload, **options: messages.append(message)

    def send_result(identity, job_id, frames, fps, metadata):
        if not sent:
            sent.append("refused")
            raise MemoryError
        sent.append(job_id)

    server._send_result = send_result
    first, second = queued_job(), queued_job()
    for job in (first, second):
        server.jobs[job.job_id] = job
        server.worker_events.put(done_event(job, np.zeros((2, 64, 64, 3), dtype=np.uint8)))
    pass_on_worker_events(server)  # MemoryError left the server loop before, and the server stopped
    assert sent == ["refused", second.job_id] and not server.jobs
    [failed] = messages
    assert isinstance(failed, Error) and (failed.code, failed.job_id) == (codes.JOB_FAILED, first.job_id)
    assert "could not pass on its outcome (MemoryError" in failed.message
    assert failed.hint == f"Its result is stored: fetch job {first.job_id} to get it."


def test_a_finished_result_is_stored_off_the_socket_thread_and_a_fetch_meanwhile_gets_it_sent_its_way(
    tmp_path, monkeypatch
):
    """Writing hundreds of MB on the socket thread to a slow disk held every connection's heartbeats. The result is
    sent once stored; a client that reconnected meanwhile (a fetch from another connection) gets it."""
    server = storing_server(tmp_path)
    sent, messages = [], []
    server._send = lambda identity, message, *payload, **options: messages.append((identity, message))
    server._send_result = lambda identity, job_id, frames, fps, metadata: sent.append((identity, job_id))
    disk_done = threading.Event()
    save = server.results.save
    monkeypatch.setattr(server.results, "save", lambda *args: disk_done.wait(10) and save(*args))
    job = queued_job()
    server.jobs[job.job_id] = job
    server.worker_events.put(done_event(job, np.zeros((2, 64, 64, 3), dtype=np.uint8)))
    started = time.monotonic()
    server._send_worker_events()
    server._send_saved_results()  # the loop's next turn: nothing stored yet, nothing sent, no wait
    assert time.monotonic() - started < 5 and sent == []
    server.sends_in_flight, server.result_loads = (
        SendsInFlight(),
        ResultLoads(server.results, DiskThread("test-reader")),
    )
    server.queue, server.worker = JobQueue(), SimpleNamespace(running=0)
    server._on_fetch(b"new-connection", Fetch("f1", job.job_id), {})  # was "unknown job" while being stored
    server._on_cancel(b"new-connection", Cancel("c1", job.job_id), {})  # too late: the result comes all the same
    [(old, taken), (new, status), (_, cancel_reply)] = messages
    assert (old, taken.code) == (b"client", codes.TAKEN_OVER)
    assert (new, type(status), status.state) == (b"new-connection", JobStatus, "done")
    assert (type(cancel_reply), cancel_reply.request_id, cancel_reply.state) == (JobStatus, "c1", "done")
    disk_done.set()
    server.result_saves._waiting[0].future.result(timeout=10)
    server._send_saved_results()
    assert sent == [(b"new-connection", job.job_id)] and server.results.has(job.job_id) and not server.jobs


def test_a_shutdown_waits_for_results_being_stored_so_that_they_can_be_fetched_after_a_restart(tmp_path, monkeypatch):
    server = storing_server(tmp_path)
    server.queue, server.reader, server.writer = JobQueue(), DiskThread("test-reader"), server.result_saves.disk
    server.worker, server.listener = SimpleNamespace(stop=lambda: None), SimpleNamespace(close=lambda **options: None)
    server.result_loads = ResultLoads(server.results, server.reader)
    sent = []
    server._send = lambda identity, message, *payload, **options: sent.append(message)
    server._send_result = lambda identity, job_id, frames, fps, metadata: sent.append((job_id, frames.sum()))
    save = server.results.save
    monkeypatch.setattr(server.results, "save", lambda *args: time.sleep(0.5) or save(*args))
    job = queued_job()
    server.jobs[job.job_id] = job
    server.worker_events.put(done_event(job, np.ones((2, 8, 8, 3), np.uint8)))
    server._shutdown()  # the job finished as the server stopped: its result is being stored
    assert sent == [(job.job_id, 2 * 8 * 8 * 3)] and not server.jobs
    assert ResultsStore(tmp_path / "results", retention_s=60).load(job.job_id).frames.sum() == 2 * 8 * 8 * 3


def test_a_result_whose_save_hangs_is_sent_unstored_after_the_deadline_and_the_job_ends(tmp_path, monkeypatch):
    """A disk that hangs kept the job in the server's memory, its client told "done, the result follows", for good."""
    server = storing_server(tmp_path)
    sent = []
    server._send_result = lambda identity, job_id, frames, fps, metadata: sent.append(job_id)
    disk_back = threading.Event()
    monkeypatch.setattr(server.results, "save", lambda *args: disk_back.wait(30))
    monkeypatch.setattr(server_module, "SAVE_DEADLINE_S", 0.3)
    job = queued_job()
    server.jobs[job.job_id] = job
    server.worker_events.put(done_event(job, np.zeros((2, 8, 8, 3), np.uint8)))
    server._send_worker_events()
    server._send_saved_results()
    assert sent == [] and job.job_id in server.jobs  # within the deadline: waiting for the disk
    time.sleep(0.5)
    server._send_saved_results()
    disk_back.set()
    assert sent == [job.job_id] and not server.jobs


def test_the_disk_thread_keeps_no_finished_work_in_memory():
    """A save's work holds the job's result and its reference: hundreds of MB on an idle server."""
    import weakref

    class Frames:
        pass

    frames = Frames()
    gone = weakref.ref(frames)
    disk = DiskThread("test-disk")
    disk.submit(functools.partial(id, frames)).result(timeout=10)  # the work holds the frames, as a save's does
    del frames
    deadline = time.monotonic() + 5
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert gone() is None


def fetch(server: Server, identity: bytes, request_id: str, job_id: str) -> None:
    """`_on_fetch`, then the loop's turn that sends what the reader thread has read."""
    server._on_fetch(identity, Fetch(request_id, job_id), {})
    for load in list(server.result_loads._waiting):
        load.future.exception(timeout=30)  # done, whether read or refused
    server._send_loaded_results()


def reading_server(tmp_path) -> tuple[Server, list]:
    """A bare server with a results store and its reader; returns it and the list of messages it sends."""
    server = bare_server()
    server.results = ResultsStore(tmp_path / "results", retention_s=60)
    server.jobs, server.sends_in_flight = {}, SendsInFlight()
    server.reader, server.writer = DiskThread("test-reader"), DiskThread("test-writer")
    server.result_loads = ResultLoads(server.results, server.reader)
    server.result_saves = ResultSaves(server.results, server.writer)
    messages = []
    server._send = lambda identity, message, *payload, **options: messages.append(message)
    return server, messages


def test_a_stored_result_the_disk_damaged_is_named_when_fetched_and_deleted(tmp_path):
    server, messages = reading_server(tmp_path)
    job_id = "cd" * 16
    frames = tmp_path / "results" / job_id / "frames.npy"
    stored = np.full((2, 8, 8, 3), 200, np.uint8)
    whole = 128 + stored.nbytes  # the .npy header, then the frames
    for damage in ("cut", "emptied", "zeroed"):  # a failing disk; a power cut before the bytes, or a block, reached it
        server.results.save(job_id, stored, 8.0, {})
        kept = {"cut": 40, "emptied": 0, "zeroed": whole}[damage]
        written = frames.read_bytes()
        assert len(written) == whole
        frames.write_bytes(written[:kept] if damage != "zeroed" else written[:-64] + bytes(64))
        messages.clear()
        fetch(server, b"client", "f1", job_id)  # raised out of the handler as a bad message before
        [error] = messages
        assert (error.code, error.request_id, error.job_id) == (codes.JOB_FAILED, "f1", job_id)
        assert error.message.startswith(f"The stored result of job {job_id} could not be read (")
        assert not server.results.has(job_id)


def test_a_stored_result_the_disk_cannot_read_now_is_kept_for_the_next_fetch(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path, retention_s=60)
    job_id = "cd" * 16
    store.save(job_id, np.zeros((2, 8, 8, 3), np.uint8), 8.0, {})

    def too_many_open_files(*args, **kwargs):
        raise OSError(24, "Too many open files")

    with monkeypatch.context() as patch:
        patch.setattr(np, "load", too_many_open_files)
        with pytest.raises(DamagedResult, match="could not be read now"):
            store.load(job_id)
    assert store.load(job_id).frames.shape == (2, 8, 8, 3)


def test_a_fetched_result_is_read_off_the_socket_thread_which_goes_on_serving_meanwhile(tmp_path, monkeypatch):
    """Reading hundreds of MB from a slow disk on the socket thread held every connection's heartbeats."""
    server, _ = reading_server(tmp_path)
    sent = []
    server._send_result = lambda identity, job_id, frames, fps, metadata: sent.append((identity, job_id, frames.shape))
    job_id = "cd" * 16
    server.results.save(job_id, np.zeros((2, 8, 8, 3), np.uint8), 8.0, {})
    disk_done = threading.Event()
    read = server.results.load
    monkeypatch.setattr(server.results, "load", lambda job_id: disk_done.wait(10) and read(job_id))
    started = time.monotonic()
    server._on_fetch(b"client", Fetch("f1", job_id), {})
    server._send_loaded_results()  # the loop's next turn: nothing read yet, nothing sent, no wait
    assert time.monotonic() - started < 5 and sent == []
    disk_done.set()
    server.result_loads._waiting[0].future.result(timeout=10)
    server._send_loaded_results()
    assert sent == [(b"client", job_id, (2, 8, 8, 3))]


def test_reads_on_their_way_count_against_the_two_copies_a_connection_may_have_in_flight(tmp_path):
    server, messages = reading_server(tmp_path)
    job_id = "cd" * 16
    server.results.save(job_id, np.zeros((2, 8, 8, 3), np.uint8), 8.0, {})
    for index in range(3):  # faster than the reader: none of them has been read and sent yet
        server._on_fetch(b"client", Fetch(f"f{index}", job_id), {})
    assert server.result_loads.pending(b"client", job_id) == 2
    assert [(type(m), m.request_id, m.state) for m in messages] == [(JobStatus, "f2", "done")]


def test_a_result_that_cannot_be_sent_fails_its_fetch_and_the_next_one_is_still_sent_and_a_shutdown_answers_the_rest(
    tmp_path, monkeypatch
):
    server, messages = reading_server(tmp_path)
    first, second, third = "a1" * 16, "b2" * 16, "c3" * 16
    for job_id in (first, second, third):
        server.results.save(job_id, np.zeros((2, 8, 8, 3), np.uint8), 8.0, {})
    sent = []

    def send_result(identity, job_id, frames, fps, metadata):
        if job_id == first:
            raise MemoryError
        sent.append(job_id)

    server._send_result = send_result
    fetch(server, b"client", "f1", first)  # MemoryError left the server loop before, and the server stopped
    fetch(server, b"client", "f2", second)
    [failed] = messages
    assert (failed.code, failed.request_id, failed.job_id) == (codes.JOB_FAILED, "f1", first) and sent == [second]

    read = server.results.load
    monkeypatch.setattr(server.results, "load", lambda job_id: time.sleep(1) or read(job_id))  # a slow disk
    server._on_fetch(b"client", Fetch("f3", third), {})
    server.queue, server.worker_events = [], queue.Queue()
    server.worker, server.listener = SimpleNamespace(stop=lambda: None), SimpleNamespace(close=lambda **options: None)
    messages.clear()
    server._shutdown()  # the read is still on its way: the fetch hears why no result comes
    assert [(m.code, m.request_id, m.job_id) for m in messages] == [(codes.SHUTTING_DOWN, "f3", third)]


def test_a_result_acknowledged_while_it_is_read_is_no_result_rather_than_a_disk_error(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path, retention_s=60)
    job_id = "cd" * 16
    store.save(job_id, np.zeros((2, 8, 8, 3), np.uint8), 8.0, {})

    def acknowledged_meanwhile(path, **options):
        store.delete(job_id)
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(np, "load", acknowledged_meanwhile)
    assert store.load(job_id) is None


def test_a_deleted_result_is_gone_even_when_its_frames_cannot_be_removed(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path, retention_s=60)
    job_id = "ef" * 16
    store.save(job_id, np.zeros((2, 8, 8, 3), np.uint8), 8.0, {})
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)  # a file held open elsewhere, say
    assert store.delete(job_id)
    assert not store.has(job_id) and store.load(job_id) is None


def test_the_worker_thread_outlives_a_job_that_breaks_it_and_runs_the_next(monkeypatch):
    def run(pipeline, cache, inputs, emit, cancel, preview_every):
        if inputs.params.prompt == "breaks":
            raise RuntimeError("a CUDA error while reporting a failure")
        emit("done", {"frames": None, "fps": 8.0, "metadata": {}})

    monkeypatch.setattr(worker_module, "run_engine_job", run)
    events: queue.Queue = queue.Queue()
    worker = Worker(pipeline=None, cache=None, events=events)
    worker.start()
    broken, fine = queued_job(), queued_job()
    broken.params = MotionCloneParams.from_dict({"prompt": "breaks"})
    worker.submit(broken)
    failed = events.get(timeout=10)
    assert (failed.kind, failed.job, failed.data["code"]) == ("failed", broken, codes.JOB_FAILED)
    assert "RuntimeError: a CUDA error while reporting a failure" in failed.data["message"]
    worker.submit(fine)
    assert (events.get(timeout=10).kind, worker.current) == ("done", None)
    worker.stop()


def test_an_idle_worker_holds_no_finished_job_and_its_reference_frames(monkeypatch):
    monkeypatch.setattr(worker_module, "run_engine_job", lambda *args: args[3]("done", {}))
    events: queue.Queue = queue.Queue()
    worker = Worker(pipeline=None, cache=None, events=events)
    worker.start()
    job = queued_job()
    finished = weakref.ref(job)
    worker.submit(job)
    assert events.get(timeout=10).kind == "done"  # the server takes the event and forgets the job
    del job
    time.sleep(0.1)  # the worker is back waiting for the next job
    gc.collect()
    assert finished() is None
    worker.stop()


def test_a_job_that_does_not_stop_in_time_is_reported_cancelled_when_the_server_stops(monkeypatch):
    """The protocol promises the running job a `cancelled` when the server stops, even mid-way through a long step."""
    release = threading.Event()
    monkeypatch.setattr(worker_module, "run_engine_job", lambda *args: release.wait(10))  # deaf to its cancel
    events: queue.Queue = queue.Queue()
    worker = Worker(pipeline=None, cache=None, events=events)
    worker.start()
    job = queued_job()
    worker.submit(job)
    worker.stop(timeout=0.2)
    stopped = events.get(timeout=1)
    assert (stopped.kind, stopped.job, stopped.data["reason"]) == (
        "cancelled",
        job,
        "The server stopped before the job finished.",
    )
    assert job.cancel_requested.is_set()
    release.set()


def test_ray_jobs_waiting_for_a_driver_end_cancelled_when_the_server_stops():
    from motionclone.backend.server.ray_driver import RayDriver

    events: queue.Queue = queue.Queue()
    driver = RayDriver(settings=None, events=events)  # no driver process (it exited, or never started)
    job = queued_job()
    driver.submit(job)
    driver._shut_down_driver()
    assert (events.get_nowait().kind, driver.running) == ("cancelled", 0)


def test_a_stop_while_the_ray_pool_starts_reaches_the_driver_and_ends_the_server_quietly(tmp_path):
    """SIGTERM (or the parent exiting) during the pool's start, which may take minutes: the driver polls the server's
    stop, and the server ends without an error; a pool that fails on its own still raises."""
    server = bare_server()
    server.config = ServerConfig(preset="tiny", workers="ray", results_dir=str(tmp_path))
    server._stop, server.parent, server.worker_events = threading.Event(), None, queue.Queue()
    driver = server._make_worker()
    assert driver._should_stop() is False
    server.stop()
    assert driver._should_stop() is True
    server._stop.clear()
    closed = []
    server.listener = SimpleNamespace(close=lambda **options: closed.append(options))

    def stopped_while_starting():
        server.stop()
        raise RayPoolError("the server stopped while its Ray driver was starting")

    server.worker = SimpleNamespace(start=stopped_while_starting)
    server.run()  # returns: a stop, not a failure
    assert len(closed) == 1
    server._stop.clear()

    def no_resources():
        raise RayPoolError("the cluster lacks the resources")

    server.worker = SimpleNamespace(start=no_resources)
    with pytest.raises(RayPoolError, match="lacks the resources"):
        server.run()


def test_an_out_of_memory_error_without_a_message_still_fails_the_job_with_its_code():
    class OutOfMemory:
        def __call__(self, *_args, **_kwargs):
            raise torch.OutOfMemoryError("")

    events = []
    inputs = JobInputs("job", MotionCloneParams.from_dict({"prompt": "a fox"}), None, 8.0, None)
    run_engine_job(OutOfMemory(), None, inputs, lambda kind, data: events.append((kind, data)), lambda: False)
    ((kind, data),) = events
    assert kind == "failed" and data["code"] == codes.OUT_OF_MEMORY and "no details" in data["message"]


def test_memory_is_released_after_a_failed_job_has_let_go_of_its_tensors(monkeypatch):
    """Memory is released after the exception handler, once the traceback no longer holds the failed forward pass's
    tensors, so that the GPU cache can give them back."""
    held = []

    class FailsHoldingATensor:
        def __call__(self, *_args, **_kwargs):
            activations = torch.zeros(1024)
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    alive_at_release = []
    release = engine_job_module.release_memory

    def checking_release() -> None:
        alive_at_release.append(held[0]() is not None)
        release()

    monkeypatch.setattr(engine_job_module, "release_memory", checking_release)
    events = []
    inputs = JobInputs("job", MotionCloneParams.from_dict({"prompt": "a fox"}), None, 8.0, None)
    run_engine_job(FailsHoldingATensor(), None, inputs, lambda kind, data: events.append((kind, data)), lambda: False)
    assert alive_at_release == [False]
    assert [(kind, data["code"]) for kind, data in events] == [("failed", codes.OUT_OF_MEMORY)]


def test_purge_removes_expired_results_and_old_half_written_folders_and_keeps_the_rest(tmp_path):
    store = ResultsStore(tmp_path, retention_s=60)
    old, fresh = "a" * 32, "b" * 32
    for job_id in (old, fresh):
        store.save(job_id, np.zeros((2, 8, 8, 3), dtype=np.uint8), 8.0, {})
    crashed, writing = tmp_path / f".{'c' * 32}.partial", tmp_path / f".{'d' * 32}.partial"
    crashed.mkdir(), writing.mkdir()
    cut_short = tmp_path / ("e" * 32)  # a delete that removed the record and then failed
    cut_short.mkdir()
    (cut_short / "frames.npy").write_bytes(b"frames")
    (tmp_path / "notes.txt").write_text("not the store's")
    now = time.time()
    for path in (tmp_path / old / "result.json", crashed, cut_short):
        os.utime(path, (now - 120, now - 120))
    assert store.purge_expired(now) == [old]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([fresh, writing.name, "notes.txt"])
    assert store.load(fresh) is not None


def test_every_tokenizer_call_of_the_pipeline_holds_its_tokenizer_lock():
    """The server checks a submit's words on its socket thread while the worker encodes a running job's prompt. The
    fast tokenizers change shared padding and truncation settings on every call, and without a lock a check could
    see the other call's settings: two threads, 3,000 calls each, once reported "red" missing from "a red ball
    rolling right on snowy ground"."""
    pipe = MotionClonePipeline.from_bundle(load_preset("blocks", device="cpu"))
    held_lock: list[bool] = []

    class Recording:
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

        def __call__(self, *args, **kwargs):
            held_lock.append(pipe._tokenizer_lock.locked())
            return self.tokenizer(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.tokenizer, name)

    object.__setattr__(pipe, "tokenizer", Recording(pipe.tokenizer))  # past diffusers' module registration
    pipe.encode_prompt("a blue figure walking left in a grey blockout room")
    params = MotionCloneParams.from_config("blocks", prompt="a red ball rolling right on snowy ground")
    pipe.check_inputs(MotionCloneParams.from_dict({**params.to_dict(), "subject_word": "red"}))
    assert len(held_lock) >= 3 and all(held_lock)  # the prompt, then the prompt and the word


@contextlib.contextmanager
def slow_reader(server_context: zmq.Context | None = None) -> Iterator[tuple[Server, Callable[[], list]]]:
    """A bare server on a real ROUTER socket, and a client "slow-reader" that takes one message off the wire and
    then leaves the rest in the server's send queue until the returned function reads everything. The server's
    socket is made in `server_context` when given (a test that ends that context), else in the shared one."""
    context = zmq.Context.instance()
    router = (server_context or context).socket(zmq.ROUTER)
    client = context.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        client.setsockopt(zmq.ROUTING_ID, b"slow-reader")
        client.setsockopt(zmq.RCVHWM, 1)
        client.setsockopt(zmq.RCVBUF, 64 * 1024)
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"hello")
        assert router.poll(5000) and router.recv_multipart()[0] == b"slow-reader"
        server = bare_server()
        server.socket, server.sends_in_flight, server.jobs = router, SendsInFlight(), {}

        def read_all() -> list:
            replies = []
            while client.poll(2000):
                replies.append(decode([frame.buffer for frame in client.recv_multipart(copy=False)], Limits())[0])
            return replies

        yield server, read_all
    finally:
        client.close(linger=0)
        if not router.closed:
            router.close(linger=0)


def test_the_last_messages_before_a_shutdown_reach_a_client_that_reads_them_a_moment_later():
    """`shutting_down` for a queued job, sent behind a large message the client has not read yet: closing the socket
    at once dropped both."""
    server_context = zmq.Context()  # the shutdown ends it
    try:
        with slow_reader(server_context) as (server, read_all):
            server.listener = Listener(server_context, server.socket, None, "tcp://127.0.0.1")
            server.worker = SimpleNamespace(stop=lambda: None)
            server.result_loads = SimpleNamespace(take_finished=lambda: [], stop=lambda: [])
            server.result_saves = SimpleNamespace(take_all=lambda timeout_s: [], take_finished_or_overdue=lambda s: [])
            server.reader = server.writer = SimpleNamespace(stop=lambda: None)
            server.worker_events = queue.Queue()
            job = replace(queued_job(), identity=b"slow-reader")
            server.queue = [job]
            large = np.zeros(8 << 20, np.uint8)  # more than the socket buffers hold
            server._send(b"slow-reader", Echo("e1", ArraySpec(large.shape)), large.data)
            failed = []

            def shut_down():
                try:
                    server._shutdown()
                except BaseException as error:
                    failed.append(error)

            shutdown = threading.Thread(target=shut_down)
            shutdown.start()
            time.sleep(0.3)  # the client comes to read a moment later
            replies = read_all()
            shutdown.join(10)
            assert not shutdown.is_alive() and failed == [] and server.socket.closed
            assert [type(reply) for reply in replies] == [Echo, Error]
            assert (replies[1].code, replies[1].job_id) == (codes.SHUTTING_DOWN, job.job_id)
    finally:
        if not server_context.closed:
            server_context.term()


def send_six_times(request: Callable[[int], None]) -> None:
    for index in range(6):
        request(index)
        time.sleep(0.3)  # the first message reaches the client's queue; the next ones stay in the server's


def test_a_connection_that_fetches_faster_than_it_reads_holds_at_most_two_copies_of_a_result_in_the_server(tmp_path):
    """A long result is hundreds of MB: while two copies are on their way to a connection that has not taken them,
    a `fetch` from it is answered `job_status` `done` instead of loading and queueing one more copy."""
    with slow_reader() as (server, read_all):
        server.results = ResultsStore(tmp_path / "results", retention_s=60)
        job_id = "ab" * 16
        server.results.save(job_id, np.zeros((32, 512, 512, 3), np.uint8), 24.0, {})  # 24 MB, over any socket buffer
        server.result_loads = ResultLoads(server.results, DiskThread("test-reader"))
        send_six_times(lambda index: fetch(server, b"slow-reader", f"f{index}", job_id))
        replies = read_all()
        results = [reply for reply in replies if isinstance(reply, Result)]
        statuses = [reply for reply in replies if isinstance(reply, JobStatus)]
        assert len(results) == 3 and all(result.job_id == job_id for result in results)
        assert [(status.request_id, status.state) for status in statuses] == [(f"f{i}", "done") for i in range(3, 6)]
        fetch(server, b"slow-reader", "f6", job_id)  # read: the next fetch sends it again
        assert [type(reply) for reply in read_all()] == [Result]


def test_large_echoes_are_sent_two_at_a_time_per_connection_and_small_ones_freely():
    """Each echo keeps its received bytes until its reply has left: a client sending large echoes without reading
    them could fill the server's memory."""
    data = memoryview(bytes(24 << 20))
    with slow_reader() as (server, read_all):
        send_six_times(
            lambda index: server._on_echo(b"slow-reader", Echo(f"e{index}", ArraySpec((len(data),))), {"data": data})
        )
        replies = read_all()
        assert [reply.request_id for reply in replies if isinstance(reply, Echo)] == ["e0", "e1", "e2"]
        refused = [reply for reply in replies if isinstance(reply, Error)]
        assert [(error.request_id, error.code, error.field) for error in refused] == [
            (f"e{i}", codes.QUEUE_FULL, "data") for i in range(3, 6)
        ]
        for index in range(3):
            server._on_echo(b"slow-reader", Echo(f"small{index}"), {})
        assert [reply.request_id for reply in read_all()] == ["small0", "small1", "small2"]


class SentMessages:
    """Stands in for the server's socket: decodes what is sent, by the connection it goes to."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def send_multipart(self, parts, copy=True, track=False):
        self.sent.append((parts[0], decode([memoryview(part) for part in parts[1:]], Limits())[0]))


def test_jobs_that_another_clients_first_job_overtakes_hear_their_new_place():
    """Fair order: client B's first job goes ahead of client A's second one, whose `accepted` said position 2."""
    server = bare_server()
    server.queue, server.jobs, server._accepted = JobQueue(), {}, 0
    server.worker = SimpleNamespace(running=1)
    server.socket = SentMessages()
    for client, request in ((b"A", "a1"), (b"A", "a2"), (b"B", "b1")):
        server._current_client = client
        message, payloads = submit(num_frames=2, size=8)
        server._on_submit(client, replace(message, request_id=request), payloads)
    accepted = {message.request_id: message for _, message in server.socket.sent if isinstance(message, Accepted)}
    assert [accepted[r].queue_position for r in ("a1", "a2", "b1")] == [1, 2, 2]
    moved = [(to, message) for to, message in server.socket.sent if isinstance(message, Queued)]
    assert [(to, message.job_id, message.queue_position) for to, message in moved] == [(b"A", accepted["a2"].job_id, 3)]


def test_the_ray_driver_reads_its_pipe_while_it_sends_so_two_large_messages_cannot_wait_for_each_other():
    """A job's reference frames go to the driver while a result comes back, both more than the pipe holds: the
    driver's end keeps reading, so neither send waits for the other."""
    from motionclone.backend.server.ray_driver import PipeReader

    server_end, driver_end = multiprocessing.Pipe()
    reader = PipeReader(driver_end)
    frames = bytes(8 << 20)
    sends = [
        threading.Thread(target=server_end.send, args=(("run", frames),), daemon=True),
        threading.Thread(target=driver_end.send, args=(("event", "job", "done", frames),), daemon=True),
    ]
    for send in sends:
        send.start()
    sends[0].join(10)
    assert not sends[0].is_alive(), "the server's send never ended"
    assert server_end.recv()[0] == "event"  # the server reads once its send is done, which ends the driver's
    sends[1].join(10)
    assert not sends[1].is_alive() and reader.get(5)[0] == "run"
    server_end.close()
    with pytest.raises(EOFError):
        reader.get(5)


def test_a_job_waits_for_a_live_ray_slot_rather_than_for_one_that_just_failed_to_start():
    """A slot whose actor Ray could not place does not take the next job while a live slot will free up: placing an
    actor that may never fit can take the actor start time-out (minutes)."""
    from motionclone.backend.server.ray_pool import RETRY_DOWN_SLOT_S, RayWorkerPool, _Slot

    pool = RayWorkerPool.__new__(RayWorkerPool)
    live = _Slot("ray-worker-0", actor=object(), job=queued_job(), state="busy")
    down = _Slot("ray-worker-1", state="down", down_since=time.monotonic())
    pool.slots = [live, down]
    assert not pool.has_free_slot  # the job waits for the live slot
    down.down_since -= RETRY_DOWN_SLOT_S  # a while later the down slot tries to start an actor again
    assert pool.has_free_slot
    pool.submit(job := queued_job())
    assert down.job is job and down.inbox.get_nowait() is job
    down.job, down.down_since, live.actor = None, time.monotonic(), None  # every slot down: no better slot to wait for
    assert pool.has_free_slot


def test_stopping_while_the_ray_driver_starts_ends_the_start_at_once_and_leaves_no_process(monkeypatch):
    from motionclone.backend.server import ray_driver
    from motionclone.backend.server.ray_pool import RayPoolError, RayPoolSettings

    from .stalled_driver import never_reports

    monkeypatch.setattr(ray_driver, "drive", never_reports)
    driver = ray_driver.RayDriver(
        RayPoolSettings(address=None, workers=1, cpus_per_worker=1, preset="tiny"), queue.Queue()
    )
    errors: list[BaseException] = []

    def start() -> None:
        try:
            driver.start()
        except RayPoolError as error:
            errors.append(error)

    starting = threading.Thread(target=start)
    starting.start()
    time.sleep(1.0)
    stopped_at = time.monotonic()
    driver.stop(timeout=1.0)
    starting.join(10)

    assert time.monotonic() - stopped_at < 7  # not the actors' start time-out (minutes)
    assert not starting.is_alive() and str(errors[0]) == "the server stopped while its Ray driver was starting"
    assert multiprocessing.active_children() == []  # the driver process was ended, and cannot hold the exit


def test_a_job_waiting_in_the_ray_driver_for_a_slot_is_cancelled_at_once():
    from collections import deque

    from motionclone.backend.server.engine_job import JobInputs as Inputs
    from motionclone.backend.server.ray_driver import take_message

    server_end, driver_end = multiprocessing.Pipe()
    jobs: dict = {}
    waiting: deque = deque()
    running, queued = queued_job(), queued_job()
    for job in (running, queued):
        take_message(("run", Inputs.from_job(job)), jobs, waiting, "tiny", driver_end)
    started = waiting.popleft()  # the first one went to a slot
    take_message(("cancel", queued.job_id), jobs, waiting, "tiny", driver_end)
    assert not waiting and queued.job_id not in jobs
    assert server_end.poll(5) and server_end.recv()[:3] == ("event", queued.job_id, "cancelled")
    take_message(("cancel", running.job_id), jobs, waiting, "tiny", driver_end)
    assert started.cancel_requested.is_set() and not server_end.poll(0.2)  # the slot stops it before its next step


def test_a_client_that_sends_without_pause_cannot_hold_the_loop(monkeypatch):
    """The loop takes a batch of messages per turn, then starts jobs and sends their events."""
    from motionclone.backend.server import server as server_module

    class Flood:
        received = 0

        def recv_multipart(self, flags, copy):
            self.received += 1
            if self.received > 10 * server_module.MAX_RECEIVE_BATCH:
                raise zmq.Again()
            return [zmq.Frame(b"client"), zmq.Frame(b"ping")]

    server = bare_server()
    server.socket = Flood()
    handled = []
    monkeypatch.setattr(server, "_handle", lambda identity, parts, client: handled.append(identity))
    server._receive_all()
    assert len(handled) == server_module.MAX_RECEIVE_BATCH


@pytest.mark.parametrize("host", ["[::1]", "127.0.0.1"])
def test_the_server_listens_on_ipv6_and_ipv4_loopback_and_names_the_address_it_was_given(host):
    """Clients are told this endpoint (the local backend's first line): an IPv4 bind must not name itself as an
    IPv4-mapped IPv6 address."""
    from motionclone.backend.server.listener import open_listener

    listener = open_listener(ServerConfig(bind=f"tcp://{host}:*", preset="tiny"))
    try:
        assert listener.endpoint.startswith(f"tcp://{host}:")
    finally:
        listener.close()
