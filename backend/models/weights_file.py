"""Read one weights file (`.safetensors`, or a `.ckpt`/`.pt` torch checkpoint) into a flat state dict. No bpy.

Torch checkpoints are read with `weights_only=True`: tensors and plain containers only, never arbitrary pickled
objects. Official AnimateDiff files sometimes wrap their weights in `{"state_dict": ...}` or `{"controlnet": ...}`
and carry non-tensor extras (`animatediff_config`); the wrapper is opened and the extras dropped, as the official
loaders do.
"""

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import ModelNotFoundError

WRAPPER_KEYS = ("state_dict", "controlnet")


def read_state_dict(path: str | Path, what: str, hint: str) -> dict[str, torch.Tensor]:
    """The tensors of the weights file `path`, on the CPU.

    Args:
        path (`str` or `Path`): an existing `.safetensors` file, or a torch checkpoint (any other suffix).
        what (`str`): what the file is, for error messages (for example "`--lora` file").
        hint (`str`): what to do instead, appended to error messages.

    Raises:
        `ModelNotFoundError`: the file is missing or cannot be read as weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"The {what} '{path}' does not exist. {hint}")
    try:
        if path.suffix == ".safetensors":
            loaded: object = load_file(path, device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as error:
        summary = error_summary(error)
        raise ModelNotFoundError(f"The {what} '{path}' cannot be read as weights ({summary}). {hint}") from error
    for key in WRAPPER_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise ModelNotFoundError(f"The {what} '{path}' holds a {type(loaded).__name__}, not a state dict. {hint}")
    return {str(key): value for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def error_summary(error: BaseException) -> str:
    """ "TypeName: first line of the message", for one-line error reports (some messages are empty or long)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
