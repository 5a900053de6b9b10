"""Small preview images from latents, without the VAE: a fixed linear map from SD-1.5's 4 latent channels to RGB.

The map is the widely used approximation of SD-1.5's decoder colours; it is meant for a thumbnail in the UI, not
for the result. No bpy.
"""

import io

import numpy as np
import torch
from PIL import Image

# Rows: latent channels 0-3; columns: R, G, B.
LATENT_TO_RGB = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)


def latents_preview_png(latents: torch.Tensor, max_side: int = 128) -> bytes:
    """PNG of the middle frame of x_t (1, 4, F, h, w), upscaled to at most `max_side` pixels on its long side."""
    frame = latents[0, :, latents.shape[2] // 2].detach().float().cpu()  # (4, h, w)
    rgb = torch.einsum("chw,cr->hwr", frame, LATENT_TO_RGB)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    scale = max(1, max_side // max(image.size))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
