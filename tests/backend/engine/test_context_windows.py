"""Context windows for long clips: the partition, the blending, and 48-frame jobs on the tiny preset."""

import numpy as np
import pytest
import torch

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline, pipeline_motionclone
from motionclone.backend.engine.context_windows import ContextWindows, freenoise
from motionclone.backend.engine.sparsectrl import SparseCondition
from motionclone.backend.models import load_preset
from motionclone.backend.samples import make_moving_square_clip
from motionclone.protocol.windows import context_windows, frame_weights, sampled_count, window_weights

SIZE = 64  # 8x8 latents


def test_uniform_windows_slide_by_length_minus_overlap_and_the_last_ends_on_the_last_frame():
    windows = context_windows(48, 16, 4)
    assert [window[0] for window in windows] == [0, 12, 24, 32]
    assert all(window == list(range(window[0], window[0] + 16)) for window in windows)
    assert context_windows(16, 16, 4) == [list(range(16))]
    assert context_windows(10, 16, 4) == [list(range(10))]


def test_looped_windows_wrap_around_to_the_first_frames():
    windows = context_windows(40, 16, 4, "looped")
    assert [window[0] for window in windows] == [0, 12, 24, 36]
    assert windows[-1] == [36, 37, 38, 39, *range(12)]


def test_weights_fall_off_towards_the_edges_and_sum_to_one_on_every_frame():
    assert window_weights(8, 3) == [0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25]
    for num_frames, schedule in ((48, "uniform"), (64, "uniform"), (40, "looped")):
        windows = context_windows(num_frames, 16, 4, schedule)
        totals = np.zeros(num_frames)
        for window, weights in zip(windows, frame_weights(num_frames, windows, 4), strict=True):
            totals[window] += weights
        assert np.allclose(totals, 1.0)
    (single,) = frame_weights(16, [list(range(16))], 4)
    assert single == [1.0] * 16  # one window keeps its prediction exactly


@pytest.mark.parametrize(
    ("args", "message"), [((48, 1, 0), "at least 2"), ((48, 16, 16), "overlap"), ((48, 16, 4, "x"), "schedule")]
)
def test_bad_windows_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        context_windows(*args)


def test_blending_predictions_that_agree_gives_them_back():
    params = MotionCloneParams(prompt="x", num_frames=48, height=SIZE, width=SIZE)
    windows = ContextWindows.from_params(params, torch.device("cpu"), torch.float32)
    whole = torch.randn(1, 4, 48, 8, 8)
    blended = windows.blend([whole[:, :, frames] for frames in windows.frames])
    assert torch.allclose(blended, whole, atol=1e-6)
    assert sampled_count(120, 2) == 60 and sampled_count(121, 2) == 61


def test_freenoise_repeats_the_first_windows_noise_shuffled():
    noise = torch.randn(1, 4, 40, 2, 2)
    mixed = freenoise(noise, 16, 4, torch.Generator().manual_seed(0))
    assert torch.equal(mixed[:, :, :16], noise[:, :, :16])
    first = {tuple(noise[0, :, f].flatten().tolist()) for f in range(16)}
    later = [tuple(mixed[0, :, f].flatten().tolist()) for f in range(16, 40)]
    assert all(frame in first for frame in later)
    assert later[:12] != [tuple(noise[0, :, f].flatten().tolist()) for f in range(12)]  # shuffled, not copied


@pytest.fixture(scope="module")
def pipe():
    return MotionClonePipeline.from_bundle(load_preset("tiny", seed=0))


@pytest.fixture(scope="module")
def reference():
    return make_moving_square_clip(num_frames=100, height=SIZE, width=SIZE)


def long_params(**changes):
    values = dict(
        prompt="a fox running",
        num_frames=48,
        height=SIZE,
        width=SIZE,
        num_inference_steps=3,
        guidance_steps=2,
        warm_up_steps=0,
        cool_down_steps=0,
        context_length=16,
        context_overlap=4,
    )
    return MotionCloneParams(**{**values, **changes})


def test_a_48_frame_job_runs_in_windows_whose_attention_maps_have_16_frames(pipe, reference, monkeypatch):
    seen = []
    loss = pipeline_motionclone.motion_loss

    def recording(probs, representation):
        seen.append({name: tuple(value.shape) for name, value in probs.items()})
        return loss(probs, representation)

    monkeypatch.setattr(pipeline_motionclone, "motion_loss", recording)
    output = pipe(reference, long_params(frame_sampling="step", frame_step=2))
    assert output.frames.shape == (48, SIZE, SIZE, 3)
    assert len(seen) == 2 * 4  # 2 guided steps × 4 windows
    assert all(shape[-1] == shape[-2] == 16 for maps in seen for shape in maps.values())
    assert output.metadata["context_windows"] == context_windows(48, 16, 4)
    assert len(output.metadata["representation"]["key"]) == 4  # one representation per window
    record = output.metadata["reference_frames"]
    assert record["indices"] == list(range(0, 96, 2)) and record["source_fps"] == 8.0
    assert len(output.metadata["motion_loss"]) == 2


def test_one_window_covering_all_frames_equals_the_run_without_windows(pipe, reference):
    whole = pipe(reference, long_params(num_frames=16, context_length=32)).frames
    one_window = pipe(reference, long_params(num_frames=16, context_length=16, context_overlap=8)).frames
    assert np.array_equal(whole, one_window)


def test_windows_change_the_result_and_freenoise_is_an_option(pipe, reference):
    windowed = pipe(reference, long_params(num_frames=24, context_length=16, context_overlap=8))
    looped = pipe(
        reference, long_params(num_frames=24, context_length=16, context_overlap=8, context_schedule="looped")
    )
    coupled = pipe(
        reference, long_params(num_frames=24, context_length=16, context_overlap=8, context_noise="freenoise")
    )
    assert not np.array_equal(windowed.frames, looped.frames)
    assert not np.array_equal(windowed.frames, coupled.frames)


def test_a_condition_in_the_last_window_conditions_that_window(reference):
    pipe = MotionClonePipeline.from_bundle(load_preset("tiny", seed=0, sparsectrl="rgb"))
    image = np.random.default_rng(2).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    params = long_params(num_frames=32, context_length=16, context_overlap=4, num_inference_steps=2, guidance_steps=1)
    plain = pipe(reference, params).frames
    conditioned = pipe(reference, params, condition=SparseCondition("rgb", image, (30,))).frames
    assert not np.array_equal(plain, conditioned)


def test_progress_counts_each_windows_extraction_and_denoising_pass(pipe, reference):
    reports = []
    pipe(reference, long_params(), progress=lambda stage, step, total: reports.append((stage, step, total)))
    extract = [(step, total) for stage, step, total in reports if stage == "extract"]
    denoise = [(step, total) for stage, step, total in reports if stage == "denoise"]
    assert extract == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert denoise == [(step, 12) for step in range(13)]  # 3 steps × 4 windows, one report per window pass
    plain = []
    pipe(reference, long_params(num_frames=16, guidance_steps=0), progress=lambda *r: plain.append(r))
    assert [r for r in plain if r[0] == "extract"] == [("extract", 0, 1), ("extract", 1, 1)]
    assert [r for r in plain if r[0] == "denoise"][-1] == ("denoise", 3, 3)


@pytest.mark.parametrize("stage", ["extract", "denoise"])
def test_cancel_stops_a_long_clip_between_two_windows(pipe, reference, stage):
    """A step of a long clip runs every window; Cancel is not held until the last one."""
    from motionclone.backend.errors import JobCancelled

    pressed = []

    def progress(reported, step, total):
        if reported == stage and step == 1:  # the first window's pass is done
            pressed.append(True)

    with pytest.raises(JobCancelled, match="window 2 of 4"):
        pipe(reference, long_params(), progress=progress, cancel=lambda: bool(pressed))
