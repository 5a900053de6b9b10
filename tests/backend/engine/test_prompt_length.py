from motionclone.backend.engine.prompt_length import long_prompt_warning, words_left_out
from motionclone.backend.models.blocks import BLOCKS_MODEL_DIR
from motionclone.backend.training.word_tokenizer import load_word_tokenizer

CAPTION = "a red ball bouncing right on the grass"  # 8 words of the built-in model's vocabulary, a token each


def test_a_prompt_that_fits_is_not_cut():
    tokenizer = load_word_tokenizer(BLOCKS_MODEL_DIR / "tokenizer")
    assert words_left_out(tokenizer, CAPTION) is None
    assert words_left_out(tokenizer, " ".join([CAPTION] * 9) + " a red ball") is None  # 75 words: the limit
    assert long_prompt_warning("prompt", tokenizer, CAPTION) is None


def test_the_words_after_the_text_encoders_length_are_named():
    tokenizer = load_word_tokenizer(BLOCKS_MODEL_DIR / "tokenizer")
    prompt = " ".join([CAPTION] * 9) + " a red ball in the snow"  # 78 words: the last three are cut
    assert words_left_out(tokenizer, prompt) == (80, "in the snow")
    warning = long_prompt_warning("negative_prompt", tokenizer, prompt)
    assert warning is not None and warning.startswith("`negative_prompt` is 80 tokens long")
    assert "'in the snow' was left out" in warning
