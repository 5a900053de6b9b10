"""blender_addon.png and blender_addon.result_files: exact PNGs, new folders only, nothing half-written. No torch."""

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import bpy
import numpy as np
import pytest

from blender_addon import png, result_files
from tests.blender_addon.conftest import read_png_chunks

pytestmark = pytest.mark.usefixtures("scene")


def random_frames(count: int, height: int = 7, width: int = 13, seed: int = 0) -> np.ndarray:
    # Odd sizes catch row-stride mistakes; random values catch channel or byte-order mix-ups.
    return np.random.default_rng(seed).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


def read_with_blender(path: Path) -> np.ndarray:
    """What Blender itself loads from a PNG, as uint8 (height, width, 3), top row first."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        values = np.empty(width * height * image.channels, dtype=np.float32)
        image.pixels.foreach_get(values)
        channels = image.channels
    finally:
        bpy.data.images.remove(image)
    return np.round(values.reshape(height, width, channels)[::-1, :, :3] * 255).astype(np.uint8)


# ---- png -----------------------------------------------------------------------------------------------------------
def test_write_png_round_trips_exactly_through_blender(tmp_path: Path) -> None:
    rgb = random_frames(1)[0]
    path = tmp_path / "image.png"

    png.write_png(path, rgb)

    np.testing.assert_array_equal(read_with_blender(path), rgb)


def test_write_png_chunks_follow_the_specification(tmp_path: Path, decode_png: Callable[[Path], np.ndarray]) -> None:
    rgb = random_frames(1)[0]
    path = tmp_path / "image.png"

    png.write_png(path, rgb)

    chunks = read_png_chunks(path)  # checks the signature and every CRC
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (13, 7, 8, 2, 0, 0, 0)
    assert chunks[2][1] == b""
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), dtype=np.uint8).reshape(7, 1 + 13 * 3)
    assert not raw[:, 0].any()  # filter type 0 on every row
    np.testing.assert_array_equal(raw[:, 1:].reshape(7, 13, 3), rgb)
    np.testing.assert_array_equal(decode_png(path), rgb)


def test_write_png_replaces_a_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(b"old")

    png.write_png(path, random_frames(1)[0])

    assert [entry.name for entry in tmp_path.iterdir()] == ["image.png"]
    assert path.read_bytes().startswith(png.PNG_SIGNATURE)


def test_write_png_failing_at_the_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(b"old")

    def failing_replace(source: Path, target: Path) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(png.os, "replace", failing_replace)

    with pytest.raises(OSError, match="rename failed"):
        png.write_png(path, random_frames(1)[0])
    assert [entry.name for entry in tmp_path.iterdir()] == ["image.png"]
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((4, 4, 4), dtype=np.uint8),
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
    ],
)
def test_write_png_rejects_anything_but_uint8_rgb(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="`rgb`"):
        png.write_png(tmp_path / "bad.png", bad)
    assert list(tmp_path.iterdir()) == []


# ---- write_result_frames -------------------------------------------------------------------------------------------
def test_write_result_frames_writes_numbered_pngs_in_a_new_folder(
    tmp_path: Path, decode_png: Callable[[Path], np.ndarray]
) -> None:
    frames = random_frames(3)

    folder = result_files.write_result_frames(tmp_path / "results", "a-cat-42", frames)

    assert folder == tmp_path / "results" / "a-cat-42"
    assert sorted(path.name for path in folder.iterdir()) == ["0001.png", "0002.png", "0003.png"]
    for k in range(3):
        np.testing.assert_array_equal(decode_png(folder / f"{k + 1:04d}.png"), frames[k])
    assert [entry.name for entry in folder.parent.iterdir()] == ["a-cat-42"]  # no temporary folder left


def test_write_result_frames_never_reuses_an_existing_folder(
    tmp_path: Path, decode_png: Callable[[Path], np.ndarray]
) -> None:
    (tmp_path / "shot").mkdir()
    (tmp_path / "shot" / "keep.txt").write_text("mine")
    (tmp_path / "shot-2").mkdir()  # an empty folder is not reused either

    third = result_files.write_result_frames(tmp_path, "shot", random_frames(1, seed=1))
    fourth = result_files.write_result_frames(tmp_path, "shot", random_frames(2, seed=2))

    assert (third.name, fourth.name) == ("shot-3", "shot-4")
    assert [entry.name for entry in (tmp_path / "shot").iterdir()] == ["keep.txt"]
    assert list((tmp_path / "shot-2").iterdir()) == []
    np.testing.assert_array_equal(decode_png(fourth / "0002.png"), random_frames(2, seed=2)[1])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["shot", "shot-2", "shot-3", "shot-4"]


def test_a_failure_mid_write_leaves_no_result_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_write_png(path: Path, rgb: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        png.write_png(path, rgb)

    monkeypatch.setattr(result_files, "write_png", failing_write_png)

    with pytest.raises(OSError, match="disk full"):
        result_files.write_result_frames(tmp_path, "shot", random_frames(3))
    assert list(tmp_path.iterdir()) == []


def test_write_result_frames_rejects_paths_as_names_and_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`base_name`"):
        result_files.write_result_frames(tmp_path, "../escape", random_frames(1))
    with pytest.raises(ValueError, match="`frames`"):
        result_files.write_result_frames(tmp_path, "shot", random_frames(1)[0])
    assert list(tmp_path.iterdir()) == []


def test_safe_name_makes_a_short_file_system_safe_slug() -> None:
    assert result_files.safe_name("A cat, dancing!! in Zürich") == "a-cat-dancing-in-zurich"
    assert result_files.safe_name("../../etc/passwd") == "etc-passwd"
    assert result_files.safe_name("word " * 20, max_len=12) == "word-word-wo"
    assert result_files.safe_name("abc def", max_len=4) == "abc"  # no trailing dash after the cut
    assert result_files.safe_name("!!!") == "result"
    assert result_files.safe_name("CON") == "_con"
