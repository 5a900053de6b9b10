"""Real backend processes on free loopback ports, for the server and add-on tests."""

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
