"""Tests for motionclone.backend.video_io: reading, sampling, resizing and writing frames."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from motionclone.backend.errors import ParameterError, VideoInputError, VideoInputWarning
from motionclone.backend.video_io import (
    RESIZE_MODES,
    Clip,
    collected_video_warnings,
    prepare_reference,
    read_clip,
    resize_frames,
    sample_frame_indices,
    write_mp4,
    write_png_sequence,
)

NUM, HEIGHT, WIDTH = 20, 48, 64


def moving_square(num: int = NUM, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A white 16x16 square moving right over a dark background: every frame differs from the others."""
    frames = np.full((num, height, width, 3), 30, dtype=np.uint8)
    for i in range(num):
        frames[i, 12:28, 2 * i : 2 * i + 16] = 255
    return frames


def smooth_pattern(num: int = NUM, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Smooth colour gradients shifting over time: easy for H.264, but not flat, so errors would show."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = np.empty((num, height, width, 3), dtype=np.uint8)
    for i in range(num):
        frames[i, ..., 0] = 40 + 170 * x / (width - 1)
        frames[i, ..., 1] = 40 + 170 * y / (height - 1)
        frames[i, ..., 2] = 60 + 6 * i
    return frames


def save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def encode(
    frames: np.ndarray, path: Path, fps: int = 24, *, sar: str = "1", codec: str = "png", more: tuple[str, ...] = ()
) -> Path:
    """Encode frames (losslessly with PNG), with the pixel aspect ratio `sar` written in the stream and `more` ffmpeg
    options (a second input, say) before the output file."""
    height, width = frames.shape[1:3]
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "-"]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", *raw, *more, "-vf", f"setsar={sar}"]
    subprocess.run([*command, "-c:v", codec, str(path)], input=frames.tobytes(), check=True, capture_output=True)
    return path


def ffmpeg(*arguments: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", *arguments], check=True, capture_output=True)


# ----------------------------------------------------------------------------------------------------------------------
# Frame sampling


def test_sampling_matches_official_linspace_rule_for_100_to_16() -> None:
    indices = sample_frame_indices(100, 16)
    # Independent of np.linspace: floor(i * (total - 1) / (num - 1)).
    expected = [int(i * 99 / 15) for i in range(16)]
    assert indices.tolist() == expected
    assert [indices[k] for k in (0, 1, 2, 3, 4, 15)] == [0, 6, 13, 19, 26, 99]


def test_interval_rule_matches_the_old_inversion_code() -> None:
    # Official video_preprocess: interval = len // L; list(range(0, len, interval))[:L].
    for total, num in ((100, 16), (16, 16), (47, 16), (33, 8)):
        expected = list(range(0, total, total // num))[:num]
        assert sample_frame_indices(total, num, "interval").tolist() == expected
    assert sample_frame_indices(100, 16, "interval")[-1] == 90  # the tail is left out, unlike linspace's 99


def test_unknown_sampling_rule_names_the_field() -> None:
    with pytest.raises(ParameterError, match="frame_sampling"):
        sample_frame_indices(100, 16, "random")


def test_sampling_is_identity_when_clip_length_equals_frame_count() -> None:
    assert sample_frame_indices(16, 16).tolist() == list(range(16))


def test_sampling_refuses_a_too_short_clip_with_both_numbers() -> None:
    with pytest.raises(VideoInputError) as info:
        sample_frame_indices(10, 16)
    message = str(info.value)
    assert "10 frames" in message and "16" in message
    assert "longer clip" in message


def test_sampling_rejects_a_non_positive_frame_count() -> None:
    with pytest.raises(ParameterError, match="num_frames"):
        sample_frame_indices(10, 0)


# ----------------------------------------------------------------------------------------------------------------------
# mp4


def test_mp4_round_trip_keeps_count_size_fps_and_content(tmp_path: Path) -> None:
    frames = smooth_pattern()
    out = write_mp4(frames, tmp_path / "nested" / "clip.mp4", fps=12.0)
    assert out == tmp_path / "nested" / "clip.mp4"
    assert out.is_file()
    # Atomic write: no temp file left beside the result.
    assert [p.name for p in out.parent.iterdir()] == ["clip.mp4"]

    clip = read_clip(out)
    assert clip.frames.shape == frames.shape
    assert clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(12.0)
    error = np.abs(clip.frames.astype(np.int16) - frames.astype(np.int16)).mean()
    assert error < 8


def test_a_gif_gives_each_of_its_frames_once_at_its_own_rate(tmp_path: Path) -> None:
    # ffmpeg's default constant-rate output doubles every frame of a 70 ms GIF (20 frames, each twice).
    images = [Image.fromarray(np.full((32, 32, 3), 20 * i, dtype=np.uint8)) for i in range(10)]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=70, loop=0)
    with collected_video_warnings() as messages:
        clip = read_clip(tmp_path / "clip.gif")
    assert messages == []  # ffmpeg decodes every GIF to bgra: no alpha warning for an opaque one
    assert clip.frames.shape == (10, 32, 32, 3)
    np.testing.assert_allclose(clip.frames[:, 0, 0, 0], 20 * np.arange(10), atol=2)
    assert clip.fps == pytest.approx(1 / 0.07, abs=0.01)


def test_mp4_keeps_a_size_that_is_not_a_multiple_of_16(tmp_path: Path) -> None:
    # imageio's default macro_block_size=16 would silently resize 40x24 to 48x32.
    frames = moving_square(num=8, height=24, width=40)
    clip = read_clip(write_mp4(frames, tmp_path / "small.mp4"))
    assert clip.frames.shape == (8, 24, 40, 3)
    assert clip.fps == pytest.approx(8.0)


def test_mp4_refuses_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"`frames`.*64x47.*even"):
        write_mp4(moving_square()[:, :47], tmp_path / "odd.mp4")
    assert not any(tmp_path.iterdir())


def test_read_clip_fps_argument_overrides_video_metadata(tmp_path: Path) -> None:
    path = write_mp4(moving_square(num=4), tmp_path / "clip.mp4", fps=8.0)
    assert read_clip(path, fps=24.0).fps == 24.0


# ----------------------------------------------------------------------------------------------------------------------
# PNG sequences and folders


def test_png_round_trip_is_exact_and_numbered_from_0001(tmp_path: Path) -> None:
    frames = moving_square(num=12)
    paths = write_png_sequence(frames, tmp_path / "seq")
    assert [p.name for p in paths] == [f"{i:04d}.png" for i in range(1, 13)]
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == [p.name for p in paths]  # no temp files left

    clip = read_clip(tmp_path / "seq", fps=24.0)
    assert np.array_equal(clip.frames, frames)
    assert clip.fps == 24.0


def test_png_sequence_honours_start_and_digits(tmp_path: Path) -> None:
    paths = write_png_sequence(moving_square(num=2), tmp_path, start=7, digits=6)
    assert [p.name for p in paths] == ["000007.png", "000008.png"]


def test_png_sequence_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = moving_square(num=3)
    write_png_sequence(first, tmp_path)
    second = 255 - first
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_png_sequence(second, tmp_path)
    assert np.array_equal(read_clip(tmp_path).frames, first)  # the refused call changed nothing

    write_png_sequence(second, tmp_path, overwrite=True)
    assert np.array_equal(read_clip(tmp_path).frames, second)


def test_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    # Lexical order would be frame1, frame10, frame2; each frame's grey level says which file it came from.
    for number in (10, 2, 1):
        save_png(tmp_path / f"frame{number}.png", np.full((8, 8, 3), number * 10, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(VideoInputWarning, match=r"miss 7 numbers \(3-9\)"):
        clip = read_clip(tmp_path)
    assert clip.frames[:, 0, 0, 0].tolist() == [10, 20, 100]
    assert clip.fps == 8.0


def test_grayscale_and_rgba_image_files_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, the colour is kept
    Image.fromarray(gray, mode="L").save(tmp_path / "0001.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "0002.png")
    with pytest.warns(VideoInputWarning, match="transparent pixels"):
        frames = read_clip(tmp_path).frames
    assert frames.shape == (2, 8, 8, 3)
    assert np.array_equal(frames[0], np.repeat(gray[..., None], 3, axis=-1))
    assert np.array_equal(frames[1], rgba[..., :3])


def test_sixteen_bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "0001.png")
    assert read_clip(tmp_path).frames.min() == 255


def test_a_float_tiff_is_scaled_from_0_1_not_read_as_black(tmp_path: Path) -> None:
    gray = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(gray, mode="F").save(tmp_path / "0001.tif")
    frames = read_clip(tmp_path / "0001.tif").frames
    assert frames[0, ..., 0].tolist() == [[0, 64], [128, 255]]
    assert np.array_equal(frames[..., 0], frames[..., 2])


def test_a_float_tiff_outside_0_1_is_refused_with_its_range(tmp_path: Path) -> None:
    Image.fromarray(np.full((2, 2), 4.0, dtype=np.float32), mode="F").save(tmp_path / "hdr.tif")
    with pytest.raises(VideoInputError, match=r"hdr.tif is a float image \(Pillow mode F\) with values from 4 to 4"):
        read_clip(tmp_path / "hdr.tif")


def test_an_image_mode_without_a_faithful_rgb_conversion_is_refused(tmp_path: Path) -> None:
    Image.new("LAB", (2, 2)).save(tmp_path / "lab.tif")
    with pytest.raises(VideoInputError, match=r"lab.tif is in Pillow mode LAB, which cannot be converted"):
        read_clip(tmp_path / "lab.tif")


def test_transparent_frames_warn_once_that_alpha_is_dropped_and_keep_the_stored_colour(tmp_path: Path) -> None:
    rgba = np.zeros((3, 8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:, :4, :, 3] = 0  # a Blender render with Film > Transparent stores black under its transparent background
    for i, frame in enumerate(rgba):
        Image.fromarray(frame, mode="RGBA").save(tmp_path / f"{i:04d}.png")
    with collected_video_warnings() as messages:
        frames = read_clip(tmp_path).frames
    assert np.array_equal(frames, rgba[..., :3])
    assert len(messages) == 1
    assert "transparent pixels: the alpha channel is dropped" in messages[0]
    assert "Film > Transparent" in messages[0]


def test_an_opaque_alpha_channel_gives_no_warning(tmp_path: Path) -> None:
    for i in range(2):
        Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(tmp_path / f"{i:04d}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_clip(tmp_path)


def test_a_video_with_an_alpha_channel_warns_that_it_is_dropped(tmp_path: Path) -> None:
    video = tmp_path / "alpha.mov"
    ffmpeg("-f", "lavfi", "-i", "color=c=red@0.5:s=16x16:d=0.25,format=rgba", "-c:v", "png", str(video))
    with pytest.warns(VideoInputWarning, match=r"alpha.mov has an alpha channel \(rgba.*Film > Transparent"):
        read_clip(video)


# ----------------------------------------------------------------------------------------------------------------------
# numpy input


def test_float_array_is_scaled_and_rounded() -> None:
    frames = np.zeros((2, 4, 4, 3), dtype=np.float32)
    frames[0] = 1.0
    frames[1] = 0.5  # 127.5 rounds to 128 (half to even), truncation would give 127
    clip = read_clip(frames)
    assert clip.frames.dtype == np.uint8
    assert clip.frames[0].min() == 255
    assert np.all(clip.frames[1] == 128)
    assert clip.fps == 8.0


def test_grayscale_array_becomes_rgb() -> None:
    gray = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    frames = read_clip(gray).frames
    assert frames.shape == (2, 4, 5, 3)
    for channel in range(3):
        assert np.array_equal(frames[..., channel], gray)


def test_rgba_array_drops_alpha() -> None:
    rgba = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5, 4), dtype=np.uint8)
    frames = read_clip(rgba).frames
    assert frames.shape == (3, 4, 5, 3)
    assert np.array_equal(frames, rgba[..., :3])


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((2, 4, 4, 3), dtype=np.int64), "dtype int64"),
        (np.zeros((4, 4), dtype=np.uint8), "shape (4, 4)"),
        (np.zeros((2, 4, 4, 2), dtype=np.uint8), "shape (2, 4, 4, 2)"),
        (np.zeros((0, 4, 4, 3), dtype=np.uint8), "no pixels"),
        (np.full((1, 2, 2, 3), 255.0), "[0, 1]"),
        (np.full((1, 2, 2, 3), np.nan), "NaN"),
    ],
)
def test_bad_arrays_raise_video_input_error(array: np.ndarray, fragment: str) -> None:
    with pytest.raises(VideoInputError) as info:
        read_clip(array)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------------------------------------------------
# Bad paths


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoInputError, match="does not exist") as info:
        read_clip(missing)
    assert str(missing) in str(info.value)


def test_corrupt_video_names_the_path(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoInputError, match="could not be read as a video or an image") as info:
        read_clip(fake)
    assert str(fake) in str(info.value)


def test_an_unreadable_condition_image_is_not_called_a_video(tmp_path: Path) -> None:
    """--condition files are read with read_clip too: an image format that is not in IMAGE_EXTENSIONS goes to ffmpeg."""
    broken = tmp_path / "pose.exr"
    broken.write_bytes(b"not an image\n" * 20)
    with pytest.raises(VideoInputError) as info:
        read_clip(broken)
    assert str(info.value).startswith(f"{broken} could not be read as a video or an image")


def test_an_empty_file_and_a_file_without_video_say_so(tmp_path: Path) -> None:
    import subprocess

    import imageio_ffmpeg

    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoInputError, match=r"empty.mp4 is an empty file \(0 bytes\)"):
        read_clip(empty)
    audio = tmp_path / "audio.mp4"
    sine = ["-f", "lavfi", "-i", "sine=frequency=440:duration=0.3"]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", *sine, str(audio)], check=True, capture_output=True)
    with pytest.raises(VideoInputError, match=r"audio.mp4 holds no video stream"):
        read_clip(audio)


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([*range(1, 5), *range(6, 11), *range(20, 29)], r"miss 10 numbers \(0005, 0011-0019\)"),
        ([2, 4, 8, 10], r"numbered every 2 miss 1 number \(0006\)"),
        ([1, 3, 5, 7, 9, 11, 13, 14], r"miss 6 numbers \(0002, 0004, 0006 and 3 more runs\)"),
    ],
)
def test_a_sequence_with_missing_numbers_is_read_with_a_warning_naming_them(
    tmp_path: Path, numbers: list[int], message: str
) -> None:
    for number in numbers:
        save_png(tmp_path / f"shot2_{number:04d}.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.warns(VideoInputWarning, match=message):
        assert read_clip(tmp_path).frames.shape[0] == len(numbers)


@pytest.mark.parametrize("numbers", [range(1, 6), range(2, 12, 2), range(0, 50, 10)])
def test_a_sequence_with_a_constant_step_gives_no_gap_warning(tmp_path: Path, numbers: range) -> None:
    for number in numbers:
        save_png(tmp_path / f"render_v2_{number:04d}.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_reference(tmp_path, 2, 4, 4)


def test_a_one_frame_clip_is_refused_with_what_motion_needs(tmp_path: Path) -> None:
    save_png(tmp_path / "0001.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(VideoInputError, match="has 1 frame; motion needs at least 2: use a clip"):
        prepare_reference(tmp_path, 8, 8, 8)


def test_a_folder_holding_two_image_sequences_is_refused(tmp_path: Path) -> None:
    """Render passes side by side (beauty_0001.png, depth_0001.png) would otherwise interleave."""
    for index in range(1, 4):
        for prefix in ("beauty_", "depth_"):
            save_png(tmp_path / f"{prefix}{index:04d}.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(VideoInputError, match=r"holds 2 image sequences \(beauty_…, depth_…\): move one"):
        read_clip(tmp_path)
    for path in tmp_path.glob("depth_*"):
        path.unlink()
    assert read_clip(tmp_path).frames.shape[0] == 3  # one sequence is read as it is


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_beauty.png", "0001_depth.png", "0002_beauty.png", "0002_depth.png"], r"2 image sequences"),
        (["0001.png", "0001.jpg", "0002.png", "0002.jpg"], r"2 image sequences \(….jpg, ….png\)"),
        (["frame_0001.png", "frame_0002.png", "thumbnail.png"], r"frame_….png and other images \(thumbnail.png\)"),
    ],
)
def test_a_folder_whose_frames_would_mix_with_other_images_is_refused(tmp_path: Path, names, message) -> None:
    """Numbers first, two formats of one sequence, or a stray picture: each would interleave with the frames."""
    for name in names:
        save_png(tmp_path / name, np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(VideoInputError, match=message):
        read_clip(tmp_path)


def test_corrupt_image_in_folder_names_the_file(tmp_path: Path) -> None:
    save_png(tmp_path / "0001.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "0002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(VideoInputError) as info:
        read_clip(tmp_path)
    assert "0002.png" in str(info.value)


def test_empty_folder_and_folder_without_images(tmp_path: Path) -> None:
    with pytest.raises(VideoInputError, match="no image files") as info:
        read_clip(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(VideoInputError, match="no image files"):
        read_clip(tmp_path)


def test_folder_with_mismatched_sizes_names_the_first_odd_file(tmp_path: Path) -> None:
    save_png(tmp_path / "0001.png", np.zeros((8, 8, 3), dtype=np.uint8))
    save_png(tmp_path / "0002.png", np.zeros((8, 8, 3), dtype=np.uint8))
    save_png(tmp_path / "0003.png", np.zeros((8, 6, 3), dtype=np.uint8))
    save_png(tmp_path / "0004.png", np.zeros((5, 8, 3), dtype=np.uint8))
    with pytest.raises(VideoInputError) as info:
        read_clip(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "0003.png") in message and "6x8" in message and "8x8" in message
    assert "0004.png" not in message


# ----------------------------------------------------------------------------------------------------------------------
# Resizing


def test_squash_shape_and_dtype() -> None:
    out = resize_frames(moving_square(num=3), 40, 72, "squash")
    assert out.shape == (3, 40, 72, 3)
    assert out.dtype == np.uint8


def test_squash_matches_official_uint8_interpolate() -> None:
    frames = np.random.default_rng(1).integers(0, 256, size=(3, HEIGHT, WIDTH, 3), dtype=np.uint8)
    # The official video_preprocess: uint8 (F, H, W, C) -> (F, C, H, W) -> bilinear, align_corners=True.
    tensor = torch.from_numpy(frames.copy()).permute(0, 3, 1, 2)
    official = F.interpolate(tensor, size=(40, 72), mode="bilinear", align_corners=True)
    expected = official.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(resize_frames(frames, 40, 72), expected)


def split_frame(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """One frame: green 8-pixel stripes at both sides, red middle-left, blue middle-right."""
    frame = np.zeros((1, height, width, 3), dtype=np.uint8)
    frame[:, :, : width // 2] = (255, 0, 0)
    frame[:, :, width // 2 :] = (0, 0, 255)
    frame[:, :, :8] = (0, 255, 0)
    frame[:, :, -8:] = (0, 255, 0)
    return frame


def is_black(pixels: np.ndarray) -> np.ndarray:
    return np.all(pixels == 0, axis=-1)


@pytest.mark.parametrize("size", [64, 32])
def test_pad_keeps_aspect_with_black_bars_top_and_bottom(size: int) -> None:
    out = resize_frames(split_frame(), size, size, "pad")[0]
    assert out.shape == (size, size, 3)
    content_rows = size * HEIGHT // WIDTH  # 64x48 fits a square as size x (3/4 size)
    bar = (size - content_rows) // 2
    assert is_black(out[:bar]).all() and is_black(out[bar + content_rows :]).all()
    assert not is_black(out[bar : bar + content_rows]).any()
    # Nothing is cut off: both green side stripes survive.
    assert (out[size // 2, 0] == (0, 255, 0)).all() and (out[size // 2, -1] == (0, 255, 0)).all()


def test_pad_puts_bars_left_and_right_for_a_tall_source() -> None:
    tall = np.full((1, 64, 32, 3), 200, dtype=np.uint8)
    out = resize_frames(tall, 32, 32, "pad")[0]
    assert is_black(out[:, :8]).all() and is_black(out[:, 24:]).all()
    assert (out[:, 8:24] == 200).all()


@pytest.mark.parametrize("size", [48, 32])
def test_crop_keeps_aspect_and_trims_the_sides_without_black(size: int) -> None:
    out = resize_frames(split_frame(), size, size, "crop")[0]
    assert out.shape == (size, size, 3)
    assert not is_black(out).any()
    # A 64x48 frame cropped to a square loses 8 columns each side: exactly the green stripes.
    assert not np.any(np.all(out == (0, 255, 0), axis=-1))
    assert (out[:, 0] == (255, 0, 0)).all() and (out[:, -1] == (0, 0, 255)).all()
    # Squash, by contrast, keeps the stripes: the crop test would notice a crop that squashes.
    assert np.any(np.all(resize_frames(split_frame(), size, size, "squash")[0] == (0, 255, 0), axis=-1))


def anamorphic_split_frame() -> np.ndarray:
    """split_frame stored at half its width, as a video with pixels twice as wide as high stores it."""
    return split_frame()[:, :, ::2].copy()


def test_crop_and_pad_keep_the_shape_a_video_with_wide_pixels_shows() -> None:
    # Shown 64 x 48 (its pixels twice as wide as high), stored 32 x 48: a square crop cuts the sides, not the top.
    cropped = resize_frames(anamorphic_split_frame(), 48, 48, "crop", pixel_aspect=2.0)[0]
    assert not np.any(np.all(cropped == (0, 255, 0), axis=-1))
    assert (cropped[:, 0] == (255, 0, 0)).all() and (cropped[:, -1] == (0, 0, 255)).all()
    padded = resize_frames(anamorphic_split_frame(), 64, 64, "pad", pixel_aspect=2.0)[0]
    assert is_black(padded[:8]).all() and is_black(padded[-8:]).all() and not is_black(padded[8:-8]).any()
    # Read as square pixels the same frame is tall: the crop would keep the green stripes, the pad put bars aside.
    assert np.any(np.all(resize_frames(anamorphic_split_frame(), 48, 48, "crop")[0] == (0, 255, 0), axis=-1))
    assert is_black(resize_frames(anamorphic_split_frame(), 64, 64, "pad")[0][:, :8]).all()


def test_a_bad_pixel_aspect_names_the_parameter() -> None:
    with pytest.raises(ParameterError) as info:
        resize_frames(split_frame(), 32, 32, "crop", pixel_aspect=0.0)
    assert info.value.name == "pixel_aspect"


def test_the_pixel_aspect_is_the_one_ffmpeg_shows_the_frames_with(tmp_path: Path) -> None:
    frames = moving_square(num=4, height=48, width=48)
    assert read_clip(encode(frames, tmp_path / "wide.webm", sar="2/1", codec="libvpx-vp9")).pixel_aspect == 2.0
    # The container's aspect overrides the stream's: a 48 x 48 clip shown at 16:9.
    ffmpeg("-i", str(encode(frames, tmp_path / "square.mkv")), "-c", "copy", "-aspect", "16:9", str(tmp_path / "a.mkv"))
    assert read_clip(tmp_path / "a.mkv").pixel_aspect == pytest.approx(16 / 9)
    # A clip turned upright by ffmpeg turns its pixels too, even when its stored frame is square.
    wide = encode(frames, tmp_path / "wide.mp4", sar="2/1", codec="libx264")
    ffmpeg("-display_rotation", "90", "-i", str(wide), "-c", "copy", str(tmp_path / "rotated.mp4"))
    assert read_clip(tmp_path / "rotated.mp4").pixel_aspect == 0.5


def test_a_video_with_wide_pixels_is_cropped_as_it_is_shown(tmp_path: Path) -> None:
    frames = np.repeat(anamorphic_split_frame(), 4, axis=0)
    path = encode(frames, tmp_path / "anamorphic.mkv", sar="2/1")
    assert read_clip(path).pixel_aspect == 2.0
    assert read_clip(encode(frames, tmp_path / "square.mkv")).pixel_aspect == 1.0
    clip = prepare_reference(path, 4, 48, 48, resize_mode="crop")
    assert clip.pixel_aspect == 2.0
    assert np.array_equal(clip.frames, resize_frames(frames, 48, 48, "crop", pixel_aspect=2.0))
    # Squash fills the frame from the stored pixels whatever their shape, as the official code does.
    squashed = prepare_reference(path, 4, 48, 48)
    assert np.array_equal(squashed.frames, resize_frames(frames, 48, 48))


def cut_in_half(path: Path) -> Path:
    half = path.with_name(f"half-{path.name}")
    data = path.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    return half


def test_a_video_cut_short_is_read_with_a_warning_that_names_it(tmp_path: Path) -> None:
    whole = encode(smooth_pattern(num=32), tmp_path / "clip.mkv", fps=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoInputWarning)  # the whole clip reads without one
        assert read_clip(whole).frames.shape[0] == 32
    half = cut_in_half(whole)
    with pytest.warns(VideoInputWarning, match=r"decoded to \d+ frames, but its streams end after 1\.\d+ s of the 2 s"):
        clip = read_clip(half)
    assert 2 <= clip.frames.shape[0] < 32 * 0.8
    with pytest.warns(VideoInputWarning, match="may be cut short") as caught:
        prepare_reference(half, 2, 16, 16)
    ours = [str(warning.message) for warning in caught if warning.category is VideoInputWarning]
    assert len(ours) == 1 and str(half) in ours[0]  # once, though the video is decoded twice


def test_no_cut_short_warning_for_an_audio_track_longer_than_the_video_or_an_idle_screen_recording(
    tmp_path: Path,
) -> None:
    long_audio = ("-f", "lavfi", "-i", "sine=duration=6", "-map", "0:v", "-map", "1:a")
    music = encode(smooth_pattern(num=16), tmp_path / "music.mkv", fps=16, more=long_audio)
    # Busy for a second, then one frame a second for five: the Matroska header's 16 fps is nominal, not the average.
    screen = tmp_path / "screen.mkv"
    idle = ["-vf", "select='lt(t,1)+not(mod(n,16))'", "-fps_mode", "vfr", "-c:v", "png", str(screen)]
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=16:duration=6", *idle)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoInputWarning)
        assert read_clip(music).frames.shape[0] == 16
        assert read_clip(screen).frames.shape[0] == 21


def test_collected_video_warnings_keeps_each_message_once_and_passes_others_on(tmp_path: Path) -> None:
    half = cut_in_half(encode(smooth_pattern(num=32), tmp_path / "clip.mkv", fps=16))
    with pytest.warns(DeprecationWarning, match="not ours"), collected_video_warnings() as messages:
        read_clip(half)
        read_clip(half)
        warnings.warn("not ours", DeprecationWarning, stacklevel=1)
    assert len(messages) == 1 and "may be cut short" in messages[0]


def test_unknown_resize_mode_names_the_parameter_and_lists_modes() -> None:
    with pytest.raises(ParameterError) as info:
        resize_frames(moving_square(num=1), 32, 32, "stretch")
    message = str(info.value)
    assert info.value.name == "resize_mode"
    assert "`resize_mode`" in message and "stretch" in message
    assert all(mode in message for mode in RESIZE_MODES)


def checkerboard(size: int) -> np.ndarray:
    """One frame of one-pixel black and white squares, (1, size, size, 3)."""
    cells = (np.indices((size, size)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return np.repeat(cells[None, :, :, None], 3, axis=3)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_image_sampling_averages_what_it_shrinks_and_video_sampling_picks_pixels(mode: str) -> None:
    # The official code shrinks condition images with PIL's antialiased bilinear filter (through torchvision's
    # Resize) and reference videos with align_corners bilinear on uint8: fine detail turns an even grey in one and
    # a pattern of light and dark in the other.
    board = checkerboard(64)
    image = resize_frames(board, 32, 32, mode, sampling="image")
    video = resize_frames(board, 32, 32, mode, sampling="video")
    assert image.shape == video.shape == (1, 32, 32, 3)
    assert np.abs(image.astype(int) - 128).max() <= 8 and image.std() < 2
    assert video.std() > 30  # each output pixel mixes only the few source pixels nearest its sample point


def test_unknown_sampling_names_the_parameter() -> None:
    with pytest.raises(ParameterError) as info:
        resize_frames(checkerboard(8), 4, 4, sampling="nearest")
    assert info.value.name == "sampling" and "video, image" in str(info.value)


@pytest.mark.parametrize(("height", "width", "name"), [(0, 32, "height"), (32, -8, "width")])
def test_non_positive_sizes_name_the_parameter(height: int, width: int, name: str) -> None:
    with pytest.raises(ParameterError) as info:
        resize_frames(moving_square(num=1), height, width)
    assert info.value.name == name


# ----------------------------------------------------------------------------------------------------------------------
# prepare_reference


def test_prepare_reference_from_video_samples_and_resizes(tmp_path: Path) -> None:
    frames = moving_square(num=24)
    path = write_mp4(frames, tmp_path / "ref.mp4", fps=10.0)
    clip = prepare_reference(path, num_frames=16, height=32, width=40)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (16, 32, 40, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(10.0)
    # The square's position (its brightest column) follows the sampled frames, not the first 16.
    expected = resize_frames(frames[sample_frame_indices(24, 16)], 32, 40)
    assert np.abs(clip.frames.astype(np.int16) - expected.astype(np.int16)).mean() < 8
    truncated = resize_frames(frames[:16], 32, 40)
    assert np.abs(clip.frames[-1].astype(np.int16) - truncated[-1].astype(np.int16)).mean() > 8


def test_prepare_reference_from_folder_loads_the_sampled_files(tmp_path: Path) -> None:
    frames = moving_square(num=24)
    write_png_sequence(frames, tmp_path)
    clip = prepare_reference(tmp_path, 16, HEIGHT, WIDTH, resize_mode="pad")
    assert np.array_equal(clip.frames, frames[sample_frame_indices(24, 16)])


def test_prepare_reference_follows_the_sampling_rule(tmp_path: Path) -> None:
    frames = moving_square(num=40)
    write_png_sequence(frames, tmp_path)
    clip = prepare_reference(tmp_path, 16, HEIGHT, WIDTH, resize_mode="pad", frame_sampling="interval")
    assert np.array_equal(clip.frames, frames[np.arange(16) * 2])
    with pytest.raises(ParameterError, match="frame_sampling"):
        prepare_reference(tmp_path, 16, HEIGHT, WIDTH, frame_sampling="every")


def test_prepare_reference_from_array_with_crop() -> None:
    clip = prepare_reference(moving_square(num=20), 16, 32, 32, resize_mode="crop")
    assert clip.frames.shape == (16, 32, 32, 3)


def test_prepare_reference_too_short_names_source_and_counts(tmp_path: Path) -> None:
    path = write_mp4(moving_square(num=6), tmp_path / "short.mp4")
    with pytest.raises(VideoInputError) as info:
        prepare_reference(path, 16, 32, 32)
    message = str(info.value)
    assert str(path) in message and "6 frames" in message and "16" in message
