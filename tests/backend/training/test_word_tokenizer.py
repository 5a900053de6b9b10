"""The blocks model's word-level CLIP tokenizer: every caption word is one token, other text still tokenizes."""

from motionclone.backend.training.data import caption_words
from motionclone.backend.training.word_tokenizer import apply_merges, load_word_tokenizer, save_word_tokenizer


def test_every_caption_word_is_one_token(tmp_path):
    tokenizer = load_word_tokenizer(save_word_tokenizer(caption_words(), tmp_path))
    for word in caption_words():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert tokenizer.convert_ids_to_tokens(ids) == [f"{word}</w>"], word


def test_unknown_words_fall_back_to_characters(tmp_path):
    tokenizer = load_word_tokenizer(save_word_tokenizer(caption_words(), tmp_path))
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a red fox", add_special_tokens=False).input_ids)
    assert tokens[:2] == ["a</w>", "red</w>"]
    assert "".join(tokens[2:]) == "fox</w>"
    assert len(tokens) > 3


def test_a_merge_from_another_word_does_not_split_a_word():
    # "in" would fire inside "panning" before panning's own chain; the repair merges must still join it.
    from motionclone.backend.training.word_tokenizer import word_merges

    _, merges = word_merges(["into", "panning", "in"])
    assert apply_merges("panning", merges) == ["panning</w>"]
    assert apply_merges("into", merges) == ["into</w>"]
