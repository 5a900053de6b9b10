"""The job queue's order: round robin between clients, FIFO within one, positions that match `pop`."""

import numpy as np

from motionclone.backend.engine import MotionCloneParams
from motionclone.backend.server.jobs import Job, JobQueue


def make_job(client: bytes, name: str) -> Job:
    job = Job(client, MotionCloneParams(prompt="a fox"), np.zeros((1, 8, 8, 3), np.uint8), 24.0, "tiny", client=client)
    job.job_id = name
    return job


def drain(jobs: JobQueue) -> list[str]:
    return [job.job_id for job in iter(jobs.pop, None)]


def test_one_clients_many_jobs_do_not_starve_another_client():
    jobs = JobQueue()
    for n in range(4):
        jobs.push(make_job(b"A", f"A{n}"))
    assert jobs.pop().job_id == "A0"  # A's first job runs at once
    b_position = jobs.push(make_job(b"B", "B0"))
    assert b_position == 0  # B has not been served yet, A just was
    assert drain(jobs) == ["B0", "A1", "A2", "A3"]


def test_clients_alternate_and_keep_their_own_order():
    jobs = JobQueue()
    for name in ["A0", "A1", "A2", "B0", "B1", "C0"]:
        jobs.push(make_job(name[:1].encode(), name))
    assert drain(jobs) == ["A0", "B0", "C0", "A1", "B1", "A2"]


def test_positions_and_iteration_follow_the_order_pop_takes():
    jobs = JobQueue()
    queued = [make_job(name[:1].encode(), name) for name in ["A0", "A1", "B0", "A2", "C0", "B1"]]
    for job in queued:
        jobs.push(job)
    jobs.pop()
    planned = [job.job_id for job in jobs]
    assert [jobs.position(job) for job in jobs] == list(range(len(jobs)))
    assert len(jobs) == 5
    assert drain(jobs) == planned


def test_remove_takes_a_job_out_of_the_order():
    jobs = JobQueue()
    a0, a1, b0 = make_job(b"A", "A0"), make_job(b"A", "A1"), make_job(b"B", "B0")
    for job in (a0, a1, b0):
        jobs.push(job)
    assert jobs.remove(b0) and not jobs.remove(b0)
    assert jobs.position(b0) is None
    assert drain(jobs) == ["A0", "A1"]


def test_a_client_served_long_ago_goes_before_one_served_just_now():
    jobs = JobQueue()
    jobs.push(make_job(b"A", "A0"))
    jobs.pop()
    for name in ["B0", "B1"]:
        jobs.push(make_job(b"B", name))
    jobs.pop()  # B0
    jobs.push(make_job(b"A", "A1"))
    assert drain(jobs) == ["A1", "B1"]
