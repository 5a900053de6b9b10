"""A loss-curve picture for the docs, drawn with Pillow (no plotting library needed). No bpy."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PANEL_SIZE = (360, 220)
MARGIN = 36


@dataclass(frozen=True)
class Panel:
    """Maps (step, loss) to pixels inside one panel; losses outside [low, high] are clipped to the frame."""

    left: int
    count: int
    low: float
    high: float

    def point(self, index: float, value: float) -> tuple[float, float]:
        width, height = PANEL_SIZE
        x = self.left + MARGIN + (width - 2 * MARGIN) * index / max(1, self.count - 1)
        fraction = (min(max(value, self.low), self.high) - self.low) / (self.high - self.low)
        return x, height - MARGIN - (height - 2 * MARGIN) * fraction


def smooth(values: list[float], window: int = 25) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if len(array) < window:
        return array
    return np.convolve(array, np.ones(window) / window, mode="valid")


def plot_losses(losses: dict[str, list[float]], path: Path) -> Path:
    """One panel per stage: raw loss in light grey, a moving average in dark blue, steps on x, loss on y."""
    width, height = PANEL_SIZE
    image = Image.new("RGB", (width * len(losses), height), "white")
    draw = ImageDraw.Draw(image)
    for number, (stage, values) in enumerate(losses.items()):
        left = number * width
        draw.text((left + MARGIN, 6), f"stage: {stage}  ({len(values)} steps)", fill="black")
        if not values:
            continue
        raw = np.asarray(values, dtype=np.float64)
        low, high = float(np.percentile(raw, 1)), float(np.percentile(raw, 99))
        panel = Panel(left, len(raw), low, max(high, low + 1e-9))
        draw.line([panel.point(i, v) for i, v in enumerate(raw)], fill=(200, 200, 200), width=1)
        averaged = smooth(values)
        offset = (len(raw) - len(averaged)) / 2
        draw.line([panel.point(i + offset, v) for i, v in enumerate(averaged)], fill=(20, 60, 160), width=2)
        draw.rectangle([left + MARGIN, MARGIN, left + width - MARGIN, height - MARGIN], outline="black")
        draw.text((left + 2, MARGIN - 4), f"{panel.high:.3g}", fill="black")
        draw.text((left + 2, height - MARGIN - 8), f"{panel.low:.3g}", fill="black")
        draw.text((left + width - MARGIN - 30, height - MARGIN + 6), f"{len(raw)}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
