"""Files written whole or not at all: written under a hidden temporary name next to the target, then renamed into
place. No bpy, no torch."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path

TEMPORARY_SUFFIX = ".partial"


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name next to `path`: the rename stays on one filesystem (atomic), and two writers of one path
    never share a temporary. A random name rather than mkstemp: the file gets the usual umask rights, not 0600."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """`write` the file under a `temporary_sibling` and rename it to `path`; nothing is left behind when `write` or
    the rename fails. Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
