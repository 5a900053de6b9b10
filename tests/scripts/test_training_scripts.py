"""The training scripts refuse bad values when they start, naming the flag and its limit, before any work, and hand
their flags to the training plan."""

import json
import subprocess
import sys
from pathlib import Path

from motionclone.backend.models.blocks import BLOCKS_MODEL_DIR
from motionclone.backend.training.train import training_info
from tests.script_modules import load_script

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=120)


def test_the_training_script_names_a_bad_value_and_its_limit_before_any_work(tmp_path):
    work = tmp_path / "work"
    base = ["--work-dir", str(work), "--out", str(tmp_path / "out")]
    for flag, value, says in (
        ("--seed", "-1", "argument --seed: must be at least 0, got -1"),
        ("--clips", "0", "argument --clips: must be at least 1, got 0"),
        ("--motion-lr", "-0.1", "argument --motion-lr: must be at least 0, got -0.1"),
        ("--vae-lr", "inf", "argument --vae-lr: must be at least 0, got inf"),
        ("--threads", "0", "argument --threads: must be at least 1, got 0"),
        ("--image-steps", "many", "argument --image-steps: must be an integer, got 'many'"),
        ("--motion-low-res-steps", "-1", "argument --motion-low-res-steps: must be at least 0, got -1"),
        ("--device", "gpu", "argument --device: must be cpu, cuda or cuda:N, got 'gpu'"),
    ):
        completed = run_script("train_blocks_model.py", *base, flag, value)
        assert completed.returncode == 2 and says in completed.stderr, completed.stderr
        assert "Traceback" not in completed.stderr
    assert not work.exists()


def plan_from_flags(tmp_path, monkeypatch, *flags: str):
    """The plan the training script hands to its training for `flags` (the training itself replaced)."""
    script = load_script("train_blocks_model")
    plans = []
    monkeypatch.setattr(script, "train_blocks_model", lambda plan: plans.append(plan) or tmp_path / "out")
    monkeypatch.setattr(sys, "argv", ["train", "--work-dir", str(tmp_path), "--out", str(tmp_path / "out"), *flags])
    assert script.main() == 0
    [plan] = plans
    return plan


def test_the_training_script_hands_the_low_resolution_motion_flags_to_its_plan(tmp_path, monkeypatch):
    flags = ["--motion-low-res-steps", "1400", "--motion-low-res-batch", "6", "--motion-steps", "850"]

    plan = plan_from_flags(tmp_path, monkeypatch, *flags)

    low_res, motion = plan.motion_low_res, plan.motion
    assert (low_res.steps, low_res.batch_size, low_res.latent_pool, low_res.spatial_learning_rate) == (1400, 6, 2, 0)
    assert low_res.learning_rate == motion.learning_rate and low_res.subject_weight == motion.subject_weight
    assert (motion.steps, motion.latent_pool) == (850, 1) and motion.spatial_learning_rate > 0


def test_the_training_script_names_a_bad_unet_shape_before_any_work(tmp_path):
    work = tmp_path / "work"
    base = ["--work-dir", str(work), "--out", str(tmp_path / "out")]
    for flags, says in (
        (
            ["--unet-channels", "12", "64", "96", "128"],
            "argument --unet-channels: the UNet's widths must be positive multiples of 8, got 12 64 96 128",
        ),
        (["--unet-channels", "16", "64", "96"], "argument --unet-channels: expected 4 arguments"),
        (["--unet-layers-per-block", "0"], "argument --unet-layers-per-block: must be at least 1, got 0"),
        (
            ["--init-from", str(tmp_path), "--unet-layers-per-block", "1"],
            f"--unet-layers-per-block: only a new model takes a shape; --init-from continues {tmp_path} with its own",
        ),
    ):
        completed = run_script("train_blocks_model.py", *base, *flags)
        assert completed.returncode == 2 and says in completed.stderr, completed.stderr
        assert "Traceback" not in completed.stderr
    assert not work.exists()


def test_the_training_script_hands_the_unet_shape_to_its_plan(tmp_path, monkeypatch):
    shape = ["--unet-channels", "32", "64", "96", "128", "--unet-layers-per-block", "1"]

    wide = plan_from_flags(tmp_path, monkeypatch, *shape)  # the default shape: the shipped recipe's test below

    assert (wide.unet_channels, wide.unet_layers_per_block) == ((32, 64, 96, 128), 1)


def test_the_training_script_without_flags_trains_the_shipped_models_recipe(tmp_path, monkeypatch):
    """The documented command, with no recipe flags, is the recipe the shipped model records having been made with."""
    plan = plan_from_flags(tmp_path, monkeypatch)

    shipped = json.loads((BLOCKS_MODEL_DIR / "training.json").read_text())["recipe"]
    recorded = json.loads(json.dumps(training_info(plan, [], {}, 0.0)["recipe"]))  # as the export writes it
    assert recorded == shipped


def test_the_data_set_script_names_a_bad_size(tmp_path):
    completed = run_script("make_blocks_dataset.py", "--out", str(tmp_path / "clips.npz"), "--size", "4")
    assert completed.returncode == 2 and "argument --size: must be at least 8, got 4" in completed.stderr
    assert not (tmp_path / "clips.npz").exists()


def test_the_colour_words_script_names_a_bad_prompt_or_model_folder(tmp_path):
    completed = run_script("make_colour_words_picture.py", "--prompt", "a {colour} {subject}")
    assert completed.returncode == 2 and "--prompt must contain {colour}" in completed.stderr
    completed = run_script("make_colour_words_picture.py", "--model-folder", str(tmp_path), "--out", "x.png")
    assert completed.returncode == 2 and f"--model-folder: The blocks model folder '{tmp_path}'" in completed.stderr
    assert "Traceback" not in completed.stderr
