"""DMT motion fidelity: the formula, both variants, the track selection and the scores of known motions."""

import numpy as np
import pytest

from motionclone.backend.errors import ParameterError
from motionclone.backend.evaluation.motion_fidelity import (
    best_similarities,
    motion_fidelity,
    moving_tracks,
    unit_displacements,
)
from motionclone.backend.evaluation.tracks import Tracks, grid_points, track_points

from .synthetic import moving_square_clip, square_on_plain_clip


def tracks_from(positions):
    positions = np.asarray(positions, dtype=np.float32)
    return Tracks(positions, np.ones(positions.shape[:2], dtype=bool), np.arange(len(positions)))


def line(step, num_frames=5, start=(10.0, 10.0)):
    return [np.add(start, np.multiply(step, k)) for k in range(num_frames)]


def test_best_similarities_equal_the_brute_force_matrix_maxima_in_any_chunking():
    rng = np.random.default_rng(0)
    result = unit_displacements(rng.normal(size=(7, 6, 2)).cumsum(axis=1), still_step_px=0)
    reference = unit_displacements(rng.normal(size=(5, 6, 2)).cumsum(axis=1), still_step_px=0)
    result_grid, reference_grid = np.array([0, 1, 2, 3, 4, 5, 6]), np.array([1, 3, 8, 9, 0])
    brute = np.einsum("nkc,mkc->nmk", result, reference).mean(axis=2)  # the N × M × (T − 1) tensor, then the mean
    released = brute - (result_grid[:, None] == reference_grid[None, :])  # co-located pairs lose 1
    for chunk in (1, 3, 512):
        for_result, for_reference, for_result_released = best_similarities(
            result, reference, (result_grid, reference_grid), chunk_size=chunk
        )
        np.testing.assert_allclose(for_result, brute.max(axis=1), atol=1e-12)
        np.testing.assert_allclose(for_reference, brute.max(axis=0), atol=1e-12)
        np.testing.assert_allclose(for_result_released, released.max(axis=1), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(result, axis=-1), 1.0, atol=1e-5)


def test_unit_displacements_are_zero_for_still_steps_and_finite_for_exactly_still_points():
    positions = np.array([[[0, 0], [0, 0], [0.05, 0], [3.05, 4]]], dtype=np.float64)
    units = unit_displacements(positions, epsilon=1e-6, still_step_px=0.1)
    np.testing.assert_allclose(units[0], [[0, 0], [0, 0], [0.6, 0.8]], atol=1e-6)
    bare = unit_displacements(positions, epsilon=1e-6, still_step_px=0)  # the doc's formula: ε keeps 0/0 finite
    assert np.isfinite(bare).all() and np.allclose(bare[0, 0], 0) and bare[0, 1, 0] > 0.99


def test_symmetric_and_released_variants_on_hand_made_tracks():
    right, up = line((1.0, 0.0)), line((0.0, -1.0))
    reference = tracks_from([right, up])
    result = tracks_from([right, up])
    scores = motion_fidelity(reference, result, (64, 64), region="all")
    assert scores["symmetric"] == pytest.approx(1.0, abs=1e-5)
    # The released code subtracts the identity: each result track must match the *other* reference track,
    # which moves at a right angle, so the score is 0.
    assert scores["released"] == pytest.approx(0.0, abs=1e-5)

    # Asymmetric sets: the result has only the rightward track; the reference's upward track finds no match.
    one = tracks_from([right])
    scores = motion_fidelity(reference, one, (64, 64), region="all")
    assert scores["result_to_reference"] == pytest.approx(1.0, abs=1e-5)
    assert scores["reference_to_result"] == pytest.approx(0.5, abs=1e-5)  # (1 + 0) / 2
    assert scores["symmetric"] == pytest.approx(0.75, abs=1e-5)

    left = tracks_from([line((-1.0, 0.0)), line((-1.0, 0.0), start=(20.0, 20.0))])
    assert motion_fidelity(tracks_from([right, right]), left, (64, 64), region="all")["symmetric"] == pytest.approx(
        -1.0, abs=1e-5
    )


def test_both_clips_are_truncated_to_the_shorter_one():
    reference = tracks_from([line((1.0, 0.0), num_frames=8)])
    result = tracks_from([line((1.0, 0.0), num_frames=5)])
    scores = motion_fidelity(reference, result, (64, 64), region="all")
    assert scores["frames"] == 5 and scores["symmetric"] == pytest.approx(1.0, abs=1e-5)


def test_moving_region_keeps_tracks_that_move_in_most_steps():
    positions = np.array(
        [
            line((2.0, 0.0), num_frames=9),  # moves all the time
            [(10.0, 10.0)] * 9,  # still
            [(10.0 + 0.03 * (k % 2), 10.0) for k in range(9)],  # jitters: long path, goes nowhere
            [(10.0, 10.0)] * 6 + [(12.0, 10.0), (14.0, 10.0), (16.0, 10.0)],  # dragged along for 3 of 8 steps
            [(10.0 + 2 * min(k, 5), 10.0) for k in range(9)],  # moves for 5 of 8 steps, then stops
        ]
    )
    np.testing.assert_array_equal(moving_tracks(positions, excursion_px=1.28), [True, False, False, False, True])


def test_a_clip_against_itself_scores_the_maximum():
    frames = square_on_plain_clip()
    tracks = track_points(frames, grid_points(96, 96, 32))
    scores = motion_fidelity(tracks, tracks, (96, 96))
    assert scores["tracks"]["reference"]["used"] >= 50
    assert scores["symmetric"] == pytest.approx(1.0, abs=1e-3)
    assert scores["released"] == pytest.approx(1.0, abs=1e-3)  # another track on the square moves the same way
    assert scores["warnings"] == []


def test_opposite_motion_scores_low():
    frames = square_on_plain_clip()
    points = grid_points(96, 96, 32)
    forward, backward = track_points(frames, points), track_points(np.ascontiguousarray(frames[::-1]), points)
    scores = motion_fidelity(forward, backward, (96, 96))
    assert scores["symmetric"] < -0.9
    assert scores["released"] < -0.9


def test_textured_background_still_separates_same_and_opposite_motion():
    # On a textured background Lucas-Kanade's window drags background points along while the square passes and
    # loses some at its edges, so the self score is below 1; the ordering must hold by a wide margin.
    frames = moving_square_clip()
    points = grid_points(96, 96, 32)
    forward, backward = track_points(frames, points), track_points(np.ascontiguousarray(frames[::-1]), points)
    same = motion_fidelity(forward, forward, (96, 96))["symmetric"]
    opposite = motion_fidelity(forward, backward, (96, 96))["symmetric"]
    assert same > 0.8 and opposite < 0.0


def test_region_all_keeps_still_tracks_and_they_compress_the_score():
    frames = moving_square_clip()
    tracks = track_points(frames, grid_points(96, 96, 32))
    moving = motion_fidelity(tracks, tracks, (96, 96), region="moving")
    everything = motion_fidelity(tracks, tracks, (96, 96), region="all")
    assert everything["tracks"]["result"]["used"] > 2 * moving["tracks"]["result"]["used"]
    assert everything["symmetric"] < moving["symmetric"] - 0.2


def test_no_moving_tracks_gives_zero_and_says_so():
    still = tracks_from([[(10.0, 10.0)] * 6, [(20.0, 20.0)] * 6])
    scores = motion_fidelity(still, tracks_from([line((1.0, 0.0), num_frames=6)]), (64, 64))
    assert scores["symmetric"] == 0.0 and scores["released"] == 0.0
    assert scores["tracks"]["reference"]["used"] == 0
    assert any("reference has no moving tracks" in warning for warning in scores["warnings"])
    assert any("only 1 of 1 result tracks" in warning for warning in scores["warnings"])


def test_bad_region_is_a_parameter_error():
    tracks = tracks_from([line((1.0, 0.0))])
    with pytest.raises(ParameterError, match="`region`"):
        motion_fidelity(tracks, tracks, (64, 64), region="foreground")


def test_no_usable_tracks_are_told_apart_by_cause():
    moving = tracks_from([line((1.0, 0.0), num_frames=6), line((0.0, 1.0), num_frames=6)])
    lost = tracks_from([line((1.0, 0.0), num_frames=6), line((0.0, 1.0), num_frames=6)])
    lost.valid[:, 3:] = False  # e.g. a flash frame: the tracker loses every point
    scores = motion_fidelity(moving, lost, (64, 64))
    assert scores["symmetric"] == 0.0
    assert scores["tracks"]["result"] == {
        "grid_points": 2, "valid_all_frames": 0, "used": 0, "none_used_because": "no track followed through all frames"
    }  # fmt: skip
    assert scores["tracks"]["reference"]["none_used_because"] is None
    (warning,) = [w for w in scores["warnings"] if "result" in w]
    assert warning.startswith("no result track could be followed through all 6 frames")
    assert "check the result for a cut, a flash frame or noise" in warning

    still = tracks_from([[(10.0, 10.0)] * 6, [(20.0, 20.0)] * 6])
    scores = motion_fidelity(moving, still, (64, 64))
    assert scores["tracks"]["result"]["none_used_because"] == "no track followed through all frames moves"
    assert any(w.startswith("the result has no moving tracks: none of its 2 tracks") for w in scores["warnings"])
    with_all = motion_fidelity(moving, lost, (64, 64), region="all")  # region all: lost tracks are the only cause
    assert with_all["tracks"]["result"]["none_used_because"] == "no track followed through all frames"
