"""Prompts longer than the text encoder reads.

CLIP reads `model_max_length` tokens (77 in SD-1.5), its start and end tokens included, and the pipeline cuts a
longer prompt there, as diffusers does: the words after the cut change nothing in the result. Saying which words
were left out lets the user shorten the prompt or move what matters to the front.
"""

from typing import Any


def words_left_out(tokenizer: Any, prompt: str) -> tuple[int, str] | None:
    """(token count, the text after the cut) when `prompt` is longer than `tokenizer` reads; None when it fits."""
    ids = tokenizer(prompt, truncation=False, verbose=False).input_ids  # start and end tokens included
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return None
    kept_words = limit - 1  # the start token and the words that fit; the end token takes the last place
    return len(ids), tokenizer.decode(ids[kept_words:-1]).strip()


def long_prompt_warning(field: str, tokenizer: Any, prompt: str) -> str | None:
    """A message naming `field` when its prompt is cut, or None."""
    cut = words_left_out(tokenizer, prompt)
    if cut is None:
        return None
    count, dropped = cut
    return (
        f"`{field}` is {count} tokens long, but the text encoder reads {tokenizer.model_max_length} (start and end "
        f"included), so '{dropped}' was left out: shorten it or put what matters first"
    )
