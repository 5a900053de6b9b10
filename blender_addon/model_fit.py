"""Whether the panel's size and Motion config suit the model the connected backend runs. No bpy.

The panel's defaults (512 pixels, the official camera config) are SD-1.5's. A backend on a CPU runs the built-in
`blocks` model, which learned at 64 x 64 and has a config of its own: at 512 pixels it would be asked for 64 times
the pixels it learned at. The backend's Welcome says what its model was made for (`native_size`, `default_config`);
the panel then says when its settings differ and offers to take the model's.
"""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

BLOCKS_CONFIG = "blocks"
SIZE_FACTOR = 2.0  # a Size this many times larger or smaller than the model's is pointed out


@dataclass(frozen=True)
class ModelDefaults:
    """What the backend's model was made for: the longer side of its native size (0: not told) and its config."""

    long_side: int = 0
    config: str = ""

    @classmethod
    def from_limits(cls, limits: Any, known_configs: Collection[str]) -> "ModelDefaults":
        """From a Welcome's `limits`; an older backend that does not say gives the empty defaults, and a config the
        panel does not offer (`known_configs`) is left out."""
        if not isinstance(limits, dict):
            return cls()
        size = limits.get("native_size")
        sides = [size.get(key) for key in ("width", "height")] if isinstance(size, dict) else []
        long_side = max(sides) if sides and all(isinstance(side, int) and side > 0 for side in sides) else 0
        config = limits.get("default_config")
        return cls(long_side, config if isinstance(config, str) and config in known_configs else "")


def config_fits(config: str, model: ModelDefaults) -> bool:
    """The blocks config is for the blocks model alone, and that model wants it; any other config suits any other."""
    return not model.config or (config == BLOCKS_CONFIG) == (model.config == BLOCKS_CONFIG)


def size_fits(long_side: int, model: ModelDefaults) -> bool:
    """More than half and less than twice the model's size: 768 or 384 on SD-1.5 is a choice, 512 on the 64-pixel
    model is not."""
    return not model.long_side or model.long_side / SIZE_FACTOR < long_side < model.long_side * SIZE_FACTOR


def mismatch(settings: Any, model: ModelDefaults) -> str | None:
    """One line on how the panel's size and config differ from what the model was made for; None when they fit."""
    parts = []
    if not size_fits(settings.long_side, model):
        parts.append(f"{model.long_side} px (Size is {settings.long_side})")
    if not config_fits(settings.config, model):
        parts.append(f"the '{model.config}' Motion config")
    return f"The backend's model is made for {' and '.join(parts)}" if parts else None


def use_model_defaults(settings: Any, model: ModelDefaults) -> list[str]:
    """Set the panel's size and, where it does not fit, its config to the model's; returns what changed."""
    changed = []
    if not size_fits(settings.long_side, model):
        settings.long_side = model.long_side
        changed.append("long_side")
    if not config_fits(settings.config, model):
        settings.config = model.config
        changed.append("config")
    return changed
