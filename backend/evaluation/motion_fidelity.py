"""Motion fidelity (MF) of DMT (Yatim et al., CVPR 2024), computed from two sets of point tracks. No bpy.

For a track τ with positions τ[k], its unit displacements are u_k = (τ[k+1] − τ[k]) / (‖τ[k+1] − τ[k]‖ + ε). The
similarity of a result track τ̃ and a reference track τ is the mean over the T − 1 steps of ⟨ũ_k, u_k⟩, so the
similarity matrix is one matrix product of the flattened unit displacements divided by T − 1 (computed in row
chunks, of which only the maxima are kept: never an N × M × (T − 1) tensor, nor the whole N × M matrix).

- symmetric MF (the paper's text, reported as `motion_fidelity`):
  ½ [mean over result tracks of max over reference tracks + mean over reference tracks of max over result tracks].
- released MF (DMT's released code): the first half only, after subtracting 1 from the similarity of every pair
  that started at the same grid point (the identity of the released code's n × n matrix).

Still steps: the doc's ε only guards the division for a point that does not move at all, but a float tracker
reports a still point as jittering by hundredths of a pixel, and d / (‖d‖ + ε) turns that jitter into full-length
unit vectors in random directions. Steps shorter than `still_step_px` (default 0.1 px, below Lucas-Kanade's
precision) therefore count as no motion, u_k = 0, which is what the formula gives a point that truly stands still.
`still_step_px=0` gives the bare formula.

Which tracks take part (`region`):

- "all": every track valid in all T frames.
- "moving" (default): of those, the tracks that move, chosen in each video separately: the track gets further than
  `moving_fraction` of the longer frame side from where it started, and moves (a step of at least `still_step_px`)
  in at least half of its steps. Static background points have u = 0 and a similarity of 0 to anything, so on clips
  with a small moving subject they would pull every score towards 0; so would background points that Lucas-Kanade
  drags along for a few frames while the subject passes (its window mixes both motions).
- "box": every valid track; the grid itself was restricted to a box before tracking (see evaluate.py).

A clip scores 1 against itself only when each track used moves in every step: a still step scores 0 even against
itself. A clip with no track that takes part makes its half of the symmetric MF 0, and so the score: the counts say
why (`none_used_because`): no track followed through all frames (a cut, a flash frame, noise), or none of those
moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ParameterError
from .tracks import Tracks

REGIONS = ("moving", "all", "box")
DEFAULT_REGION = "moving"
DEFAULT_EPSILON = 1e-6  # pixels; only guards the division for points that do not move at all
DEFAULT_MOVING_FRACTION = 0.02  # a moving track gets further than 2 % of the longer frame side from its start
DEFAULT_STILL_STEP = 0.1  # pixels: shorter steps are tracker jitter, u = 0
MIN_MOVING_STEPS = 0.5  # a moving track moves in at least half of its steps
DEFAULT_CHUNK = 512  # result tracks per block of the similarity matrix
MIN_TRACKS = 10  # fewer tracks than this on a side earns a warning in metrics.json
# Why a clip has no track that takes part (metrics.json's tracks.*.none_used_because).
NO_TRACK_FOLLOWED = "no track followed through all frames"
NO_TRACK_MOVES = "no track followed through all frames moves"


def unit_displacements(
    positions: np.ndarray, epsilon: float = DEFAULT_EPSILON, still_step_px: float = DEFAULT_STILL_STEP
) -> np.ndarray:
    """(N, T, 2) positions → (N, T − 1, 2) float64 unit displacements u_k = d_k / (‖d_k‖ + ε); 0 where ‖d_k‖ is
    shorter than `still_step_px`."""
    steps = np.diff(np.asarray(positions, dtype=np.float64), axis=1)
    lengths = np.linalg.norm(steps, axis=-1, keepdims=True)
    units = steps / (lengths + epsilon)
    units[lengths[..., 0] < still_step_px] = 0.0
    return units


def best_similarities(
    result_units: np.ndarray,
    reference_units: np.ndarray,
    same_start: tuple[np.ndarray, np.ndarray],
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The maxima MF needs, block by block, so that memory stays at one block of the N × M similarity matrix.

    Args:
        result_units: (N, S, 2) unit displacements of the result tracks.
        reference_units: (M, S, 2) unit displacements of the reference tracks.
        same_start: (N,) and (M,) grid indices of the tracks; a pair with the same index started at the same point.
        chunk_size: result tracks per block.

    Returns:
        (N,) best reference match of each result track, (M,) best result match of each reference track, and (N,)
        the best match of each result track after subtracting 1 from its co-located pair (the released MF's rule).
    """
    result_grid, reference_grid = same_start
    best_for_result = np.empty(len(result_units))
    best_for_result_released = np.empty(len(result_units))
    best_for_reference = np.full(len(reference_units), -np.inf)
    for start, block in _similarity_blocks(result_units, reference_units, chunk_size):
        rows = slice(start, start + len(block))
        best_for_result[rows] = block.max(axis=1)
        best_for_reference = np.maximum(best_for_reference, block.max(axis=0))
        co_located = result_grid[rows, None] == reference_grid[None, :]
        best_for_result_released[rows] = (block - co_located).max(axis=1)
    return best_for_result, best_for_reference, best_for_result_released


def _similarity_blocks(
    result_units: np.ndarray, reference_units: np.ndarray, chunk_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, block of rows of the similarity matrix), `chunk_size` result tracks at a time."""
    if result_units.shape[1:] != reference_units.shape[1:]:
        raise ParameterError(
            "tracks", f"must cover the same steps: {result_units.shape[1:]} against {reference_units.shape[1:]}"
        )
    steps = max(result_units.shape[1], 1)
    flat_result = result_units.reshape(len(result_units), -1)
    flat_reference = reference_units.reshape(len(reference_units), -1)
    for start in range(0, len(flat_result), max(1, chunk_size)):
        yield start, flat_result[start : start + max(1, chunk_size)] @ flat_reference.T / steps


def moving_tracks(positions: np.ndarray, excursion_px: float, still_step_px: float = DEFAULT_STILL_STEP) -> np.ndarray:
    """(N,) bool: the track gets further than `excursion_px` from its start and moves in at least half its steps."""
    positions = np.asarray(positions, dtype=np.float64)
    excursion = np.linalg.norm(positions - positions[:, :1], axis=-1).max(axis=1)
    step_lengths = np.linalg.norm(np.diff(positions, axis=1), axis=-1)
    moving_steps = (step_lengths >= max(still_step_px, 0.0)) & (step_lengths > 0)
    return (excursion > excursion_px) & (moving_steps.mean(axis=1) >= MIN_MOVING_STEPS)


def select_tracks(
    tracks: Tracks, region: str, excursion_px: float, still_step_px: float = DEFAULT_STILL_STEP
) -> np.ndarray:
    """Indices of the tracks that take part: valid in every frame, and moving when region is "moving"."""
    if region not in REGIONS:
        raise ParameterError("region", f"must be one of {', '.join(REGIONS)}, got {region!r}")
    keep = tracks.fully_valid()
    if region == "moving":
        keep &= moving_tracks(tracks.positions, excursion_px, still_step_px)
    return np.flatnonzero(keep)


def motion_fidelity(
    reference: Tracks,
    result: Tracks,
    frame_size: tuple[int, int],
    region: str = DEFAULT_REGION,
    moving_fraction: float = DEFAULT_MOVING_FRACTION,
    epsilon: float = DEFAULT_EPSILON,
    still_step_px: float = DEFAULT_STILL_STEP,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Both MF variants between two track sets made with the same tracker, grid and frame size.

    Args:
        reference: tracks of the reference clip.
        result: tracks of the result clip (the same grid).
        frame_size: (height, width) of the frames both were tracked on.
        region: "moving", "all" or "box" (see the module docstring).
        moving_fraction: the "moving" excursion threshold as a fraction of the longer frame side.
        epsilon: ε of the unit displacements, in pixels.
        still_step_px: steps shorter than this (pixels) count as no motion; 0 for the bare formula.
        chunk_size: result tracks per block of the similarity matrix.

    Returns:
        {"symmetric": float, "released": float, "frames": T, "tracks": {...}, "region": {...}, "warnings": [...],
        "reference_indices": array, "result_indices": array} where the index arrays select the tracks used.
    """
    check_settings(moving_fraction, epsilon, still_step_px)
    num_frames = min(reference.num_frames, result.num_frames)
    if num_frames < 2:
        raise ParameterError("frames", f"motion fidelity needs at least 2 frames in both clips, got {num_frames}")
    reference, result = reference.truncated(num_frames), result.truncated(num_frames)
    threshold_px = moving_fraction * max(frame_size)
    used_reference = select_tracks(reference, region, threshold_px, still_step_px)
    used_result = select_tracks(result, region, threshold_px, still_step_px)

    warnings = [
        warning
        for side, used, tracks in (("reference", used_reference, reference), ("result", used_result, result))
        if (warning := _track_warning(side, tracks, used, threshold_px)) is not None
    ]

    symmetric = released = 0.0
    result_to_reference = reference_to_result = 0.0
    if len(used_reference) and len(used_result):
        best_for_result, best_for_reference, best_for_result_released = best_similarities(
            unit_displacements(result.positions[used_result], epsilon, still_step_px),
            unit_displacements(reference.positions[used_reference], epsilon, still_step_px),
            (result.grid_index[used_result], reference.grid_index[used_reference]),
            chunk_size,
        )
        result_to_reference = float(best_for_result.mean())
        reference_to_result = float(best_for_reference.mean())
        symmetric = 0.5 * (result_to_reference + reference_to_result)
        released = float(best_for_result_released.mean())

    return {
        "symmetric": symmetric,
        "released": released,
        "result_to_reference": result_to_reference,
        "reference_to_result": reference_to_result,
        "frames": num_frames,
        "epsilon_px": epsilon,
        "still_step_px": still_step_px,
        "region": {
            "mode": region,
            "moving_rule": (
                "valid in every frame, gets further than moving_excursion_px from its start, and moves (a step of "
                "at least still_step_px) in at least half its steps; chosen in each clip separately"
                if region == "moving"
                else "every track valid in every frame"
            ),
            "moving_excursion_px": round(threshold_px, 4) if region == "moving" else None,
            "moving_fraction_of_longer_side": moving_fraction if region == "moving" else None,
            "min_moving_steps": MIN_MOVING_STEPS if region == "moving" else None,
        },
        "tracks": {
            "reference": _counts(reference, used_reference),
            "result": _counts(result, used_result),
        },
        "warnings": warnings,
        "reference_indices": used_reference,
        "result_indices": used_result,
    }


def check_settings(
    moving_fraction: float = DEFAULT_MOVING_FRACTION,
    epsilon: float = DEFAULT_EPSILON,
    still_step_px: float = DEFAULT_STILL_STEP,
) -> None:
    """Refuse settings out of range; cheap, so callers run it before decoding any video."""
    if not (isinstance(moving_fraction, int | float) and 0 <= moving_fraction < 1):
        raise ParameterError("moving_fraction", f"must be a number in [0, 1), got {moving_fraction!r}")
    if not (isinstance(still_step_px, int | float) and 0 <= still_step_px < 10):
        raise ParameterError("still_step_px", f"must be a number of pixels in [0, 10), got {still_step_px!r}")
    if not (isinstance(epsilon, int | float) and 0 < epsilon < 1):
        raise ParameterError("epsilon", f"must be a positive number of pixels below 1, got {epsilon!r}")


def none_used_cause(tracks: Tracks, used: np.ndarray) -> str | None:
    """Why no track of a clip takes part (NO_TRACK_FOLLOWED or NO_TRACK_MOVES); None when some do."""
    if len(used):
        return None
    return NO_TRACK_MOVES if tracks.fully_valid().any() else NO_TRACK_FOLLOWED


def _track_warning(side: str, tracks: Tracks, used: np.ndarray, threshold_px: float) -> str | None:
    """What to say about a clip whose tracks are missing or few, by cause: a clip the tracker cannot follow (a flash
    frame, noise) is another problem than one that stands still."""
    cause = none_used_cause(tracks, used)
    if cause == NO_TRACK_FOLLOWED:
        return (
            f"no {side} track could be followed through all {tracks.num_frames} frames (the tracker lost each of the "
            f"{len(tracks.grid_index)} grid points at some frame): the {side}'s half of the symmetric MF is 0 and the "
            f"score is 0; check the {side} for a cut, a flash frame or noise"
        )
    if cause == NO_TRACK_MOVES:
        valid = int(tracks.fully_valid().sum())
        return (
            f"the {side} has no moving tracks: none of its {valid} tracks followed through all frames gets further "
            f"than {threshold_px:.2f} px from its start while moving in half its steps; the {side}'s half of the "
            "symmetric MF is 0 and the score is 0"
        )
    if len(used) < MIN_TRACKS:
        return (
            f"only {len(used)} of {len(tracks.grid_index)} {side} tracks take part (fewer than {MIN_TRACKS}): "
            "the score rests on very few points"
        )
    return None


def _counts(tracks: Tracks, used: np.ndarray) -> dict[str, Any]:
    return {
        "grid_points": len(tracks.grid_index),
        "valid_all_frames": int(tracks.fully_valid().sum()),
        "used": len(used),
        "none_used_because": none_used_cause(tracks, used),
    }
