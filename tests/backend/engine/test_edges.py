"""The shared Sobel gradient: scale, direction and edge padding."""

import numpy as np

from motionclone.backend.engine.edges import SOBEL_WEIGHT, sobel_magnitude


def test_a_unit_step_gives_half_a_grey_level_per_pixel_on_the_two_columns_beside_it():
    step = np.zeros((2, 6, 6), dtype=np.uint8)  # a batch of two images, the right half one level brighter
    step[..., 3:] = 1
    per_pixel = sobel_magnitude(step) / SOBEL_WEIGHT
    np.testing.assert_allclose(per_pixel[:, :, 2:4], 0.5)  # rows 0 and 5 too: the padding repeats the edge rows
    assert not per_pixel[:, :, [0, 1, 4, 5]].any()


def test_the_gradient_is_the_same_in_both_directions():
    step = np.zeros((6, 6), dtype=np.float32)
    step[3:] = 10
    np.testing.assert_array_equal(sobel_magnitude(step), sobel_magnitude(step.T).T)
