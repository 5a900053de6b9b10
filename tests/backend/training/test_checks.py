"""Pieces of the training gates: the flicker measure, switching motion modules off and back on, the colour words."""

import numpy as np
import torch

from motionclone.backend.models.bundle import build_motion_unet
from motionclone.backend.models.tiny import build_tiny_components
from motionclone.backend.training import checks
from motionclone.backend.training.checks import colour_share, flicker, motion_modules_scaled
from motionclone.backend.training.data import COLOURS


def test_flicker_is_zero_for_a_still_clip_and_grows_with_change():
    still = np.full((4, 8, 8, 3), 100, np.uint8)
    changing = still.copy()
    changing[1::2] = 200
    assert flicker(still) == 0.0
    assert flicker(changing) == np.float32(100 / 255)


def test_colour_share_counts_pixels_near_the_named_colour():
    images = np.zeros((1, 4, 4, 3), np.uint8)
    images[0, :2] = (210, 40, 40)  # the palette's red
    assert colour_share(images, "red")[0] == 0.5
    assert colour_share(images, "blue")[0] == 0.0


def test_scaling_motion_modules_to_zero_removes_them_and_restores_the_weights():
    unet2d, adapter, _, _ = build_tiny_components(seed=4)
    unet = build_motion_unet(unet2d, adapter)
    for name, parameter in unet.named_parameters():
        if "motion_modules" in name and "proj_out" in name:
            torch.nn.init.normal_(parameter)  # zero-initialised in a fresh adapter; make them matter
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    x = torch.randn(1, 4, 4, 8, 8)
    embeddings = torch.randn(4, 77, 32)
    with torch.no_grad():
        with_modules = unet(x, 10, embeddings).sample
        with motion_modules_scaled(unet, 0.0):
            assert all(layer.weight.abs().sum() == 0 for layer in motion_modules_scaled(unet, 1.0).layers)
            without = unet(x, 10, embeddings).sample
    assert not torch.allclose(with_modules, without)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def drawing(monkeypatch, drawn_as: dict[str, str]) -> None:
    """Stand in for sampling and decoding: each caption's frames show its colour word's colour, or the colour
    `drawn_as` names instead, on a quarter of the pixels over sand."""

    def sample(unet, text_encoder, tokenizer, captions, noise, steps, cfg_scale):
        return captions

    def decode(vae, captions):
        images = np.full((len(captions), 8, 8, 3), (200, 170, 120), np.uint8)
        for index, caption in enumerate(captions):
            word = caption.split()[1]
            images[index, :2] = COLOURS[drawn_as.get(word, word)]
        return images

    monkeypatch.setattr(checks, "sample_latents", sample)
    monkeypatch.setattr(checks, "decode_frames", decode)


def test_the_colour_words_check_passes_a_model_that_draws_every_colour_word(monkeypatch):
    drawing(monkeypatch, {})
    result = checks.check_colour_words(build_tiny_components(seed=0)[0], None, None, None, samples=2)
    assert result.passed and result.measured["colour_words_drawn"] == 1.0


def test_the_colour_words_check_fails_a_model_that_draws_green_black_purple_blue_and_pink_white(monkeypatch):
    drawing(monkeypatch, {"green": "black", "purple": "blue", "pink": "white"})
    result = checks.check_colour_words(build_tiny_components(seed=0)[0], None, None, None, samples=2)
    # green, purple and pink fail; black, blue and white no longer win their own colour outright either (a tie is
    # no win)
    assert result.measured["colour_words_drawn"] == 0.4
    assert not result.passed


def test_the_colour_words_check_prompts_its_captions_as_the_training_data_writes_them(monkeypatch):
    prompted = []
    drawing(monkeypatch, {})
    monkeypatch.setattr(
        checks, "sample_latents", lambda unet, te, tok, captions, *rest: prompted.extend(captions) or captions
    )
    checks.check_colour_words(build_tiny_components(seed=0)[0], None, None, None, samples=1)
    assert "an orange cube sliding closer on desert sand" in prompted  # "a orange" is in no training caption
    assert "a red cube sliding closer on desert sand" in prompted


def test_articles_follow_the_word_after_them():
    assert (
        checks.with_articles("a orange ball rolling left as a camera pans")
        == "an orange ball rolling left as a camera pans"
    )
    assert checks.with_articles("an red car") == "a red car"
    assert checks.with_articles("an orange car in a pan") == "an orange car in a pan"
