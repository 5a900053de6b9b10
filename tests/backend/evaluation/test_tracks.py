"""Lucas-Kanade point tracks: known synthetic motion is recovered, failures are marked and stay marked."""

import numpy as np
import pytest

from motionclone.backend.errors import ModelNotFoundError, ParameterError
from motionclone.backend.evaluation.tracks import (
    MAX_GRID,
    TrackerSettings,
    grid_points,
    track_points,
    track_points_cotracker,
)

from .synthetic import moving_square_clip, panning_clip, texture


def test_grid_points_are_cell_centres_row_major_and_respect_a_box():
    points = grid_points(64, 128, 4)
    assert points.shape == (16, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points[:4, 0], [15.5, 47.5, 79.5, 111.5])  # x of the first row
    np.testing.assert_allclose(points[::4, 1], [7.5, 23.5, 39.5, 55.5])  # y of the first column
    boxed = grid_points(64, 128, 2, box=(10, 20, 30, 40))
    np.testing.assert_allclose(boxed, [[14.5, 24.5], [24.5, 24.5], [14.5, 34.5], [24.5, 34.5]])
    with pytest.raises(ParameterError, match="`grid`"):
        grid_points(64, 64, 1)
    with pytest.raises(ParameterError, match="`box`"):
        grid_points(64, 64, 4, box=(30, 10, 20, 40))


def test_grid_points_refuse_a_grid_finer_than_the_frame_or_the_limit_and_stay_inside_the_frame():
    assert len(grid_points(48, 64, 48)) == 48 * 48  # one point per pixel row of the shorter side is the finest
    finest = r"`grid` must be at most 48 points per side \(the frame's shorter side, in pixels\), got 49"
    with pytest.raises(ParameterError, match=finest):
        grid_points(48, 64, 49)
    with pytest.raises(ParameterError, match=f"`grid` must be at most {MAX_GRID} points per side"):
        grid_points(512, 512, MAX_GRID + 1)
    tiny_box = grid_points(64, 64, 16, box=(0, 0, 4, 4))  # cells a quarter pixel wide at the frame's corner
    assert tiny_box.min() >= 0 and tiny_box.max() <= 63


@pytest.mark.parametrize("velocity", [(1.5, -0.75), (-2.0, 1.25)])
def test_tracker_recovers_a_known_sub_pixel_translation(velocity):
    frames = panning_clip(16, 64, velocity)
    tracks = track_points(frames, grid_points(64, 64, 16))
    kept = tracks.fully_valid()
    assert kept.sum() >= 60  # points that stay inside the frame for all 16 frames
    per_track = np.diff(tracks.positions[kept], axis=1).mean(axis=1)  # mean displacement per frame, per track
    assert np.median(np.abs(per_track - velocity).max(axis=1)) < 0.1
    np.testing.assert_allclose(per_track.mean(axis=0), velocity, atol=0.3)
    assert (np.abs(per_track - velocity).max(axis=1) < 0.3).mean() > 0.9


def test_tracker_follows_the_moving_square_and_leaves_the_background_still():
    frames = moving_square_clip(velocity=(3, 1))  # the square starts at x 8..40, y 20..52
    tracks = track_points(frames, grid_points(96, 96, 24))
    kept = tracks.fully_valid()
    start = tracks.positions[:, 0]
    # points at least half a window (7 px) inside the square: their window sees only the square's texture
    inside = (start[:, 0] > 16) & (start[:, 0] < 32) & (start[:, 1] > 28) & (start[:, 1] < 44) & kept
    far = (start[:, 0] > 10) & (start[:, 1] > 80) & kept  # bottom rows: the square never comes near
    assert inside.sum() == 16 and far.sum() >= 10
    np.testing.assert_allclose(tracks.positions[inside, -1] - start[inside], [[45, 15]] * inside.sum(), atol=0.3)
    assert np.abs(tracks.positions[far, -1] - start[far]).max() < 0.1


def test_forward_backward_check_invalidates_points_and_they_stay_invalid():
    frames = panning_clip(12, 64, (1.0, 0.5))
    frames[6:] = texture(64, 64, seed=42)  # an unrelated picture from frame 6 on: no point can be followed there
    frames[7:] = np.roll(frames[6], shift=(1, 2), axis=(0, 1))[None]
    tracks = track_points(frames, grid_points(64, 64, 16))
    assert tracks.valid[:, :6].mean() > 0.8
    lost = ~tracks.valid[:, 6]
    assert lost.mean() > 0.9  # the cut: forward and backward flow disagree or the match fails
    assert not tracks.valid[lost, 6:].any()  # once lost, a track never returns (even though 6 → 7 is trackable)
    # the tightest round-trip limit drops more points than the loose one on a clean clip with subpixel motion
    clean = panning_clip(8, 64, (0.7, 0.3))
    strict = track_points(clean, grid_points(64, 64, 16), TrackerSettings(fb_threshold=0.001, fb_min_px=0.001))
    loose = track_points(clean, grid_points(64, 64, 16))
    assert strict.fully_valid().sum() < loose.fully_valid().sum()


def test_tracker_rejects_bad_inputs_and_settings():
    with pytest.raises(ParameterError, match="`frames`"):
        track_points(np.zeros((1, 8, 8, 3), dtype=np.uint8), grid_points(8, 8, 2))
    with pytest.raises(ParameterError, match="`window`"):
        TrackerSettings(window=8)
    with pytest.raises(ParameterError, match="`fb_threshold`"):
        TrackerSettings(fb_threshold=0)


def test_fb_threshold_scales_with_resolution_with_a_floor():
    settings = TrackerSettings()
    assert settings.fb_threshold_px(512, 512) == pytest.approx(2.0)
    assert settings.fb_threshold_px(256, 384) == pytest.approx(1.5)
    assert settings.fb_threshold_px(64, 64) == pytest.approx(0.5)


def test_cotracker_without_its_code_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cotracker", None)  # not importable, whatever is installed
    checkpoint = tmp_path / "scaled_offline.pth"
    checkpoint.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="needs CoTracker's code installed"):
        track_points_cotracker(panning_clip(4, 32, (1, 0)), grid_points(32, 32, 4), checkpoint)


def test_cotracker_adapter_maps_queries_and_outputs(tmp_path, monkeypatch):
    # A stand-in for the `cotracker` package with CoTracker's documented interface: CoTrackerPredictor(checkpoint=...)
    # called as model(video (B, T, 3, H, W) float, queries=(B, N, 3) [frame, x, y]) → tracks (B, T, N, 2), visibility.
    import sys
    import types

    import torch

    calls = {}

    class FakePredictor(torch.nn.Module):
        def __init__(self, checkpoint):
            super().__init__()
            calls["checkpoint"] = checkpoint

        def forward(self, video, queries):
            calls["video"], calls["queries"] = tuple(video.shape), queries.clone()
            steps = torch.arange(video.shape[1], dtype=torch.float32)[:, None, None] * torch.tensor([2.0, 1.0])
            tracks = queries[:, None, :, 1:] + steps[None]  # every point moves (2, 1) per frame
            return tracks, torch.ones(tracks.shape[:3], dtype=torch.bool)

    package, predictor = types.ModuleType("cotracker"), types.ModuleType("cotracker.predictor")
    predictor.CoTrackerPredictor = FakePredictor
    monkeypatch.setitem(sys.modules, "cotracker", package)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", predictor)
    checkpoint = tmp_path / "scaled_offline.pth"
    checkpoint.write_bytes(b"weights")
    points = np.array([[4.0, 5.0], [20.0, 28.0]], dtype=np.float32)
    tracks = track_points_cotracker(panning_clip(6, 32, (1, 0)), points, checkpoint)
    assert calls["checkpoint"] == str(checkpoint) and calls["video"] == (1, 6, 3, 32, 32)
    np.testing.assert_array_equal(calls["queries"].numpy(), [[[0, 4, 5], [0, 20, 28]]])
    assert tracks.positions.shape == (2, 6, 2)
    np.testing.assert_allclose(tracks.positions[0, -1], [14, 10])
    # the second point's y is 28 + t: it leaves the 32-pixel frame at frame 4 and stays invalid
    np.testing.assert_array_equal(tracks.valid, [[True] * 6, [True] * 4 + [False] * 2])
