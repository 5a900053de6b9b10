"""Continuing the shipped model: each stage changes only what it trains, the run resumes, the export says so."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from motionclone.backend.errors import ModelNotFoundError
from motionclone.backend.models.blocks import BLOCKS_MODEL_DIR, load_blocks_bundle
from motionclone.backend.models.manifest import MANIFEST_NAME, file_sha256
from motionclone.backend.training import continuation
from motionclone.backend.training.checks import CheckResult
from motionclone.backend.training.stages import StageSettings
from motionclone.backend.training.train import TrainingPlan

WEIGHT_FILES = {
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "motion_adapter": "motion_adapter/diffusion_pytorch_model.safetensors",
}


def plan_for(tmp_path, steps: int, colour_steps: int = 0, spatial_learning_rate: float = 0.0) -> TrainingPlan:
    motion = StageSettings(steps=steps, batch_size=1, learning_rate=1e-3, spatial_learning_rate=spatial_learning_rate)
    colour = StageSettings(steps=colour_steps, batch_size=2, learning_rate=1e-3, subject_weight=9.0)
    return TrainingPlan(work_dir=tmp_path / "work", out_dir=tmp_path / "out", clips=3, motion=motion, colour=colour)


def same_weights(folder_a, folder_b, part: str) -> bool:
    a, b = load_file(folder_a / WEIGHT_FILES[part]), load_file(folder_b / WEIGHT_FILES[part])
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def passing_check_in_place_of(monkeypatch, name: str, result: CheckResult) -> list:
    """Replace the continuation's check `name` with one that passes at once; returns the list of models it was
    called with. The real checks sample frames (tested in test_checks.py); here only their place in the run matters."""
    calls = []

    def check(unet, *args, **kwargs):
        calls.append(unet)
        return result

    monkeypatch.setattr(continuation, name, check)
    return calls


@pytest.fixture
def cheap_motion_check(monkeypatch):
    result = CheckResult("motion modules make coherent clips", True, {"ratio": 0.5})
    return passing_check_in_place_of(monkeypatch, "check_motion_coherence", result)


@pytest.fixture
def cheap_colour_check(monkeypatch):
    result = CheckResult("each colour word draws its colour", True, {"colour_words_drawn": 1.0})
    return passing_check_in_place_of(monkeypatch, "check_colour_words", result)


def test_continuing_trains_only_the_motion_modules_resumes_and_records_its_source(tmp_path, cheap_motion_check):
    folder = continuation.continue_training(plan_for(tmp_path, steps=2), BLOCKS_MODEL_DIR)

    assert len(cheap_motion_check) == 1
    for part in ("vae", "text_encoder", "unet"):  # spatial learning rate 0: the image UNet is kept too
        assert same_weights(folder, BLOCKS_MODEL_DIR, part), part
    assert not same_weights(folder, BLOCKS_MODEL_DIR, "motion_adapter")
    for name in ("vocab.json", "merges.txt"):  # the tokenizer the text encoder was trained with
        assert (folder / "tokenizer" / name).read_bytes() == (BLOCKS_MODEL_DIR / "tokenizer" / name).read_bytes()
    source_vae = json.loads((BLOCKS_MODEL_DIR / "vae" / "config.json").read_text())
    assert json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"] == source_vae["scaling_factor"]
    for part in WEIGHT_FILES:  # loaded from a folder, but the export does not name where it was made from
        assert "_name_or_path" not in json.loads((folder / part / "config.json").read_text()), part
    info = json.loads((folder / "training.json").read_text())
    assert info["continued_from"]["manifest_sha256"] == file_sha256(BLOCKS_MODEL_DIR / MANIFEST_NAME)
    assert info["continued_from"]["training"] == json.loads((BLOCKS_MODEL_DIR / "training.json").read_text())
    assert info["stages_trained"] == ["motion"] and info["recipe"]["motion"]["steps"] == 2
    assert not {"vae", "text", "image"} & set(info["recipe"])  # stages not run are not recorded as this run's
    assert not {"unet_channels", "unet_layers_per_block"} & set(info["recipe"])  # the source's shape, not the plan's
    bundle = load_blocks_bundle(folder=folder)  # a complete model folder with a manifest that matches
    assert bundle.description["manifest_sha256"] == file_sha256(folder / MANIFEST_NAME)

    [checkpoint] = (tmp_path / "work").glob("stage4_motion-*.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 2
    state["losses"] = torch.tensor([-1.0, -2.0])  # marks: a resumed run keeps them, a fresh one would not
    torch.save(state, checkpoint)
    continuation.continue_training(plan_for(tmp_path, steps=3), BLOCKS_MODEL_DIR)  # one step more, not three
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 3 and state["losses"][:2].tolist() == [-1.0, -2.0] and len(state["losses"]) == 3


def test_the_work_files_of_a_continuation_are_its_own(tmp_path, cheap_motion_check):
    """A normal run's checkpoint in the same work folder is neither used nor overwritten; the clips are encoded once
    per VAE, and a stop while they are written leaves no half file that later runs would load."""
    work = tmp_path / "work"
    work.mkdir()
    # Another start's checkpoint of the same stage (a normal run's): loading it would fail, overwriting would lose it.
    (work / "stage4_motion-000000000000.pt").write_bytes(b"a normal run's checkpoint")
    vae_tag = file_sha256(BLOCKS_MODEL_DIR / "vae" / "diffusion_pytorch_model.safetensors")[:12]
    latents = work / f"latents-vae{vae_tag}-seed1-n3.npy"

    def stopped_while_writing(file, array):
        file.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "save", stopped_while_writing)
        with pytest.raises(KeyboardInterrupt):
            continuation.continue_training(plan_for(tmp_path, steps=1), BLOCKS_MODEL_DIR)
    assert not latents.exists() and not list(work.glob("*.partial"))
    continuation.continue_training(plan_for(tmp_path, steps=1), BLOCKS_MODEL_DIR)
    assert (work / "stage4_motion-000000000000.pt").read_bytes() == b"a normal run's checkpoint"
    assert len(list(work.glob("stage4_motion-*.pt"))) == 2
    assert np.load(latents).shape[:2] == (3, 16)


def test_continuing_a_damaged_model_folder_is_refused_before_any_training(tmp_path, cheap_motion_check):
    source = tmp_path / "damaged"
    source.mkdir()
    (source / MANIFEST_NAME).write_text(f"{'0' * 64}  unet/diffusion_pytorch_model.safetensors\n")
    with pytest.raises(ModelNotFoundError, match="missing"):
        continuation.continue_training(plan_for(tmp_path, steps=2), source)
    assert not (tmp_path / "work").exists() and cheap_motion_check == []


def test_the_cross_attention_stage_alone_trains_only_the_image_unets_text_keys_and_values(
    tmp_path, cheap_motion_check, cheap_colour_check
):
    plan = plan_for(tmp_path, steps=0, colour_steps=2)
    folder = continuation.continue_training(plan, BLOCKS_MODEL_DIR)

    assert cheap_motion_check == [] and len(cheap_colour_check) == 1
    for part in ("vae", "text_encoder", "motion_adapter"):
        assert same_weights(folder, BLOCKS_MODEL_DIR, part), part
    before = load_file(BLOCKS_MODEL_DIR / WEIGHT_FILES["unet"])
    after = load_file(folder / WEIGHT_FILES["unet"])
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".attn2.to_k." in name or ".attn2.to_v." in name for name in changed), changed
    info = json.loads((folder / "training.json").read_text())
    assert info["stages_trained"] == ["colour"] and info["recipe"]["colour"]["steps"] == 2
    assert "motion" not in info["recipe"] and [check["name"] for check in info["checks"]] == [
        "each colour word draws its colour"
    ]
    assert len(list((tmp_path / "work").glob("stage5_*"))) == 1

    # Motion steps first this time, in the same work folder: the finished cross-attention checkpoint above holds
    # the image UNet as it was before them, so it is not loaded over what the motion stage trained. Motion steps
    # that leave the image UNet as it was (spatial rate 0) hand the stage the same start: it resumes.
    continuation.continue_training(plan_for(tmp_path, steps=1, colour_steps=2), BLOCKS_MODEL_DIR)
    assert len(list((tmp_path / "work").glob("stage5_*"))) == 1
    trains_image_unet = plan_for(tmp_path, steps=1, colour_steps=2, spatial_learning_rate=1e-3)
    continuation.continue_training(trains_image_unet, BLOCKS_MODEL_DIR)
    assert len(list((tmp_path / "work").glob("stage5_*"))) == 2


def test_a_continuation_with_low_resolution_motion_steps_trains_both_parts_and_records_them(
    tmp_path, cheap_motion_check
):
    plan = plan_for(tmp_path, steps=1)
    plan.motion_low_res = StageSettings(steps=1, batch_size=1, learning_rate=1e-3, latent_pool=2)
    folder = continuation.continue_training(plan, BLOCKS_MODEL_DIR)

    assert len(cheap_motion_check) == 1 and not same_weights(folder, BLOCKS_MODEL_DIR, "motion_adapter")
    info = json.loads((folder / "training.json").read_text())
    assert info["stages_trained"] == ["motion_low_res", "motion"]
    assert info["recipe"]["motion_low_res"]["latent_pool"] == 2 and info["recipe"]["motion"]["latent_pool"] == 1
    assert len(list((tmp_path / "work").glob("stage4_motion-*.pt"))) == 2


def test_a_continuation_with_nothing_to_train_is_refused_before_any_work(tmp_path, cheap_motion_check):
    with pytest.raises(ValueError, match="Nothing to train"):
        continuation.continue_training(plan_for(tmp_path, steps=0, colour_steps=0), BLOCKS_MODEL_DIR)
    assert not (tmp_path / "work").exists()


def test_the_training_script_refuses_a_continuation_with_nothing_to_train(tmp_path):
    script = Path(__file__).resolve().parents[3] / "scripts" / "train_blocks_model.py"
    command = [sys.executable, str(script), "--init-from", str(BLOCKS_MODEL_DIR), "--work-dir", str(tmp_path / "w")]
    command += ["--out", str(tmp_path / "out"), "--motion-steps", "0", "--colour-steps", "0"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "--motion-steps, --motion-low-res-steps and --colour-steps are all 0" in completed.stderr
    assert not (tmp_path / "w").exists()
