"""Fixtures for the add-on tests: real Blender as a Python module (bpy), a fresh empty scene per test. No torch.

Also holds `decode_png`, an independent PNG reader (zlib + struct, all five row filters) used to check what Blender
and our writer put in files without going through Blender's image loading.
"""

import gc
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import bpy
import numpy as np
import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # `blender_addon` is imported from the repository, not installed

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS_BY_COLOR_TYPE = {0: 1, 2: 3, 4: 2, 6: 4}


@pytest.fixture(autouse=True)
def free_python_garbage_between_tests() -> Iterator[None]:
    """Free each test's garbage cycles on the main thread, before the next test resets Blender's data: freed later,
    by the Python collector running in the protocol client's thread during a render, they can crash Blender."""
    gc.collect()
    yield
    gc.collect()


@pytest.fixture
def scene() -> Iterator[bpy.types.Scene]:
    """An empty factory-settings scene: each test builds what it needs in code.

    Not autouse, so other test modules here keep their own setup; ours use it with ``pytestmark``.
    """
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene


def read_png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk; asserts the signature, the lengths and every CRC."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunk_type = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(chunk_type + body) & 0xFFFFFFFF == crc, f"bad CRC in {chunk_type!r}"
        chunks.append((chunk_type, body))
        position += 12 + length
    assert position == len(data)
    return chunks


def _unfilter_row(filter_type: int, line: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
    row = np.zeros_like(line)
    for x in range(len(line)):
        a = int(row[x - bpp]) if x >= bpp else 0
        b = int(previous[x])
        c = int(previous[x - bpp]) if x >= bpp else 0
        if filter_type == 0:
            predictor = 0
        elif filter_type == 1:
            predictor = a
        elif filter_type == 2:
            predictor = b
        elif filter_type == 3:
            predictor = (a + b) // 2
        else:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        row[x] = (int(line[x]) + predictor) & 0xFF
    return row


def decode_png_file(path: Path) -> np.ndarray:
    """An 8-bit, non-interlaced PNG as uint8 (height, width, channels), top row first."""
    chunks = read_png_chunks(path)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0
    channels = CHANNELS_BY_COLOR_TYPE[color_type]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * channels
    assert len(raw) == height * (stride + 1)
    rows, previous = [], np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        start = y * (stride + 1)
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1)
        previous = _unfilter_row(raw[start], line, previous, channels)
        rows.append(previous)
    return np.stack(rows).reshape(height, width, channels)


@pytest.fixture
def decode_png() -> Callable[[Path], np.ndarray]:
    return decode_png_file
