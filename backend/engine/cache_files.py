"""Cache files of tensors (motion representations, inverted latents): written whole or not at all. No bpy."""

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..atomic_files import write_atomically

log = logging.getLogger(__name__)

# safetensors writes a file through a temporary of its own (".tmpXXXXXX") next to it, left behind if it stops.
SAFETENSORS_TEMPORARY_PREFIX = ".tmp"


def save_atomically(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """Write a safetensors file whole or not at all (`write_atomically`): a reader never sees half a file, and two
    writers of the same key (two workers sharing a cache folder) never rename each other's file away."""
    return write_atomically(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def store_in_cache(save: Callable[[], Path], what: str) -> None:
    """Run `save`; a cache that cannot be written (a full disk, a folder taken away) costs the next job the work
    again, not this job its result."""
    try:
        save()
    except (OSError, SafetensorError) as error:  # safetensors reports its own I/O errors as SafetensorError
        log.warning(
            "could not keep the %s in the cache folder (%s); the next job with it computes it again", what, error
        )
