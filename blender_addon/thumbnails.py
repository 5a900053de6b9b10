"""Images the panels show (previews, the condition): one named image datablock each, pointed at a file. No torch.

Draw code may not load images, so whoever has a new picture (the pump, an operator) calls `show_image`.
"""

from pathlib import Path

import bpy


def show_image(name: str, path: Path) -> None:
    """Point image `name` at `path` (loading it the first time) and refresh its panel icon."""
    image = bpy.data.images.get(name)
    if image is None:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = name
    else:
        image.filepath = str(path)
        image.reload()
    image.preview_ensure()
    image.preview.reload()
