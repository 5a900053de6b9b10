"""The text-encoder stage: its targets are the caption's words, and a few steps make the words readable."""

import pytest
import torch

from motionclone.backend.training.architecture import build_text_encoder
from motionclone.backend.training.data import caption_words, clip_at
from motionclone.backend.training.stages import StageSettings, tokenize
from motionclone.backend.training.text_pretraining import (
    bag_of_words_loss,
    caption_words_target,
    check_text_encoder,
    pretrain_text_encoder,
)
from motionclone.backend.training.word_tokenizer import load_word_tokenizer, save_word_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_word_tokenizer(save_word_tokenizer(caption_words(), tmp_path_factory.mktemp("tokenizer")))


def test_targets_hold_exactly_the_caption_words_and_positions_start_at_the_end_token(tokenizer) -> None:
    captions = ["a red ball bouncing on the grass", ""]
    ids = tokenize(tokenizer, captions, "cpu")
    words, after_end = caption_words_target(ids, tokenizer)
    expected = set(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(captions[0])))
    assert set(torch.nonzero(words[0]).flatten().tolist()) == expected
    assert words[1].sum() == 0  # the empty caption holds no word
    first_end = int((ids[0] == tokenizer.eos_token_id).nonzero()[0])
    assert first_end == len(expected) + 1  # start token, the words, then the end token
    assert not after_end[0, :first_end].any() and after_end[0, first_end:].all()
    assert after_end[1, 1:].all() and not after_end[1, 0]


def test_a_few_steps_lower_the_loss_and_the_check_reads_the_numbers(tokenizer, tmp_path) -> None:
    captions = [clip_at(4, index, 16, 2).caption for index in range(12)]
    torch.manual_seed(0)
    text_encoder = build_text_encoder(len(tokenizer))
    probe = torch.nn.Linear(text_encoder.config.hidden_size, len(tokenizer))
    ids = tokenize(tokenizer, captions, "cpu")
    with torch.no_grad():
        before = float(bag_of_words_loss(text_encoder, probe, tokenizer, ids))
    settings = StageSettings(steps=60, batch_size=12, learning_rate=3e-3)
    losses, trained_probe = pretrain_text_encoder(text_encoder, tokenizer, captions, settings, tmp_path)
    assert len(losses) == 60 and len(list(tmp_path.glob("stage2_text-*.pt"))) == 1
    with torch.no_grad():
        after = float(bag_of_words_loss(text_encoder, trained_probe, tokenizer, ids))
    assert after < 0.5 * before
    untrained = check_text_encoder(build_text_encoder(len(tokenizer)), tokenizer, captions, probe)
    trained = check_text_encoder(text_encoder, tokenizer, captions, trained_probe)
    assert trained.measured["word_f1"] > untrained.measured["word_f1"]
    assert not untrained.passed
