"""Real backend processes on free loopback ports, for the server and add-on tests."""

import time
from pathlib import Path

import pytest

from motionclone.backend.process import BackendProcess
from motionclone.backend.samples import make_moving_square_clip


class ServerProcess:
    """A tiny-preset `motionclone serve` on the CPU, with previews every 2 steps; `start()` returns it running."""

    def __init__(self, results_dir: Path, bind: str = "tcp://127.0.0.1:*", extra: tuple[str, ...] = ()) -> None:
        self.results_dir = results_dir
        self.bind = bind
        self.extra = extra
        self.backend: BackendProcess | None = None

    def start(self) -> "ServerProcess":
        self.backend = BackendProcess.start(
            self.results_dir, bind=self.bind, extra_args=("--preview-every", "2", *self.extra)
        )
        return self

    @property
    def endpoint(self) -> str:
        assert self.backend is not None
        return self.backend.endpoint

    @property
    def process(self):
        assert self.backend is not None
        return self.backend.process

    @property
    def output(self) -> list[str]:
        assert self.backend is not None
        return list(self.backend.tail)

    def kill(self) -> None:
        if self.backend is not None:
            self.backend.kill()

    def terminate(self) -> int:
        assert self.backend is not None
        return self.backend.stop()


@pytest.fixture
def start_server(tmp_path):
    started: list[ServerProcess] = []

    def start(results_dir: Path | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(results_dir or tmp_path / "results", **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def reference_frames():
    return make_moving_square_clip(num_frames=12, height=64, width=64)


def job_params(**changes):
    values = {
        "prompt": "a fox",
        "num_frames": 8,
        "height": 64,
        "width": 64,
        "num_inference_steps": 4,
        "guidance_steps": 2,
        "warm_up_steps": 1,
        "cool_down_steps": 1,
        "seed": 1,
    }
    values.update(changes)
    return values


def cancel_mid_job(client, reference_frames, cancel_at_step: int = 3, steps: int = 40) -> tuple[int, int]:
    """Submit a `steps`-step job, cancel it once its denoising progress reaches `cancel_at_step`, and wait for the
    `cancelled` event. Returns (the last denoising step reported before it, the step the job says it stopped at)."""
    client.submit(reference_frames, job_params(num_inference_steps=steps, guidance_steps=2))
    job_id, cancelled_after, seen_step, cancelled = None, None, 0, None
    deadline = time.monotonic() + 120
    while cancelled is None and time.monotonic() < deadline:
        event = client.next_event(1.0)
        if event is None:
            continue
        if event.kind == "accepted":
            job_id = event.job_id
        elif event.kind == "progress" and event.message.stage == "denoise" and event.message.preview is None:
            seen_step = max(seen_step, event.message.step)
            if cancelled_after is None and seen_step >= cancel_at_step:
                client.cancel(job_id)
                cancelled_after = seen_step
        elif event.kind == "cancelled":
            cancelled = event
    assert cancelled is not None and cancelled.job_id == job_id and cancelled_after is not None
    return seen_step, int(cancelled.message.reason.split("step ")[1].split()[0])
