"""A minimal 8-bit RGB PNG writer on the standard library (zlib, struct) and numpy. No bpy, no PIL, no torch.

Blender's Python has no PIL, and saving through ``bpy.data.images`` would add datablocks to the user's file, so the
add-on writes result frames itself. Layout (PNG specification, ISO/IEC 15948): the 8-byte signature, then chunks of
``length (4 bytes, big-endian) | type (4) | data | CRC-32 of type + data (4)``: IHDR (width, height, bit depth 8,
colour type 2 = RGB, compression 0, filter 0, interlace 0), one IDAT holding the zlib stream of all rows, each row
prefixed with filter type 0 (None), and an empty IEND.
"""

import os
import secrets
import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZLIB_LEVEL = 6  # zlib's default: a good size/speed balance for rendered frames


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as an 8-bit PNG, atomically.

    The file is written to a temporary file in the same folder and renamed into place, so ``path`` never holds a
    partial PNG, even after a crash.

    Args:
        path (`str | Path`): the PNG file to create or replace; its folder must exist.
        rgb (`np.ndarray`): uint8 array of shape (height, width, 3), top row first.

    Raises:
        ValueError: ``rgb`` is not a non-empty uint8 (height, width, 3) array.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"`rgb` must be a uint8 array of shape (height, width, 3), got {got}.")
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"`rgb` must have at least one pixel, got shape {rgb.shape}.")
    data = encode_png(rgb)
    path = Path(path)
    # Mode "x" with a random name rather than mkstemp: mkstemp's 0600 permissions would stick to the result.
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp_path, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the data must be on disk before the rename makes it visible
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def encode_png(rgb: np.ndarray) -> bytes:
    """The PNG file bytes for a uint8 (height, width, 3) array (not validated; see `write_png`)."""
    height, width = rgb.shape[:2]
    # Every row starts with its filter-type byte, 0 (None).
    rows = np.zeros((height, 1 + width * 3), dtype=np.uint8)
    rows[:, 1:] = rgb.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), ZLIB_LEVEL)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(chunk_type: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", crc)
