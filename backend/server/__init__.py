"""The backend server: ROUTER socket, fair job queue, engine worker(s) in-process or on Ray, results on disk. No bpy.

`Server` and `serve` load lazily (PEP 562): `motionclone serve` binds its socket (`listener`) and prints where before
torch and diffusers are imported.
"""

from importlib import import_module
from typing import Any

from .config import ServerConfig

__all__ = ["Server", "ServerConfig", "serve"]

# Public name -> the submodule that defines it; imported on first access.
_LAZY = {"Server": ".server", "serve": ".server"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)
