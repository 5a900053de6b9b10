"""The CLI's job commands against a stand-in server client, and the checks it makes before any work."""

import signal
import time
from types import SimpleNamespace

import pytest

from motionclone.backend import cli
from motionclone.backend.errors import ParameterError
from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import write_mp4

JOB = "0123456789abcdef0123456789abcdef"


def event(kind: str, job_id: str | None = JOB, request_id: str | None = None, **message) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, job_id=job_id, request_id=request_id, message=SimpleNamespace(**message))


class FakeClient:
    """What the CLI uses of a protocol client; `events` are handed out in order, `job` runs in `run_job`."""

    def __init__(self, events=(), job=None, max_bytes=512 << 20) -> None:
        self.events = list(events)
        self.job = job
        self.max_bytes = max_bytes
        self.cancelled: list[str] = []

    def __enter__(self) -> "FakeClient":
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def wait_connected(self, timeout):
        limits = {"native_size": {"num_frames": 8, "height": 64, "width": 64}, "default_config": "camera"}
        return SimpleNamespace(default_preset="tiny", limits=limits)

    def max_message_bytes(self) -> int:
        return self.max_bytes

    def run_job(self, frames, params, on_event=None, **options):
        return self.job(on_event)

    def next_event(self, timeout=None):
        if self.events:
            return self.events.pop(0)
        time.sleep(min(timeout or 0.0, 0.05))
        return None

    def cancel(self, job_id: str) -> str:
        self.cancelled.append(job_id)
        return "cancel-request"

    def status(self) -> str:
        return "status-request"


@pytest.fixture
def reference(tmp_path):
    return write_mp4(make_moving_square_clip(8, 64, 64), tmp_path / "reference.mp4")


def submit(reference, tmp_path, *extra: str) -> list[str]:
    return ["submit", "--reference", str(reference), "--prompt", "a fox", "--no-progress", "--steps", "2",
            "--guidance-steps", "1", "--out", str(tmp_path / "out"), *extra]  # fmt: skip


def use_client(monkeypatch, client: FakeClient) -> FakeClient:
    monkeypatch.setattr(cli, "open_client", lambda args, keys: client)
    return client


def test_ctrl_c_during_the_upload_waits_for_the_acceptance_then_cancels_the_job_and_names_it(
    reference, tmp_path, monkeypatch, capsys
):
    def interrupted(on_event):
        raise KeyboardInterrupt  # before the server's "accepted" came

    client = use_client(monkeypatch, FakeClient([event("accepted"), event("cancelled")], interrupted))
    assert cli.main(submit(reference, tmp_path)) == cli.EXIT_INTERRUPTED
    assert client.cancelled == [JOB]
    assert f"Cancelled job {JOB}" in capsys.readouterr().err
    # No answer: the job may be there, and the user is told where to look.
    client = use_client(monkeypatch, FakeClient([], interrupted))
    assert cli.main(submit(reference, tmp_path)) == cli.EXIT_INTERRUPTED
    assert client.cancelled == [] and "`motionclone status`" in capsys.readouterr().err


def test_sigterm_on_submit_cancels_the_job_as_ctrl_c_does(reference, tmp_path, monkeypatch, capsys):
    def terminated(on_event):
        on_event(event("accepted", queue_position=0))
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)  # as the signal would, in this (the main) thread

    client = use_client(monkeypatch, FakeClient([event("cancelled")], terminated))
    assert cli.main(submit(reference, tmp_path)) == cli.EXIT_INTERRUPTED
    assert client.cancelled == [JOB] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_job_over_the_servers_message_limit_is_refused_naming_the_flags_before_the_reference_is_read(
    reference, tmp_path, monkeypatch, capsys
):
    from motionclone.backend import video_io

    monkeypatch.setattr(video_io, "prepare_reference", lambda *args, **kwargs: pytest.fail("read the reference"))
    use_client(monkeypatch, FakeClient())
    big = submit(reference, tmp_path, "--frames", "96", "--width", "2048", "--height", "1024")
    assert cli.main(big) == cli.EXIT_PARAMETERS
    error = capsys.readouterr().err
    assert "96 frames of 2048 x 1024 make a 576 MiB request; the server takes at most 512 MiB" in error
    assert "lower --frames, --width or --height" in error


def test_a_malformed_job_id_is_refused_before_connecting(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "open_client", lambda *args: pytest.fail("connected"))
    for job_id in ("", "XYZ", JOB.upper(), JOB + "0"):
        for command in (["fetch", job_id, "--out", str(tmp_path / "out")], ["cancel", job_id]):
            assert cli.main(command) == cli.EXIT_PARAMETERS, command
            assert "`job_id` must be the 32 lowercase hex characters" in capsys.readouterr().err


def test_cancel_says_whether_the_job_was_stopped_had_finished_or_is_unknown(monkeypatch, capsys):
    for answer, said in [
        (event("cancelled"), f"Cancelled job {JOB}."),
        (event("job_status", request_id="cancel-request", state="done"), f"motionclone fetch {JOB} --server"),
        (event("server_status", None, request_id="status-request"), "a running one stops before its next step"),
    ]:
        client = use_client(monkeypatch, FakeClient([answer]))
        assert cli.main(["cancel", JOB]) == 0, said
        assert client.cancelled == [JOB] and said in capsys.readouterr().out
    unknown = event("error", request_id="cancel-request", code="unknown_job", message="", hint="", field=None)
    use_client(monkeypatch, FakeClient([unknown]))
    assert cli.main(["cancel", JOB]) == cli.EXIT_BACKEND
    assert f"the server has no queued or running job {JOB}" in capsys.readouterr().err


def parse_generate(*extra: str):
    return cli.build_parser(["generate"]).parse_args(
        ["generate", "--reference", "r.mp4", "--prompt", "a fox", "--out", "o", *extra]
    )


def test_frame_step_errors_and_limits_name_frame_step_and_the_clip(monkeypatch, capsys):
    from motionclone.backend import video_io

    monkeypatch.setattr(video_io, "probe_clip", lambda reference: (16, 24.0))
    with pytest.raises(ParameterError, match="16 takes 1 frame of the reference's 16; a video needs at least 2") as e:
        cli.flag_overrides(parse_generate("--frame-step", "16"))
    assert e.value.name == "frame_step"  # not num_frames, which --frames would set
    monkeypatch.setattr(video_io, "probe_clip", lambda reference: (16, 1000.0))
    with pytest.raises(ParameterError, match=r"1000 fps gives 1000 fps, and result\.mp4 takes at most 240") as e:
        cli.flag_overrides(parse_generate("--frame-step", "1"))
    assert e.value.name == "frame_step"  # not fps, which --fps would set
    monkeypatch.setattr(video_io, "probe_clip", lambda reference: (720, 24.0))
    assert cli.flag_overrides(parse_generate("--frame-step", "2"))["num_frames"] == 256
    warning = capsys.readouterr().err
    assert "takes 360 frames of the reference's 720; only the first 256 are used" in warning
    assert "--frame-step" in warning and "--frames" in warning


def test_frame_step_with_a_set_of_the_sampling_is_refused_rather_than_one_losing(monkeypatch):
    from motionclone.backend import video_io

    monkeypatch.setattr(video_io, "probe_clip", lambda reference: (40, 24.0))
    for assignment in ("frame_step=3", "frame_sampling=linspace"):
        with pytest.raises(ParameterError, match="cannot be combined with --set") as e:
            cli.flag_overrides(parse_generate("--frame-step", "2", "--set", assignment))
        assert e.value.name == "--frame-step"


def test_an_option_value_that_starts_with_dashes_is_not_a_mistyped_option():
    parser = cli.build_parser(["generate"])
    assert cli.mistyped_option(parser, "generate", ["--negative-prompt", "--no text, blurry"]) is None
    assert cli.mistyped_option(parser, "generate", ["--object-pair", "--a", "--b"]) is None
    typo = cli.mistyped_option(parser, "generate", ["--negative-prompt", "--no text", "--promt", "x"])
    assert typo is not None and "it has no option --promt" in typo


def test_a_reference_too_short_or_broken_is_reported_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from motionclone.backend import generate

    monkeypatch.setattr(generate, "load_preset", lambda *args, **kwargs: pytest.fail("loaded the model"))
    short = write_mp4(make_moving_square_clip(4, 64, 64), tmp_path / "short.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0" * 4096)
    for reference, said in ((short, "has 4 frames but 8 are needed"), (broken, "broken.mp4")):
        command = ["generate", "--preset", "tiny", "--device", "cpu", "--reference", str(reference), "--prompt",
                   "a fox", "--frames", "8", "--no-progress", "--out", str(tmp_path / "out")]  # fmt: skip
        assert cli.main(command) == cli.EXIT_VIDEO
        assert said in capsys.readouterr().err


def test_serve_refuses_a_bind_that_is_no_endpoint_as_an_argument_error(capsys):
    assert cli.main(["serve", "--bind", "garbage", "--device", "cpu"]) == cli.EXIT_PARAMETERS
    assert "`--bind` must be a ZeroMQ endpoint such as tcp://127.0.0.1:5555" in capsys.readouterr().err


def test_ctrl_c_during_start_up_says_interrupted_without_a_traceback(monkeypatch, capsys):
    def slow_imports(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", slow_imports)
    assert cli.main(["info"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"
