"""Subject placement: the reference subject's path, the subject's place in the attention, and the moved noise."""

import itertools

import cv2
import numpy as np
import torch

from motionclone.backend.engine.subject_placement import (
    SetMotion,
    SubjectPlacement,
    candidate_words,
    locate_subject,
    measure_set_motion,
    most_concentrated_token,
    reference_subject_path,
)
from motionclone.backend.samples import make_moving_square_clip


def test_reference_path_follows_the_moving_square_on_the_latent_grid():
    frames = make_moving_square_clip(num_frames=8, height=64, width=64)  # 16 px square, left edge 0 → 48
    path = reference_subject_path(frames, 32, 32)
    assert len(path) == 8
    assert {row for row, _ in path} == {16}  # rows 24-39 px: centre at 32 px, 16 cells from the top
    columns = [column for _, column in path]
    assert columns[0] == 4 and columns[-1] == 28  # centres at 8 px and 56 px
    assert all(later >= earlier for earlier, later in itertools.pairwise(columns))


def test_a_still_reference_has_no_path():
    still = np.repeat(make_moving_square_clip(num_frames=1, height=64, width=64), 8, axis=0)
    assert reference_subject_path(still, 32, 32) is None


def test_apply_moves_the_subject_patch_along_the_path_and_keeps_every_value_from_the_shared_draw():
    shared = torch.randn(1, 4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    path = [(4, 4), (4, 6), (5, 9)]
    placement = SubjectPlacement("ball", source=(10, 10), side=4, path=path)
    frames = placement.apply(shared)
    assert frames.shape == (1, 4, 3, 16, 16)
    original = shared[:, :, 0]
    subject = original[..., 8:12, 8:12]  # the patch centred at (10, 10)
    for index, (row, column) in enumerate(path):
        assert torch.equal(frames[:, :, index, row - 2 : row + 2, column - 2 : column + 2], subject)
    # The subject's old place holds the noise of the place it went to first, so no second subject forms there.
    assert torch.equal(frames[:, :, 2, 8:12, 8:12], original[..., 2:6, 2:6])
    # Far from both, the noise is untouched; and no value is made up.
    assert torch.equal(frames[:, :, :, 13:, :3], original[:, :, None, 13:, :3].expand(-1, -1, 3, -1, -1))
    assert set(frames.flatten().tolist()) <= set(original.flatten().tolist())


def test_a_patch_near_the_edge_wraps_instead_of_inventing_values():
    shared = torch.randn(1, 1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    frames = SubjectPlacement("car", source=(0, 0), side=4, path=[(7, 7)]).apply(shared)
    assert set(frames.flatten().tolist()) <= set(shared.flatten().tolist())
    # The patch centred at (0, 0) spans rows and columns -2..1, that is 6, 7, 0, 1 around the edge; centred at (7, 7)
    # its first three rows and columns fit.
    wrapped = torch.tensor([6, 7, 0])
    assert torch.equal(frames[0, 0, 0, 5:, 5:], shared[0, 0, 0][wrapped[:, None], wrapped[None, :]])


def test_locate_subject_finds_the_blob_and_its_size_on_the_finer_grid():
    maps = torch.full((3, 8, 8), 0.01)
    maps[:, 2:4, 5:7] = 1.0  # a 2x2-cell blob on the 8x8 grid = 8x8 cells of a 32x32 latent
    centre, side = locate_subject(maps, 32, 32)
    assert centre == (12, 24)  # rows 8-15, columns 20-27 of the latent grid: the cell right of and below the middle
    assert side == 8


def test_most_concentrated_token_prefers_the_word_that_names_one_place():
    maps = torch.full((2, 64, 4), 1.0)
    maps[:, :5, 2] = 40.0  # token 2 looks at a few positions; the others everywhere alike
    maps[:, :, 3] = torch.linspace(0.5, 1.5, 64)
    assert most_concentrated_token(maps, [1, 2, 3]) == 2


def test_candidate_words_leave_out_repeats_and_words_that_name_no_thing():
    assert candidate_words("A red car parked in a field as the camera pans, a car!") == [
        "red",
        "car",
        "parked",
        "field",
        "camera",
        "pans",
    ]
    assert candidate_words("in the") == ["in", "the"]  # nothing else to choose from


def _texture(size: int) -> np.ndarray:
    noise = np.random.default_rng(3).integers(0, 256, (size, size, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.2)


def test_a_pan_over_a_textured_set_is_a_camera_move():
    texture = _texture(64)
    pan = np.stack([np.roll(texture, 2 * index, axis=1) for index in range(8)])
    motion = measure_set_motion(pan)
    assert motion.moving_share > 0.8 and motion.spread > 0.9
    assert motion.is_camera_move


def test_one_subject_moving_is_no_camera_move_over_a_textured_or_a_flat_set():
    over_flat = make_moving_square_clip(num_frames=8, height=64, width=64)  # its only texture is the square's edges
    flat = measure_set_motion(over_flat)
    assert flat.moving_share > 0.5 and flat.spread < 0.4
    over_texture = np.repeat(_texture(64)[None], 8, axis=0)
    for index, frame in enumerate(over_texture):
        frame[24:40, 6 * index : 6 * index + 16] = (235, 200, 90)
    textured = measure_set_motion(over_texture)
    assert textured.moving_share < 0.3
    assert not flat.is_camera_move and not textured.is_camera_move


def test_a_still_clip_has_no_set_motion():
    still = np.repeat(_texture(64)[None], 8, axis=0)
    assert measure_set_motion(still) == SetMotion(moving_share=0.0, spread=0.0)
    assert measure_set_motion(still[:1]) == SetMotion(moving_share=0.0, spread=0.0)  # no frame pair at all
