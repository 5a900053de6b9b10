"""Image-to-video jobs over the wire: SparseCtrl condition images travel as a second raw part of Submit."""

import threading

import numpy as np
import pytest

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.engine.sparsectrl import SparseCondition
from motionclone.backend.models import load_preset
from motionclone.backend.server.conditions import fit_condition
from motionclone.backend.server.config import ServerConfig
from motionclone.backend.server.server import Server
from motionclone.backend.video_io import resize_frames
from motionclone.protocol import errors as codes
from motionclone.protocol.client import Client, Condition
from motionclone.protocol.errors import JobFailed
from tests.server_process import job_params


@pytest.fixture(scope="module")
def rgb_pipeline():
    return MotionClonePipeline.from_bundle(load_preset("tiny", sparsectrl="rgb"))


@pytest.fixture(scope="module")
def rgb_server(rgb_pipeline, tmp_path_factory):
    """A server in this process (its socket thread is real) with a tiny RGB SparseCtrl model loaded."""
    config = ServerConfig(bind="tcp://127.0.0.1:*", preset="tiny", results_dir=tmp_path_factory.mktemp("results"))
    server = Server(config, pipeline=rgb_pipeline)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(30)


@pytest.fixture
def client(rgb_server):
    with Client(rgb_server.endpoint) as client:
        client.wait_connected(10)
        yield client


def keyframes(count: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(4)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_the_welcome_names_the_condition_types_the_server_takes(client):
    assert client.server_info.limits["condition_types"] == ["rgb"]


def test_a_conditioned_job_equals_the_engine_run_with_the_same_condition(client, rgb_pipeline, reference_frames):
    params = job_params(num_inference_steps=3, guidance_steps=1)
    images = keyframes(2, 48)  # not the job's size: the server resizes like the reference
    event = client.run_job(reference_frames, params, condition=Condition("rgb", images, (0, 7)), timeout=300)
    client.ack(event.job_id)
    assert event.message.metadata["condition"]["frames"] == [0, 7]
    resized = resize_frames(images, 64, 64, sampling="image")
    direct = rgb_pipeline(
        reference_frames, MotionCloneParams.from_dict(params), condition=SparseCondition("rgb", resized, (0, 7))
    )
    assert np.array_equal(event.frames(), direct.frames)
    without = client.run_job(reference_frames, params, timeout=300)
    client.ack(without.job_id)
    assert not np.array_equal(without.frames(), event.frames())  # the condition reached the engine


@pytest.mark.parametrize(
    ("condition", "code", "field"),
    [
        (Condition("scribble", keyframes(1, 64)), codes.INVALID_PARAMETER, "condition_type"),
        (Condition("rgb", keyframes(1, 64), (8,)), codes.INVALID_PARAMETER, "condition_frames"),
        (Condition("pencil", keyframes(1, 64)), codes.INVALID_FIELD, "condition_type"),
    ],
)
def test_bad_conditions_name_the_field_and_the_server_keeps_serving(client, reference_frames, condition, code, field):
    with pytest.raises(JobFailed) as caught:
        client.run_job(reference_frames, job_params(), condition=condition, timeout=60)
    assert (caught.value.code, caught.value.field) == (code, field)
    assert "8 frames" in str(caught.value) or field != "condition_frames"
    event = client.run_job(reference_frames, job_params(num_inference_steps=2, guidance_steps=1), timeout=300)
    client.ack(event.job_id)


def test_condition_images_are_shrunk_as_the_official_code_shrinks_them():
    # PIL's antialiased bilinear (torchvision's Resize on a PIL image), in the reference's resize mode.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    images = np.repeat(board[None, :, :, None], 3, axis=3)
    for mode in ("squash", "pad"):
        params = MotionCloneParams.from_dict(job_params(resize_mode=mode, height=32, width=32))
        fitted = fit_condition(SparseCondition("rgb", images, (0,)), params).images
        assert fitted.shape == (1, 32, 32, 3)
        assert np.abs(fitted.astype(int) - 128).max() <= 8


def test_condition_images_must_match_their_frame_count(client):
    with pytest.raises(ValueError, match="2 images for 1 frames"):
        Condition("rgb", keyframes(2, 64), (0,))


def test_condition_fields_without_condition_images_are_refused():
    from motionclone.backend.server.conditions import condition_from_submit
    from motionclone.protocol.errors import ProtocolError
    from motionclone.protocol.messages import ArraySpec, Submit

    message = Submit("r", {}, ArraySpec((8, 64, 64, 3)), condition_frames=[0])
    with pytest.raises(ProtocolError) as caught:
        condition_from_submit(message, None)
    assert (caught.value.code, caught.value.field) == (codes.INVALID_FIELD, "condition_frames")


def test_cli_submit_sends_condition_images(rgb_server, reference_frames, tmp_path):
    import json

    from motionclone.backend.cli import main
    from motionclone.backend.video_io import write_mp4, write_png_sequence

    reference = write_mp4(reference_frames, tmp_path / "reference.mp4")
    (key,) = write_png_sequence(keyframes(1, 64), tmp_path / "key")
    options = ["--frames", "8", "--width", "64", "--height", "64", "--steps", "2", "--guidance-steps", "1"]
    args = ["submit", "--server", rgb_server.endpoint, "--reference", str(reference), "--prompt", "a fox", *options]
    condition = ["--condition", str(key), "--condition-frames", "5", "--condition-type", "rgb"]
    assert main([*args, *condition, "--no-progress", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())["condition"]
    assert (record["kind"], record["frames"]) == ("rgb", [5])
