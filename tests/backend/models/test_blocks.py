"""The shipped `blocks` model: manifest, size, loading through the SD-1.5 loader, and a short generation."""

import shutil

import numpy as np
import pytest

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.errors import ModelNotFoundError
from motionclone.backend.models import load_preset
from motionclone.backend.models.blocks import BLOCKS_MODEL_DIR, load_blocks_bundle
from motionclone.backend.models.manifest import MANIFEST_NAME, verify_manifest
from motionclone.backend.models.registry import NATIVE_SIZES, default_preset
from motionclone.backend.training.data import clip_at

MAX_MODEL_BYTES = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def bundle():
    return load_preset("blocks", device="cpu")


def test_shipped_folder_is_complete_small_and_matches_its_manifest():
    verify_manifest(BLOCKS_MODEL_DIR)
    listed = {line.split(maxsplit=1)[1] for line in (BLOCKS_MODEL_DIR / MANIFEST_NAME).read_text().splitlines()}
    on_disk = {p.relative_to(BLOCKS_MODEL_DIR).as_posix() for p in BLOCKS_MODEL_DIR.rglob("*") if p.is_file()}
    assert on_disk - {MANIFEST_NAME} == listed
    assert sum(p.stat().st_size for p in BLOCKS_MODEL_DIR.rglob("*") if p.is_file()) <= MAX_MODEL_BYTES
    assert (BLOCKS_MODEL_DIR / "model_index.json").is_file()


def test_a_changed_or_missing_file_is_refused(tmp_path):
    copy = tmp_path / "blocks"
    shutil.copytree(BLOCKS_MODEL_DIR, copy)
    config = copy / "unet" / "config.json"
    config.write_text(config.read_text().replace("\n", " \n", 1))
    with pytest.raises(ModelNotFoundError, match="SHA-256"):
        load_blocks_bundle(folder=copy)
    config.unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        verify_manifest(copy)


@pytest.mark.parametrize(
    ("manifest", "message"), [("\n", "lists no files"), ("<<<<<<< HEAD\n", "Line 1 of .* is not a SHA-256 sum")]
)
def test_an_empty_or_garbled_manifest_is_refused_naming_it(tmp_path, manifest, message):
    copy = tmp_path / "blocks"
    shutil.copytree(BLOCKS_MODEL_DIR, copy)
    (copy / MANIFEST_NAME).write_text(manifest)
    with pytest.raises(ModelNotFoundError, match=message):
        verify_manifest(copy)


def test_git_checks_the_model_out_byte_for_byte():
    """Git for Windows turns LF into CRLF in text files by default, which would change the configs' SHA-256."""
    import subprocess

    config = BLOCKS_MODEL_DIR / "unet" / "config.json"
    attributes = subprocess.run(
        ["git", "check-attr", "text", str(config)], cwd=BLOCKS_MODEL_DIR, capture_output=True, text=True, check=False
    )
    if attributes.returncode != 0:
        pytest.skip("not a git checkout: the installed files are checked by their manifest instead")
    assert attributes.stdout.strip().endswith("text: unset")


def test_loads_with_sd15_block_roles(bundle):
    assert bundle.description["preset"] == "blocks"
    assert bundle.vae_scale_factor == 2
    assert bundle.unet.config.sample_size * bundle.vae_scale_factor == NATIVE_SIZES["blocks"]["height"]
    assert [type(block).__name__ for block in bundle.unet.up_blocks] == [
        "UpBlockMotion",
        "CrossAttnUpBlockMotion",
        "CrossAttnUpBlockMotion",
        "UpBlockMotion",
    ]
    assert len(bundle.unet.up_blocks[1].motion_modules) == 3  # SD-1.5: 2 layers per block, one more going up
    # Every caption word is a single token of the shipped tokenizer.
    assert len(bundle.tokenizer("a red ball bouncing", add_special_tokens=False).input_ids) == 4


def test_is_the_cpu_default_preset():
    assert default_preset("cpu") == "blocks"
    assert default_preset("cuda") == "sd15-animatediff-v3"


def test_short_generation_at_the_native_size(bundle):
    reference = clip_at(99, 0, 64, 16).frames
    params = MotionCloneParams.from_config(
        "blocks", prompt="a red ball rolling right on the grass", num_inference_steps=3, guidance_steps=1,
        **NATIVE_SIZES["blocks"],
    )  # fmt: skip
    output = MotionClonePipeline.from_bundle(bundle)(reference, params)
    assert output.frames.shape == (16, 64, 64, 3)
    assert output.frames.dtype == np.uint8
    assert "'preset': 'blocks'" in str(output.metadata["model"])
    assert output.frames.std() > 1.0  # a picture, not a constant
