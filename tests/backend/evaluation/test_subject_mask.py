"""The shipped subject-mask network: it finds the blocks subject where the moving-region rule cannot."""

import shutil

import numpy as np
import pytest

from motionclone.backend.errors import ModelNotFoundError, ParameterError
from motionclone.backend.evaluation.adherence import class_adherence, colour_adherence
from motionclone.backend.evaluation.subject_mask import (
    MASK_THRESHOLD,
    SUBJECT_MASK_DIR,
    WEIGHTS_NAME,
    load_subject_mask_net,
    network_region_settings,
    segment_subject,
    subject_probabilities,
)
from motionclone.backend.models.manifest import MANIFEST_NAME, verify_manifest
from motionclone.backend.training.data import clip_at, render_scene, spec_at

HELD_OUT_SEED = 11  # neither the network's training seed (3) nor its check's (4)
MAX_NETWORK_BYTES = 2 * 1024 * 1024


def first_clips(predicate, count: int, size: int = 64) -> list:
    """The first `count` clips of the held-out seed whose spec satisfies `predicate`."""
    found = []
    for index in range(400):
        clip = clip_at(HELD_OUT_SEED, index, size=size)
        if predicate(clip.spec):
            found.append(clip)
            if len(found) == count:
                return found
    raise AssertionError("the held-out seed has too few such clips")


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = (predicted | truth).sum()
    return float((predicted & truth).sum() / union) if union else 1.0


def mean_iou(frames: np.ndarray, truth: np.ndarray) -> float:
    masks = subject_probabilities(frames) > MASK_THRESHOLD
    return float(np.mean([iou(p, t) for p, t in zip(masks, truth, strict=True)]))


def test_shipped_network_is_small_and_matches_its_manifest():
    verify_manifest(SUBJECT_MASK_DIR, what="subject-mask network", retrain="scripts/train_subject_mask.py")
    files = [p for p in SUBJECT_MASK_DIR.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {WEIGHTS_NAME, "config.json", MANIFEST_NAME}
    assert sum(p.stat().st_size for p in files) <= MAX_NETWORK_BYTES


@pytest.mark.parametrize(
    ("kind", "predicate"),
    [
        ("camera moves", lambda spec: spec.camera != "static"),
        ("subject in depth", lambda spec: spec.motion == "depth" and spec.camera == "static"),
        ("subject stands still", lambda spec: spec.motion == "still"),
        ("grey blockout", lambda spec: spec.background == "blockout"),
    ],
)
def test_the_subject_of_unseen_clips_is_found(kind, predicate):
    clips = first_clips(predicate, 3)
    assert np.mean([mean_iou(clip.frames, clip.masks) for clip in clips]) >= 0.7, kind


def test_colour_and_class_are_read_from_the_subject_under_a_panning_camera():
    """Under a pan the whole set moves: the moving region is wherever the set changes, the network's is the subject."""
    clips = first_clips(lambda s: s.camera.startswith("pan") and s.background != "blockout" and s.motion == "still", 3)
    settings = network_region_settings()
    for clip in clips:
        regions = segment_subject(clip.frames)
        colour = colour_adherence(clip.frames, None, clip.spec.colour, regions, settings)
        assert colour["value"] >= 0.9, (clip.caption, colour["per_frame"])
        shape = class_adherence(clip.frames, None, clip.spec.subject, regions, settings)
        assert shape["value"] >= 0.75, (clip.caption, shape["per_frame"])
    moving = [colour_adherence(c.frames, colour=c.spec.colour) for c in clips]  # the moving region, by default
    assert np.mean([entry["value"] for entry in moving]) < 0.9  # why the network is needed


def test_frames_of_another_size_or_shape_get_masks_of_their_own_size():
    clips = first_clips(lambda spec: spec.camera == "static" and spec.motion != "depth", 3, size=128)
    assert np.mean([mean_iou(clip.frames, clip.masks) for clip in clips]) >= 0.7
    # A wide frame: the 128 x 128 clips cut to 72 x 128 around the subject, read without being squashed.
    wide = []
    for clip in clips:
        top = int(np.clip(clip.centres[:, 1].mean() - 36, 0, 128 - 72))
        frames, masks = clip.frames[:, top : top + 72], clip.masks[:, top : top + 72]
        assert subject_probabilities(frames).shape == masks.shape
        wide.append(mean_iou(frames, masks))
    assert np.mean(wide) >= 0.7


def test_scenes_without_a_subject_have_no_region_in_most_frames():
    """A frame in which a model drew no subject must not lend the colour of some patch of the scene."""
    scenes = np.concatenate([render_scene(spec_at(HELD_OUT_SEED, index), size=64)[::5] for index in range(16)])
    regions = segment_subject(scenes)
    assert sum(region is not None for region in regions) <= 0.1 * len(regions)


@pytest.mark.parametrize(
    ("frames", "message"),
    [(np.zeros((4, 64, 64), dtype=np.uint8), r"\(4, 64, 64\) uint8"), (np.zeros((4, 64, 64, 3)), "float64")],
)
def test_frames_must_be_rgb_bytes(frames, message):
    with pytest.raises(ParameterError, match=f"`frames`.*{message}"):
        subject_probabilities(frames)


def test_a_changed_weights_file_is_refused_naming_the_network_and_its_script(tmp_path):
    copy = tmp_path / "subject_mask"
    shutil.copytree(SUBJECT_MASK_DIR, copy)
    weights = copy / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # always another byte
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match=r"subject-mask network file .*scripts/train_subject_mask\.py"):
        load_subject_mask_net(copy)
