"""A whole training run in miniature: the plan's UNet shape reaches the exported model, which then loads."""

import json

import pytest

from motionclone.backend.models.blocks import load_blocks_bundle
from motionclone.backend.training import train
from motionclone.backend.training.architecture import build_image_unet, build_motion_adapter
from motionclone.backend.training.checks import CheckResult
from motionclone.backend.training.stages import StageSettings

CHECKS = ("check_vae_colours", "check_text_encoder", "check_text_conditioning", "check_motion_coherence")


def one_step(batch_size: int) -> StageSettings:
    return StageSettings(steps=1, batch_size=batch_size, learning_rate=1e-3)


def test_a_run_builds_and_exports_the_unet_shape_its_plan_names(tmp_path, monkeypatch):
    for name in CHECKS:  # the real checks sample frames (test_checks.py); here only the shape matters
        monkeypatch.setattr(train, name, lambda *args, name=name, **kwargs: CheckResult(name, True, {}))
    plan = train.TrainingPlan(
        work_dir=tmp_path / "work",
        out_dir=tmp_path / "out",
        clips=3,
        unet_channels=(8, 32, 48, 64),  # not the default shape, so only the plan can have chosen it
        unet_layers_per_block=1,
        vae=one_step(2),
        text=one_step(2),
        image=one_step(2),
        motion=StageSettings(steps=1, batch_size=1, learning_rate=1e-3, spatial_learning_rate=1e-4),
        colour=StageSettings(steps=0, batch_size=2, learning_rate=1e-3),
    )

    folder = train.train_blocks_model(plan)

    unet = json.loads((folder / "unet" / "config.json").read_text())
    adapter = json.loads((folder / "motion_adapter" / "config.json").read_text())
    assert (unet["block_out_channels"], unet["layers_per_block"]) == ([8, 32, 48, 64], 1)
    assert (adapter["block_out_channels"], adapter["motion_layers_per_block"]) == ([8, 32, 48, 64], 1)
    recipe = json.loads((folder / "training.json").read_text())["recipe"]
    assert (recipe["unet_channels"], recipe["unet_layers_per_block"]) == ([8, 32, 48, 64], 1)
    bundle = load_blocks_bundle(folder=folder)  # the preset's loading code takes the narrower model
    assert [len(block.motion_modules) for block in bundle.unet.up_blocks] == [2, 2, 2, 2]
    assert bundle.unet.down_blocks[0].resnets[0].conv1.out_channels == 8


def test_the_motion_modules_follow_the_unet_shape():
    unet = build_image_unet((16, 64, 96, 128), 1)
    adapter = build_motion_adapter((16, 64, 96, 128), 1)

    assert [len(block.resnets) for block in unet.down_blocks] == [len(b.motion_modules) for b in adapter.down_blocks]
    assert [len(block.resnets) for block in unet.up_blocks] == [len(b.motion_modules) for b in adapter.up_blocks]
    assert [len(block.resnets) for block in unet.up_blocks] == [2, 2, 2, 2]


@pytest.mark.parametrize(
    ("channels", "layers", "says"),
    [
        ((16, 64, 96), 2, "4 widths, one per block, got 3"),
        ((12, 64, 96, 128), 2, "positive multiples of 8, got 12 64 96 128"),
        ((32, 64, 96, 128), 0, "layers per block must be at least 1, got 0"),
    ],
)
def test_a_plan_refuses_a_unet_shape_before_any_work(tmp_path, channels, layers, says):
    with pytest.raises(ValueError, match=says):
        train.TrainingPlan(
            work_dir=tmp_path / "work", out_dir=tmp_path, unet_channels=channels, unet_layers_per_block=layers
        )
    assert not (tmp_path / "work").exists()
