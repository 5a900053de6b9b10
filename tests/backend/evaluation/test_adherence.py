"""Subject colour and class adherence on synthetic blocks-like clips."""

import numpy as np
import pytest

from motionclone.backend.errors import ParameterError
from motionclone.backend.evaluation.adherence import (
    class_adherence,
    colour_adherence,
    find_subject,
    name_colour,
    override_warnings,
    parse_prompt,
)

from .synthetic import subject_clip

RED = (210, 30, 30)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red ball bouncing on grass under a blue sky", ("red", "ball")),
        ("Two gray cars drive along a road", ("grey", "car")),
        ("a figure walking on a white beach", (None, "figure")),
        ("a blue sky", ("blue", None)),
        ("a dog running", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_prompt_takes_the_subject_and_its_own_colour(prompt, expected):
    assert parse_prompt(prompt) == expected


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((230, 30, 30), "red"),
        ((120, 20, 20), "red"),  # a shaded red
        ((250, 150, 30), "orange"),
        ((240, 225, 40), "yellow"),
        ((40, 150, 50), "green"),
        ((30, 60, 220), "blue"),
        ((20, 30, 90), "blue"),  # a shaded blue
        ((130, 50, 180), "purple"),
        ((250, 150, 200), "pink"),
        ((245, 245, 245), "white"),
        ((128, 128, 128), "grey"),
        ((15, 15, 20), "black"),
    ],
)
def test_colour_names(rgb, name):
    assert name_colour(rgb) == name


def test_the_moving_region_is_found_in_every_frame_with_its_colour():
    frames = subject_clip("disc", RED)
    regions = find_subject(frames)
    assert all(region is not None for region in regions)
    for t, region in enumerate(regions):
        x, y, w, h = region.bbox
        assert abs(x - (4 + 5 * t)) <= 1 and abs(y - (16 + 3 * t)) <= 1 and abs(w - 24) <= 1 and abs(h - 24) <= 1
        np.testing.assert_allclose(region.mean_rgb, RED, atol=4)


def test_red_disc_adheres_to_a_red_ball_prompt_and_not_to_a_blue_one():
    frames = subject_clip("disc", RED)
    red = colour_adherence(frames, "a red ball bouncing on grass under a blue sky")
    assert red["status"] == "measured" and red["expected"] == "red" and red["value"] >= 0.9
    blue = colour_adherence(frames, "a blue ball bouncing on grass under a blue sky")
    assert blue["expected"] == "blue" and blue["value"] <= 0.1
    assert class_adherence(frames, "a red ball bouncing")["value"] >= 0.9
    assert class_adherence(frames, "a red car driving")["value"] <= 0.1


@pytest.mark.parametrize(
    ("shape", "box", "subject"),
    [("disc", (24, 24), "ball"), ("rect", (24, 24), "cube"), ("rect", (40, 16), "car"), ("rect", (14, 36), "figure")],
)
def test_shape_classes(shape, box, subject):
    frames = subject_clip(shape, (40, 80, 210), box=box)
    scores = class_adherence(frames, f"a blue {subject}")
    assert scores["value"] >= 0.9, scores["per_frame"]
    others = [name for name in ("ball", "cube", "car", "figure") if name != subject]
    assert all(class_adherence(frames, subject=other)["value"] <= 0.1 for other in others)


def test_overrides_win_over_the_prompt_and_are_checked():
    frames = subject_clip("rect", RED, box=(40, 16))
    scores = colour_adherence(frames, "a blue car", colour="red")
    assert scores["expected"] == "red" and scores["expected_from"] == "--subject-colour" and scores["value"] >= 0.9
    with pytest.raises(ParameterError, match="`subject_colour`"):
        colour_adherence(frames, "a red car", colour="mauve")
    with pytest.raises(ParameterError, match="`subject_class`"):
        class_adherence(frames, "a red car", subject="boat")


def test_prompts_without_known_words_are_not_measured():
    frames = subject_clip("disc", RED)
    colour = colour_adherence(frames, "a dog running in a park")
    subject = class_adherence(frames, "a dog running in a park")
    for entry in (colour, subject):
        assert entry["value"] is None and entry["status"] == "not measured" and entry["reason"]
    assert "colour" in colour["reason"] and "subject" in subject["reason"]


def test_without_a_prompt_the_reason_says_so():
    frames = subject_clip("disc", RED)
    for entry in (colour_adherence(frames, None), class_adherence(frames, None)):
        assert entry["status"] == "not measured" and entry["reason"].startswith("no prompt given (--prompt)")


def test_an_override_that_contradicts_the_prompt_is_warned_about():
    assert override_warnings("a red ball on the grass", "blue", None) == [
        "--subject-colour blue differs from the prompt's red: blue is scored"
    ]
    assert override_warnings("a red ball on the grass", None, "cube") == [
        "--subject-class cube differs from the prompt's ball: cube is scored"
    ]
    assert override_warnings("a grey car", "Gray", "cars") == []  # the same words, spelt otherwise
    assert override_warnings(None, "blue", "ball") == []  # nothing to contradict


def test_frames_without_a_moving_subject_count_as_misses():
    frames = np.repeat(subject_clip("disc", RED)[:1], 8, axis=0)  # nothing moves
    scores = colour_adherence(frames, "a red ball")
    assert scores["frames_with_subject"] == 0 and scores["value"] == 0.0


def test_given_regions_come_with_the_settings_of_their_finder():
    frames = subject_clip("disc", RED)
    with pytest.raises(ParameterError, match="`region_settings`"):
        colour_adherence(frames, "a red ball", regions=find_subject(frames))
    with pytest.raises(ParameterError, match="`regions`"):
        class_adherence(frames, "a red ball", region_settings={"subject_region": "network"})
    given = colour_adherence(frames, "a red ball", None, find_subject(frames), {"subject_region": "given"})
    assert given["settings"]["subject_region"] == "given" and given["value"] >= 0.9
    assert colour_adherence(frames, "a red ball")["settings"]["subject_region"] == "moving"
