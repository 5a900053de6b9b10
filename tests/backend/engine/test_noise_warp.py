"""Noise carried along the reference's optical flow: the flow maps and the warp."""

import numpy as np
import pytest
import torch

from motionclone.backend.engine.noise_warp import reference_source_maps, warp_shared_noise
from motionclone.backend.engine.subject_placement import measure_set_motion
from motionclone.backend.errors import JobCancelled
from motionclone.backend.samples import make_moving_square_clip

FRAMES, SIZE, LATENT, STEP = 8, 64, 32, 2  # a textured patch moves STEP px per frame = 1 latent cell per frame


def textured_patch_clip() -> tuple[np.ndarray, int, int]:
    """A random-textured 16x16 patch sliding right STEP px per frame over a smooth gradient; returns (frames, top,
    left) with the patch's top-left corner in the first frame."""
    rng = np.random.default_rng(3)
    background = np.broadcast_to(np.linspace(60, 120, SIZE, dtype=np.float32)[:, None, None], (SIZE, SIZE, 3))
    patch = rng.integers(0, 256, (16, 16, 3)).astype(np.float32)
    top, left = 24, 10
    frames = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    for index in range(FRAMES):
        frame = background.copy()
        frame[top : top + 16, left + STEP * index : left + STEP * index + 16] = patch
        frames[index] = frame.astype(np.uint8)
    return frames, top, left


def test_source_maps_follow_a_moving_patch_and_keep_the_still_background_in_place():
    frames, top, left = textured_patch_clip()
    maps = reference_source_maps(frames, LATENT, LATENT)
    assert maps.shape == (FRAMES, LATENT, LATENT, 2)
    xs, ys = np.meshgrid(np.arange(LATENT), np.arange(LATENT))
    identity = np.stack([xs, ys], axis=-1)
    assert np.array_equal(maps[0], identity)
    last = FRAMES - 1
    # The patch's inner cells in the last frame came from STEP/2 latent cells per frame further left.
    inner_rows = slice(top // 2 + 2, top // 2 + 6)
    inner_columns = slice((left + STEP * last) // 2 + 2, (left + STEP * last) // 2 + 6)
    moved = maps[last, inner_rows, inner_columns] - identity[inner_rows, inner_columns]
    assert np.abs(moved[..., 0] + last).max() < 0.75, moved[..., 0]
    assert np.abs(moved[..., 1]).max() < 0.5
    # Background far from the path, and the path the patch has left behind, stay where they are.
    assert np.array_equal(maps[last, :6], identity[:6])
    assert np.array_equal(maps[last, inner_rows, :4], identity[inner_rows, :4])


def test_warp_takes_every_value_from_the_shared_draw_and_wraps_at_the_edges():
    shared = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    xs, ys = np.meshgrid(np.arange(8, dtype=np.float32), np.arange(8, dtype=np.float32))
    still = np.stack([xs, ys], axis=-1)
    shifted = np.stack([xs - 3.2, ys], axis=-1)  # content moved 3 cells right; it entered from the left edge
    warped = warp_shared_noise(shared, np.stack([still, shifted]))
    assert warped.shape == (1, 4, 2, 8, 8)
    assert torch.equal(warped[:, :, 0], shared[:, :, 0])
    assert torch.equal(warped[:, :, 1], torch.roll(shared[:, :, 0], shifts=3, dims=-1))


def cancelled_on_call(number: int):
    """A `should_stop` that says True on its `number`-th call."""
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) == number

    return should_stop


@pytest.mark.parametrize("measure", ["source maps", "set motion"])
def test_measuring_the_references_motion_stops_between_frames_when_the_job_is_cancelled(measure):
    """Optical flow of a long, large clip takes minutes: Cancel must not wait for all of it."""
    frames = make_moving_square_clip(num_frames=8, height=32, width=32)

    def run(should_stop):
        if measure == "source maps":
            return reference_source_maps(frames, 8, 8, should_stop)
        return measure_set_motion(frames, should_stop)

    with pytest.raises(JobCancelled, match="frame 3 of 8"):
        run(cancelled_on_call(3))
    run(lambda: False)  # runs to the end when nobody cancels
