"""Saving a result's frames as a new folder of PNGs, atomically and without overwriting anything. No bpy, no torch.

A result goes to ``output_dir/<base_name>`` (``<base_name>-2``, ``-3`` ... if taken) as ``0001.png``, ``0002.png``
... The frames are written into a hidden temporary sibling folder that is renamed into place at the end, so a
folder under a final name is always complete.
"""

import errno
import os
import re
import secrets
import shutil
import unicodedata
from pathlib import Path

import numpy as np

from .png import write_png

MAX_SUFFIX = 10_000  # stop looking for a free "-N" name somewhere sane
# Names Windows reserves for devices, with or without an extension.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"{port}{n}" for port in ("com", "lpt") for n in range(1, 10)}


def safe_name(text: str, max_len: int = 40) -> str:
    """A file-system-safe slug of a text such as a prompt.

    Accents are stripped to ASCII, everything else that is not a letter or digit becomes a single ``-``, and the
    result is lower case, at most ``max_len`` characters, with no leading or trailing ``-``.

    Args:
        text (`str`): any text.
        max_len (`int`, defaults to 40): the longest slug returned; at least 1.

    Returns:
        `str`: the slug; ``"result"`` when nothing usable is left.

    Raises:
        ValueError: ``max_len`` is below 1.
    """
    if max_len < 1:
        raise ValueError(f"`max_len` must be at least 1, got {max_len}.")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    if not slug:
        return "result"[:max_len]
    if slug in _WINDOWS_RESERVED:
        slug = f"_{slug}"[:max_len]  # "_con" is an ordinary name; cut short it is no reserved name either
    return slug


def write_result_frames(output_dir: str | Path, base_name: str, frames: np.ndarray) -> Path:
    """Write frames as PNGs into a new folder ``output_dir/<base_name>`` and return it.

    If ``<base_name>`` exists, ``<base_name>-2``, ``<base_name>-3`` ... is used: an existing folder is never reused
    or overwritten. The files are ``0001.png``, ``0002.png`` ... in frame order. They are written into a temporary
    sibling folder first, which is renamed into place once complete and removed if anything fails.

    Args:
        output_dir (`str | Path`): where result folders go; created if missing.
        base_name (`str`): the folder name, a single path component (see `safe_name`).
        frames (`np.ndarray`): uint8 array of shape (N, height, width, 3), N >= 1.

    Returns:
        `Path`: the new folder.

    Raises:
        ValueError: ``base_name`` is not a plain folder name, or ``frames`` has the wrong type or shape.
        RuntimeError: no free folder name was found.
    """
    if not base_name or base_name in (".", "..") or Path(base_name).name != base_name or "\\" in base_name:
        raise ValueError(f"`base_name` must be a plain folder name, got {base_name!r}.")
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"`frames` must be a uint8 array of shape (N, height, width, 3), got {got}.")
    if frames.shape[0] == 0:
        raise ValueError("`frames` holds no frames.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # A hidden name that never matches "<base_name>" or "<base_name>-N", made with the user's umask.
    staging = output_dir / f".{base_name}.{secrets.token_hex(6)}.partial"
    staging.mkdir()
    try:
        for index, frame in enumerate(frames, start=1):
            write_png(staging / f"{index:04d}.png", frame)
        return _move_to_free_name(staging, output_dir, base_name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_to_free_name(staging: Path, output_dir: Path, base_name: str) -> Path:
    for number in range(1, MAX_SUFFIX + 1):
        target = output_dir / (base_name if number == 1 else f"{base_name}-{number}")
        if target.exists() or target.is_symlink():
            continue
        try:
            os.rename(staging, target)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            continue  # created by someone else since the check: try the next name
        except OSError as error:
            if error.errno == errno.ENOTEMPTY:  # the same race: a non-empty folder appeared under that name
                continue
            raise
        return target
    raise RuntimeError(f"No free folder name for '{base_name}' in {output_dir} (tried up to -{MAX_SUFFIX}).")
