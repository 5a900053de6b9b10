"""CLIP text alignment and temporal consistency: "not measured" without a checkpoint, finite with a tiny one."""

import numpy as np
import pytest

from motionclone.backend.errors import ModelNotFoundError
from motionclone.backend.evaluation.clip_metrics import NO_CHECKPOINT, clip_scores

from .synthetic import subject_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised CLIPModel with an offline tokenizer and image processor, saved like a real one."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from motionclone.backend.models.tokenizer import build_offline_clip_tokenizer

    tokenizer = build_offline_clip_tokenizer()
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_without_a_checkpoint_both_metrics_are_not_measured():
    scores = clip_scores(subject_clip("disc", (210, 30, 30)), "a red ball", None)
    for name in ("clip_text_alignment", "clip_temporal_consistency"):
        entry = scores[name]
        assert (entry["value"], entry["status"], entry["reason"]) == (None, "not measured", NO_CHECKPOINT)
        assert "cos(image embedding" in entry["method"] and entry["cosine"] == "raw cosine in [-1, 1]"
        assert entry["model"] is None
    assert scores["clip_text_alignment"]["method"] != scores["clip_temporal_consistency"]["method"]


def test_a_tiny_random_clip_gives_finite_cosines(tiny_clip):
    frames = subject_clip("disc", (210, 30, 30), num_frames=6)
    scores = clip_scores(frames, "a red ball bouncing", tiny_clip, batch_size=4)
    alignment, consistency = scores["clip_text_alignment"], scores["clip_temporal_consistency"]
    assert alignment["status"] == consistency["status"] == "measured"
    for value in (alignment["value"], consistency["value"]):
        assert np.isfinite(value) and -1.0 <= value <= 1.0
    assert alignment["frames"] == 6 and consistency["pairs"] == 5
    # identical frames have identical embeddings: consistency exactly 1
    still = clip_scores(np.repeat(frames[:1], 3, axis=0), None, tiny_clip)
    assert still["clip_temporal_consistency"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert still["clip_text_alignment"]["status"] == "not measured"
    # Measured or not, an entry has the same settings: the folder it used and the cosine's form.
    for entry in (*still.values(), *scores.values()):
        assert entry["model"] == str(tiny_clip) and entry["cosine"] == "raw cosine in [-1, 1]"


def test_a_missing_checkpoint_folder_is_a_model_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        clip_scores(subject_clip("disc", (210, 30, 30), num_frames=2), "a ball", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="could not load"):
        clip_scores(subject_clip("disc", (210, 30, 30), num_frames=2), "a ball", tmp_path / "empty")
