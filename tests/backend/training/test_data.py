"""Tests for motionclone.backend.training.data: the procedural "blocks" clips, their captions and data set files."""

import colorsys
import itertools
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from motionclone.backend.training.data import (
    BACKGROUNDS,
    CAMERA_MOTIONS,
    CAPTION_VOCABULARY,
    COLOURS,
    EXCLUDED_COLOURS,
    MOTIONS,
    SUBJECTS,
    ClipSpec,
    caption_for,
    caption_words,
    clip_at,
    generate_clips,
    load_dataset,
    render_clip,
    sample_clip_spec,
    spec_from_json,
    spec_to_json,
    write_dataset,
)

SIZE, FRAMES = 64, 8  # small clips keep the suite fast; the generator is resolution independent


def make_spec(**fields: object) -> ClipSpec:
    """A valid spec (a ball on grass, static camera) with some fields replaced."""
    base = ClipSpec("ball", "red", "grass", "line", "static", 1.0, 1.0, (0.3, 0.8), 0.25, 0.5, 7)
    return replace(base, **fields)


def sampled_specs(count: int, seed: int = 11) -> list[ClipSpec]:
    return [sample_clip_spec(np.random.default_rng([seed, i])) for i in range(count)]


def assert_clips_equal(a, b) -> None:
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.centres, b.centres)
    assert a.caption == b.caption
    assert a.spec == b.spec


# --- determinism and shapes -----------------------------------------------------------------------------------------


def test_same_seed_gives_identical_clips_and_another_seed_different_ones() -> None:
    first = list(generate_clips(3, 3, SIZE, FRAMES))
    again = list(generate_clips(3, 3, SIZE, FRAMES))
    other = list(generate_clips(4, 3, SIZE, FRAMES))
    for a, b in zip(first, again, strict=True):
        assert_clips_equal(a, b)
    assert all(not np.array_equal(a.frames, c.frames) for a, c in zip(first, other, strict=True))


def test_clip_depends_only_on_seed_and_index() -> None:
    short = list(generate_clips(5, 2, SIZE, FRAMES))
    long = list(generate_clips(5, 4, SIZE, FRAMES))
    assert_clips_equal(short[1], long[1])
    assert_clips_equal(long[3], clip_at(5, 3, SIZE, FRAMES))
    assert not np.array_equal(long[0].frames, long[1].frames)


@pytest.mark.parametrize(("size", "frames"), [(64, 8), (128, 16), (40, 1)])
def test_shapes_and_dtypes(size: int, frames: int) -> None:
    clip = clip_at(0, 0, size, frames)
    assert clip.frames.shape == (frames, size, size, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (frames, size, size) and clip.masks.dtype == np.bool_
    assert clip.centres.shape == (frames, 2) and clip.centres.dtype == np.float32
    assert isinstance(clip.caption, str) and isinstance(clip.spec, ClipSpec)


def test_positions_are_resolution_independent() -> None:
    spec = make_spec(motion="arc", camera="zoom_in")
    small, large = render_clip(spec, 64, FRAMES), render_clip(spec, 128, FRAMES)
    np.testing.assert_allclose(small.centres * 2, large.centres, atol=0.01)
    ratio = large.masks.sum(axis=(1, 2)) / small.masks.sum(axis=(1, 2))
    assert np.all((ratio > 3.5) & (ratio < 4.5))


def test_unknown_vocabulary_is_rejected() -> None:
    with pytest.raises(ValueError, match="subject"):
        render_clip(make_spec(subject="dragon"))
    with pytest.raises(ValueError, match="colour"):
        render_clip(make_spec(colour="teal"))


def test_spec_json_round_trip() -> None:
    for spec in sampled_specs(20):
        assert spec_from_json(spec_to_json(spec)) == spec


# --- sampling ---------------------------------------------------------------------------------------------------------


def test_sampled_specs_use_the_vocabulary_and_mix_camera_motion() -> None:
    specs = sampled_specs(400)
    for spec in specs:
        assert spec.subject in SUBJECTS and spec.colour in COLOURS and spec.background in BACKGROUNDS
        assert spec.motion in MOTIONS and spec.camera in CAMERA_MOTIONS
        assert spec.motion != "walk" or spec.subject == "figure"
        assert spec.direction in (-1.0, 1.0)
    moving = [s for s in specs if s.camera != "static"]
    assert 0.25 < len(moving) / len(specs) < 0.45
    assert 0.3 < sum(s.motion == "still" for s in moving) / len(moving) < 0.7
    assert {s.motion for s in specs} == set(MOTIONS)


def test_subject_is_visible_in_every_frame_of_sampled_clips() -> None:
    for clip in generate_clips(21, 24, SIZE, FRAMES):
        areas = clip.masks.sum(axis=(1, 2))
        assert areas.min() >= 12, (clip.spec, areas)
        assert (clip.centres >= 0).all() and (clip.centres <= SIZE).all()


# --- captions ---------------------------------------------------------------------------------------------------------


def test_every_caption_is_short_and_uses_only_vocabulary_words() -> None:
    vocabulary = set(CAPTION_VOCABULARY)
    assert caption_words() == sorted(vocabulary) and len(caption_words()) == len(CAPTION_VOCABULARY)
    combos = itertools.product(SUBJECTS, COLOURS, BACKGROUNDS, MOTIONS, CAMERA_MOTIONS, (-1.0, 1.0), (0, 1, 2))
    for subject, colour, background, motion, camera, direction, seed in combos:
        spec = make_spec(
            subject=subject, colour=colour, background=background, motion=motion, camera=camera, direction=direction
        )
        caption = caption_for(replace(spec, seed=seed))
        assert len(caption) < 70, caption
        assert set(caption.split()) <= vocabulary, caption


def test_caption_names_subject_colour_background_motion_and_camera() -> None:
    for spec in sampled_specs(300):
        words = caption_for(spec).split()
        assert spec.subject in words and spec.colour in words
        assert any(spec.background in word for word in words)  # "grass" or "grassy", "snow" or "snowy", ...
        if spec.motion in ("line", "arc", "zigzag", "bounce", "walk"):
            assert ("right" if spec.direction > 0 else "left") in words
        if spec.motion == "depth":
            assert ("closer" if spec.direction > 0 else "away") in words
        if spec.camera == "static":
            assert "camera" not in words
        else:
            kind, way = spec.camera.split("_")  # pan_left -> "camera pans left"
            assert f"camera {kind}s {way}" in caption_for(spec), caption_for(spec)


def test_caption_examples() -> None:
    spec = make_spec(subject="figure", colour="grey", background="blockout", motion="walk", seed=0)
    assert caption_for(spec) == "a grey figure walking right in a grey blockout room"
    spec = make_spec(subject="cube", colour="blue", background="snow", motion="still", camera="pan_left", seed=0)
    assert caption_for(spec) == "a blue cube resting in the snow as the camera pans left"
    spec = make_spec(colour="orange", motion="depth", background="water", seed=0)
    assert caption_for(spec) == "an orange ball rolling closer on the water"


# --- pixels -----------------------------------------------------------------------------------------------------------


def _hsv(rgb: np.ndarray) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, dtype=np.float64) / 255.0))


@pytest.mark.parametrize("colour", list(COLOURS))
def test_subject_pixels_have_the_named_colour(colour: str) -> None:
    backgrounds = [b for b in BACKGROUNDS if colour not in EXCLUDED_COLOURS[b]]  # pairs the sampler can draw
    for index, subject in enumerate(SUBJECTS):
        spec = make_spec(subject=subject, colour=colour, background=backgrounds[index % len(backgrounds)], seed=index)
        clip = render_clip(spec, SIZE, 4)
        mean = clip.frames[clip.masks].mean(axis=0)
        hue, saturation, value = _hsv(mean)
        named_hue, named_saturation, named_value = _hsv(COLOURS[colour])
        if named_saturation > 0.3:
            distance = min(abs(hue - named_hue), 1 - abs(hue - named_hue))
            assert distance < 0.04, (subject, colour, hue, named_hue)
            assert saturation > 0.6 * named_saturation, (subject, colour, saturation)
        else:
            # Chroma, not saturation: the saturation of a near-black colour swings with tiny channel differences.
            assert mean.max() - mean.min() < 20, (subject, colour, mean)
            assert abs(value - named_value) < 0.25, (subject, colour, value, named_value)


def test_moving_subjects_move_and_still_subjects_stay() -> None:
    for motion, subjects in [
        ("line", SUBJECTS),
        ("arc", SUBJECTS),
        ("zigzag", ("cube", "car")),
        ("bounce", ("ball", "cube")),
        ("walk", ("figure",)),
    ]:
        for subject in subjects:
            clip = render_clip(make_spec(subject=subject, motion=motion, speed=0.7), SIZE, FRAMES)
            travel = np.linalg.norm(clip.centres - clip.centres[0], axis=1).max()
            assert travel > 0.15 * SIZE, (motion, subject, travel)
    for subject in SUBJECTS:
        clip = render_clip(make_spec(subject=subject, motion="still"), SIZE, FRAMES)
        np.testing.assert_array_equal(clip.centres, np.repeat(clip.centres[:1], FRAMES, axis=0))
        assert (clip.masks == clip.masks[0]).all()
        assert (clip.frames == clip.frames[0]).all()


def test_subjects_move_the_way_their_caption_says() -> None:
    # The drawn subject (its mask), not the path it was drawn from: a sign flipped in drawing or path shows here.
    pairs = [("line", "car"), ("arc", "ball"), ("zigzag", "cube"), ("bounce", "ball"), ("walk", "figure")]
    for motion, subject in pairs:
        for direction in (1.0, -1.0):
            spec = make_spec(subject=subject, motion=motion, direction=direction, start=(0.5, 0.7), speed=0.5)
            masks = render_clip(spec, SIZE, FRAMES).masks
            first, last = (np.nonzero(mask)[1].mean() for mask in (masks[0], masks[-1]))
            assert np.sign(last - first) == direction, (motion, caption_for(spec), first, last)


def test_depth_motion_changes_the_subject_size() -> None:
    closer = render_clip(make_spec(motion="depth", direction=1.0, start=(0.5, 0.7), scale=0.18), SIZE, FRAMES)
    away = render_clip(make_spec(motion="depth", direction=-1.0, start=(0.5, 0.8), scale=0.3), SIZE, FRAMES)
    assert closer.masks[-1].sum() > 2.0 * closer.masks[0].sum()
    assert away.masks[-1].sum() < 0.5 * away.masks[0].sum()


def test_ball_centre_matches_its_mask() -> None:
    clip = render_clip(make_spec(motion="arc"), 128, FRAMES)
    for mask, centre in zip(clip.masks, clip.centres, strict=True):
        ys, xs = np.nonzero(mask)
        np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], centre, atol=0.6)


def _best_shift(a: np.ndarray, b: np.ndarray, valid: np.ndarray, axis: int, limit: int = 40) -> int:
    """The shift s (pixels, along axis) that best maps image a onto b: b[i + s] ~ a[i] where both are valid."""
    errors = {}
    for shift in range(-limit, limit + 1):
        moved, moved_valid = np.roll(a, shift, axis=axis), np.roll(valid, shift, axis=axis)
        keep = moved_valid & valid
        if axis == 1:
            keep[:, : max(shift, 0)] = keep[:, a.shape[1] + min(shift, 0) :] = False
        else:
            keep[: max(shift, 0)] = keep[a.shape[0] + min(shift, 0) :] = False
        errors[shift] = np.abs(moved - b)[keep].mean()
    return min(errors, key=errors.get)


@pytest.mark.parametrize(("camera", "axis", "sign"), [("pan_left", 1, 1), ("pan_right", 1, -1), ("tilt_up", 0, 1)])
def test_camera_motion_shifts_the_background(camera: str, axis: int, sign: int) -> None:
    for background in ("grass", "blockout", "night"):
        spec = make_spec(motion="still", camera=camera, background=background, start=(0.5, 0.8), scale=0.15)
        clip = render_clip(spec, SIZE, 4)
        first, last = clip.frames[0].astype(np.float32), clip.frames[-1].astype(np.float32)
        valid = ~(clip.masks[0] | clip.masks[-1])
        shift = _best_shift(first.mean(axis=2), last.mean(axis=2), valid, axis)
        # Panning left reveals what is left of the view: the scene slides right (a positive shift along x).
        assert shift * sign >= 0.1 * SIZE, (camera, background, shift)


def test_zoom_scales_a_still_subject() -> None:
    zoom_in = render_clip(make_spec(motion="still", camera="zoom_in", start=(0.5, 0.7)), SIZE, FRAMES)
    zoom_out = render_clip(make_spec(motion="still", camera="zoom_out", start=(0.5, 0.7)), SIZE, FRAMES)
    assert zoom_in.masks[-1].sum() > 1.5 * zoom_in.masks[0].sum()
    assert zoom_out.masks[-1].sum() < 0.7 * zoom_out.masks[0].sum()


def test_render_speed_sanity() -> None:
    # Not a benchmark: the target is well under 50 ms per 128x128x16 clip; this only catches a gross slowdown
    # (20x the target), so it stays reliable on a loaded machine.
    begin = time.perf_counter()
    for _ in generate_clips(9, 5):
        pass
    assert (time.perf_counter() - begin) / 5 < 1.0


# --- data set files ---------------------------------------------------------------------------------------------------


def test_write_and_load_round_trip_is_identical_for_any_worker_count(tmp_path: Path) -> None:
    one = write_dataset(tmp_path / "one.npz", seed=2, count=5, size=32, frames=4, workers=1, progress=False)
    two = write_dataset(tmp_path / "two.npz", seed=2, count=5, size=32, frames=4, workers=2, progress=False)
    assert one.read_bytes() == two.read_bytes()

    data = load_dataset(two)
    assert data["frames"].shape == (5, 4, 32, 32, 3) and data["frames"].dtype == np.uint8
    assert data["masks"].shape == (5, 4, 32, 32) and data["masks"].dtype == np.bool_
    assert data["captions"].shape == (5,) and data["specs"].shape == (5,)
    for index, clip in enumerate(generate_clips(2, 5, 32, 4)):
        np.testing.assert_array_equal(data["frames"][index], clip.frames)
        np.testing.assert_array_equal(data["masks"][index], clip.masks)
        np.testing.assert_array_equal(data["centres"][index], clip.centres)
        assert data["captions"][index] == clip.caption
        assert spec_from_json(str(data["specs"][index])) == clip.spec

    mapped = load_dataset(two, mmap=True)
    assert isinstance(mapped["frames"], np.memmap)
    np.testing.assert_array_equal(mapped["frames"], data["frames"])
    np.testing.assert_array_equal(mapped["masks"], data["masks"])
    with np.load(two) as plain:  # an ordinary .npz as well
        np.testing.assert_array_equal(plain["frames"], data["frames"])


def test_parallel_write_works_from_a_script_read_on_stdin(tmp_path: Path) -> None:
    # A spawn pool cannot re-import a __main__ read from stdin and restarts its dying workers forever; this must finish.
    script = (
        "from motionclone.backend.training.data import write_dataset\n"
        f"write_dataset({str(tmp_path / 'stdin.npz')!r}, 1, 4, size=16, frames=2, workers=2, progress=False)\n"
    )
    subprocess.run([sys.executable, "-"], input=script, text=True, check=True, timeout=120)
    assert load_dataset(tmp_path / "stdin.npz")["frames"].shape == (4, 2, 16, 16, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["stdin.npz"]  # no scratch files left behind
