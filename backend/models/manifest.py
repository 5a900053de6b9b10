"""SHA-256 manifests of the shipped model folders (`SHA256SUMS`, in sha256sum's format). Standard library only."""

import hashlib
import re
from pathlib import Path

from ..errors import ModelNotFoundError

MANIFEST_NAME = "SHA256SUMS"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
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


def verify_manifest(
    folder: Path, *, what: str = "blocks model", retrain: str = "scripts/train_blocks_model.py"
) -> None:
    """Raise `ModelNotFoundError` when a file listed in `folder/SHA256SUMS` is missing or has other contents.

    `what` names the model in the messages, `retrain` the script that makes a new one.
    """
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise ModelNotFoundError(f"The {what} folder '{folder}' has no {MANIFEST_NAME}; it is incomplete.")
    entries = [(number, line.split(maxsplit=1)) for number, line in enumerate(manifest.read_text().splitlines(), 1)]
    entries = [(number, fields) for number, fields in entries if fields]
    if not entries:
        raise ModelNotFoundError(f"The {what} manifest {manifest} lists no files; restore it from the repository.")
    for number, fields in entries:
        if len(fields) != 2 or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
            raise ModelNotFoundError(
                f"Line {number} of the {what} manifest {manifest} is not a SHA-256 sum and a file name; restore it "
                "from the repository."
            )
        expected, name = fields
        path = folder / name.strip()
        if not path.is_file():
            raise ModelNotFoundError(f"The {what} file '{path}' is missing. Restore it from the repository.")
        digest = file_sha256(path)
        if digest != expected:
            raise ModelNotFoundError(
                f"The {what} file '{path}' does not match its SHA-256 in {MANIFEST_NAME} (got {digest}); "
                "it is damaged or was replaced. Restore it from the repository, or retrain with "
                f"{retrain} (which writes a new manifest)."
            )
