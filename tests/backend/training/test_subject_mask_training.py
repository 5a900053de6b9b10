"""Training the subject-mask network: data, degradation, a falling loss, and the held-out check that gates writing."""

import json

import numpy as np
import pytest
import torch

from motionclone.backend.evaluation.subject_mask import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_subject_mask_net,
    subject_probabilities,
)
from motionclone.backend.models.manifest import MANIFEST_NAME
from motionclone.backend.training import subject_mask_training
from motionclone.backend.training.data import clip_at, render_scene
from motionclone.backend.training.subject_mask_training import (
    MaskTrainingSettings,
    degrade,
    fit_subject_mask,
    mask_frames,
    to_tensors,
    train_subject_mask,
)


def test_training_frames_are_the_generator_frames_with_their_masks_then_scenes_without_subject():
    images, masks = mask_frames(seed=5, clips=2, frames_per_clip=4, scene_clips=1)
    assert images.shape == (10, 64, 64, 3) and masks.shape == (10, 64, 64) and masks.dtype == bool
    second = clip_at(5, 1, size=64, frames=16)
    np.testing.assert_array_equal(images[4:8], second.frames[[0, 5, 10, 15]])
    np.testing.assert_array_equal(masks[4:8], second.masks[[0, 5, 10, 15]])
    first = clip_at(5, 0, size=64, frames=16)
    np.testing.assert_array_equal(images[8:], render_scene(first.spec, size=64)[[0, 15]])
    assert not masks[8:].any() and masks[:8].any()
    # The scene is the clip's own background: they differ only where the subject and its shadow are drawn.
    differs = (images[8].astype(int) - first.frames[0].astype(int)).any(axis=-1)
    assert differs[first.masks[0]].all() and differs.mean() < 3 * first.masks[0].mean()


def test_degrading_blurs_stays_in_range_and_repeats_with_the_seed():
    images, _ = to_tensors(*mask_frames(seed=5, clips=4, frames_per_clip=2))
    first = degrade(images, torch.Generator().manual_seed(1))
    again = degrade(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    assert first.min() >= -1.0 and first.max() <= 1.0
    blurred = degrade(images, torch.Generator().manual_seed(1), jitter=False)

    def edges(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert edges(blurred) < edges(images)
    torch.testing.assert_close(degrade(images, torch.Generator(), blur=False, jitter=False), images)


def test_a_few_steps_lower_the_loss_and_repeat_exactly():
    settings = MaskTrainingSettings(clips=16, steps=40, batch=8, learning_rate=3e-3, scene_clips=4)
    _, losses = fit_subject_mask(settings, progress=False)
    assert len(losses) == 40 and np.mean(losses[-8:]) < np.mean(losses[:8])
    _, again = fit_subject_mask(settings, progress=False)
    assert again == losses


def test_a_network_that_passes_the_check_is_written_and_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(subject_mask_training, "MIN_HELD_OUT_IOU", 0.0)  # a few steps: any IoU passes
    out = tmp_path / "subject_mask"
    monkeypatch.setattr(subject_mask_training, "MAX_FALSE_SUBJECT_SHARE", 1.0)
    settings = MaskTrainingSettings(clips=4, steps=3, batch=4, held_out_clips=2, scene_clips=2)
    record = train_subject_mask(settings, out, progress=False)
    assert {p.name for p in out.iterdir()} == {WEIGHTS_NAME, CONFIG_NAME, MANIFEST_NAME}
    assert json.loads((out / CONFIG_NAME).read_text())["training"] == record
    assert record["steps"] == 3 and 0.0 <= record["held_out_iou"] <= 1.0
    net = load_subject_mask_net(out)
    assert subject_probabilities(np.zeros((2, 64, 64, 3), dtype=np.uint8), net).shape == (2, 64, 64)


def test_the_check_seed_cannot_be_the_training_seed():
    with pytest.raises(ValueError, match="held-out check's seed"):
        MaskTrainingSettings(seed=4, held_out_seed=4)


def test_a_network_that_fails_the_held_out_check_is_not_written(tmp_path):
    out = tmp_path / "subject_mask"
    settings = MaskTrainingSettings(clips=2, steps=2, batch=4, held_out_clips=4, scene_clips=1)
    with pytest.raises(RuntimeError, match=r"held-out IoU .* below 0\.75"):
        train_subject_mask(settings, out, progress=False)
    assert not out.exists()
