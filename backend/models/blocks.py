"""The `blocks` preset: the small model this project trains itself and ships, loaded like SD-1.5. No bpy.

The folder `blocks_model/` next to this file is a diffusers folder (AnimateDiffPipeline layout: `vae/`,
`text_encoder/`, `tokenizer/`, `unet/`, `motion_adapter/`, `scheduler/`) made by `scripts/train_blocks_model.py`.
It loads through `load_sd15_bundle`, the same code as `sd15-animatediff-v3`, after its files are checked against
the SHA-256 manifest `SHA256SUMS`. Its world is the training data's: coloured balls, cubes, figures and cars on grass,
snow, desert, night, water or a grey blockout floor, 64 x 64 pixels, 16 frames.
"""

from pathlib import Path

import torch

from .bundle import ModelBundle
from .manifest import MANIFEST_NAME, file_sha256, verify_manifest
from .sd15 import SD15Sources, load_sd15_bundle

BLOCKS_MODEL_DIR = Path(__file__).resolve().parent / "blocks_model"
NATIVE_SIZE = {"num_frames": 16, "height": 64, "width": 64}


def load_blocks_bundle(
    device: str | torch.device = "cpu", dtype: torch.dtype | None = None, folder: str | Path | None = None
) -> ModelBundle:
    """Load the shipped (or another trained) blocks model.

    Args:
        device (`str`, defaults to "cpu"): target device.
        dtype (`torch.dtype`, *optional*): defaults to float32 (float16 on CUDA, as for SD-1.5).
        folder (`str` or `Path`, *optional*): a model folder written by `scripts/train_blocks_model.py`; defaults to
            the shipped one.
    """
    folder = Path(folder) if folder is not None else BLOCKS_MODEL_DIR
    verify_manifest(folder)
    sources = SD15Sources(base=str(folder), motion_adapter=str(folder / "motion_adapter"), local_files_only=True)
    bundle = load_sd15_bundle(sources, device=device, dtype=dtype)
    bundle.description = {
        "preset": "blocks",
        "weights": folder.name if folder == BLOCKS_MODEL_DIR else str(folder),
        "manifest_sha256": file_sha256(folder / MANIFEST_NAME),
        "dtype": bundle.description["dtype"],
    }
    return bundle
