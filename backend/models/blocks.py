"""The `blocks` preset: the small model this project trains itself and ships, loaded like SD-1.5. No bpy.

The folder `blocks_model/` next to this file is a diffusers folder (AnimateDiffPipeline layout: `vae/`,
`text_encoder/`, `tokenizer/`, `unet/`, `motion_adapter/`, `scheduler/`) made by `scripts/train_blocks_model.py`.
It loads through `load_sd15_bundle`, the same code as `sd15-animatediff-v3`, after its files are checked against
the SHA-256 manifest `SHA256SUMS`. Its world is the training data's: coloured balls, cubes, figures and cars on grass,
snow, desert, night, water or a grey blockout floor, 64 x 64 pixels, 16 frames.
"""

import hashlib
import re
from pathlib import Path

import torch

from ..errors import ModelNotFoundError
from .bundle import ModelBundle
from .sd15 import SD15Sources, load_sd15_bundle

BLOCKS_MODEL_DIR = Path(__file__).resolve().parent / "blocks_model"
MANIFEST_NAME = "SHA256SUMS"
NATIVE_SIZE = {"num_frames": 16, "height": 64, "width": 64}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """`SHA256SUMS` over every other file in `folder`, in sha256sum's format (`sha256sum -c` checks it too)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest = folder / MANIFEST_NAME
    manifest.write_text("".join(f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in files))
    return manifest


def verify_manifest(folder: Path) -> None:
    """Raise `ModelNotFoundError` when a file listed in `folder/SHA256SUMS` is missing or has other contents."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise ModelNotFoundError(f"The blocks model folder '{folder}' has no {MANIFEST_NAME}; it is incomplete.")
    entries = [(number, line.split(maxsplit=1)) for number, line in enumerate(manifest.read_text().splitlines(), 1)]
    entries = [(number, fields) for number, fields in entries if fields]
    if not entries:
        raise ModelNotFoundError(f"{manifest} lists no files; restore it from the repository.")
    for number, fields in entries:
        if len(fields) != 2 or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
            raise ModelNotFoundError(
                f"Line {number} of {manifest} is not a SHA-256 sum and a file name; restore it from the repository."
            )
        expected, name = fields
        path = folder / name.strip()
        if not path.is_file():
            raise ModelNotFoundError(f"The blocks model file '{path}' is missing. Restore it from the repository.")
        digest = file_sha256(path)
        if digest != expected:
            raise ModelNotFoundError(
                f"The blocks model file '{path}' does not match its SHA-256 in {MANIFEST_NAME} (got {digest}); "
                "it is damaged or was replaced. Restore it from the repository, or retrain with "
                "scripts/train_blocks_model.py (which writes a new manifest)."
            )


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
