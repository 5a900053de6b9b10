"""The Ray driver's relay and the pool's bookkeeping on stubs: no Ray cluster, no model. What a stop, a cancel or a
failed start does while a driver starts, and the races between the relay and the server's thread."""

import multiprocessing
import queue
import sys
import threading
import time
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from motionclone.backend.engine import MotionCloneParams
from motionclone.backend.server import ray_driver, ray_pool
from motionclone.backend.server.jobs import Job
from motionclone.backend.server.ray_driver import RayDriver
from motionclone.backend.server.ray_pool import RayPoolError, RayPoolSettings, RayWorkerPool, _Slot

from .stalled_driver import never_reports

SETTINGS = RayPoolSettings(address=None, workers=2, cpus_per_worker=1, preset="tiny")


def queued_job() -> Job:
    params = MotionCloneParams.from_dict({"prompt": "a fox", "num_frames": 2, "width": 64, "height": 64})
    return Job(b"client", params, np.zeros((2, 8, 8, 3), dtype=np.uint8), 8.0, "tiny")


def drained(events: queue.Queue) -> list:
    return [events.get_nowait() for _ in range(events.qsize())]


# ---- A: a stop requested while the driver starts ------------------------------------------------------------------
def test_the_servers_stop_flag_ends_the_ray_driver_start_at_once(monkeypatch):
    """The server's SIGTERM handler only sets its own flag: `start()` polls it, not just `RayDriver.stop()`'s."""
    monkeypatch.setattr(ray_driver, "drive", never_reports)
    stop = threading.Event()
    driver = RayDriver(SETTINGS, queue.Queue(), should_stop=stop.is_set)
    threading.Timer(1.0, stop.set).start()
    started_at = time.monotonic()
    with pytest.raises(RayPoolError, match="the server stopped while its Ray driver was starting"):
        driver.start()
    assert time.monotonic() - started_at < 8  # not the actors' start time-out (minutes)
    assert multiprocessing.active_children() == []  # the driver process was ended


# ---- B: a driver relaunched for waiting jobs ----------------------------------------------------------------------
def failing_launch(driver: RayDriver, calls: list) -> None:
    def launch() -> None:
        calls.append(time.monotonic())
        raise RayPoolError("cannot reach Ray")

    driver._launch = launch


def test_a_job_cancelled_while_it_waits_for_a_new_driver_ends_without_starting_one():
    events: queue.Queue = queue.Queue()
    driver, launches = RayDriver(SETTINGS, events), []
    failing_launch(driver, launches)
    driver.submit(job := queued_job())
    job.cancel_requested.set()
    driver._send_new_jobs()
    (event,) = drained(events)
    assert (event.kind, event.job, launches, driver.running) == ("cancelled", job, [], 0)


def test_one_failed_driver_start_fails_every_waiting_job_at_once():
    events: queue.Queue = queue.Queue()
    driver, launches = RayDriver(SETTINGS, events), []
    failing_launch(driver, launches)
    jobs = [queued_job(), queued_job()]
    for job in jobs:
        driver.submit(job)
    driver._send_new_jobs()
    ended = drained(events)
    assert len(launches) == 1  # not one start time-out per job
    assert [(e.kind, e.job) for e in ended] == [("failed", job) for job in jobs] and driver.running == 0
    assert all("cannot reach Ray" in e.data["message"] for e in ended)


def test_a_job_cancelled_while_a_new_driver_starts_ends_at_once(monkeypatch):
    monkeypatch.setattr(ray_driver, "drive", never_reports)
    events: queue.Queue = queue.Queue()
    driver = RayDriver(SETTINGS, events)
    driver.submit(job := queued_job())
    relaunch = threading.Thread(target=driver._send_new_jobs)
    relaunch.start()
    try:
        time.sleep(0.5)
        job.cancel_requested.set()
        event = events.get(timeout=5)  # not once the driver has started (minutes)
        assert (event.kind, event.job, driver.running) == ("cancelled", job, 0)
    finally:
        driver._stopping.set()
        relaunch.join(10)
    assert not relaunch.is_alive() and events.empty()  # a stop is not a failed start: nothing left to fail
    assert multiprocessing.active_children() == []


# ---- C: submit against a driver that dies -------------------------------------------------------------------------
class RacingInbox(deque):
    """Runs `_driver_died` on another thread as a job is put in, as the relay thread could."""

    def __init__(self, driver: RayDriver) -> None:
        super().__init__()
        self.driver = driver

    def append(self, job: Job) -> None:
        self.died = threading.Thread(target=self.driver._driver_died, args=(EOFError("gone"),))
        self.died.start()
        self.died.join(0.5)  # with the submit holding the lock, it waits until the job is in
        super().append(job)

    put = append  # the names of a queue.Queue inbox, so that this test tells its race too
    queue = property(lambda self: self)


def test_a_job_submitted_as_the_driver_dies_goes_to_the_next_driver_and_is_not_failed():
    events: queue.Queue = queue.Queue()
    driver = RayDriver(SETTINGS, events)
    driver._inbox = inbox = RacingInbox(driver)
    driver.submit(job := queued_job())
    inbox.died.join(5)
    assert drained(events) == [] and list(driver._inbox) == [job] and driver.running == 1


# ---- F: a job the pipe cannot take ---------------------------------------------------------------------------------
def test_a_job_that_cannot_be_sent_to_the_driver_fails_and_frees_its_slot(monkeypatch):
    events: queue.Queue = queue.Queue()
    driver = RayDriver(SETTINGS, events)
    here, there = multiprocessing.Pipe()
    driver._pipe = here
    monkeypatch.setattr(ray_driver.JobInputs, "from_job", lambda job: lambda: None)  # a lambda: pickle refuses it
    driver.submit(job := queued_job())
    driver._send_new_jobs()
    (event,) = drained(events)
    assert (event.kind, event.job, driver.running) == ("failed", job, 0)
    assert "could not be handed to a Ray worker" in event.data["message"]
    assert not there.poll(0)  # nothing half-sent: the pipe still serves the next job


# ---- D: the pool's actors start within one time-out ---------------------------------------------------------------
class GetTimeoutError(Exception):
    pass


def fake_ray(gets: list) -> SimpleNamespace:
    """The parts of `ray` that `RayWorkerPool.start` uses; every `get` times out."""
    actor = SimpleNamespace(describe=SimpleNamespace(remote=lambda: "describe"))
    actor_class = SimpleNamespace(remote=lambda *args: actor)

    def get(refs, timeout=None):
        gets.append((refs, timeout))
        raise GetTimeoutError()

    return SimpleNamespace(
        init=lambda **kwargs: None,
        remote=lambda cls: SimpleNamespace(options=lambda **options: actor_class),
        get=get,
        kill=lambda actor: None,
        shutdown=lambda: None,
        exceptions=SimpleNamespace(GetTimeoutError=GetTimeoutError),
    )


def test_the_pool_waits_once_for_all_its_actors_and_says_what_they_lack(monkeypatch):
    gets: list = []
    monkeypatch.setitem(sys.modules, "ray", fake_ray(gets))
    pool = RayWorkerPool(SETTINGS, queue.Queue())
    with pytest.raises(RayPoolError, match=r"lack the resources .* fewer --ray-workers"):
        pool.start()
    assert gets == [(["describe", "describe"], ray_pool.ACTOR_START_TIMEOUT_S)]  # one wait, not one per actor


# ---- E: a slot's state as its job ends ----------------------------------------------------------------------------
class RacedSlot(_Slot):
    """Calls `on_free` the moment its job is let go, as the driver's thread may then submit the next one."""

    on_free = None

    def __setattr__(self, name, value) -> None:
        super().__setattr__(name, value)
        if name == "job" and value is None and self.on_free is not None:
            on_free, self.on_free = self.on_free, None
            on_free()


def test_a_slot_given_a_new_job_as_it_lets_go_of_the_last_one_shows_busy():
    pool = RayWorkerPool(SETTINGS, queue.Queue())
    slot = RacedSlot("ray-worker-0", actor=object())
    pool.slots = [slot]
    pool._run_job = lambda slot, job: None
    pool.submit(queued_job())
    slot.inbox.put(None)  # the slot thread ends after the first job
    second = queued_job()
    slot.on_free = lambda: pool.submit(second)
    pool._serve_slot(slot)
    assert (slot.job, slot.state) == (second, "busy")
