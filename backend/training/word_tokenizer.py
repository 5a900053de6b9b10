"""A word-level CLIP tokenizer for the `blocks` model, built offline from the captions' vocabulary. No bpy.

CLIP's tokenizer is byte-pair encoding over byte-level characters. Its vocabulary here is the 256 characters (and
the same with the end-of-word mark `</w>`), plus one merge chain per caption word, so that every word the caption
grammar can produce becomes a single token while any other text still tokenizes, character by character.
"""

import itertools
import json
from pathlib import Path

from transformers import CLIPTokenizer

from ..models.tokenizer import BOS_TOKEN, EOS_TOKEN, MODEL_MAX_LENGTH, byte_level_alphabet

END_OF_WORD = "</w>"


def word_merges(words: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The new tokens and merges that make each of `words` one token.

    Each word first gets a left-to-right chain ("red": ("r", "e") -> "re", ("re", "d</w>") -> "red</w>"). A merge
    from another word's chain can fire first and split a word ("in" inside "panning"); such a word gets merges
    appended that join the pieces BPE actually produces, until every word comes out whole.
    """
    merges: list[tuple[str, str]] = []
    for word in sorted(set(words)):
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        for right in symbols[1:]:
            merges.append((symbols[0], right))
            symbols[0] += right
    merges = list(dict.fromkeys(merges))
    for _ in range(len(words) + 1):
        split = [pieces for pieces in (apply_merges(word, merges) for word in sorted(set(words))) if len(pieces) > 1]
        if not split:
            break
        for pieces in split:
            left = pieces[0]
            for right in pieces[1:]:
                if (left, right) not in merges:
                    merges.append((left, right))
                left += right
    tokens = list(dict.fromkeys(left + right for left, right in merges))
    return tokens, merges


def apply_merges(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly join the adjacent pair whose merge comes first in `merges`."""
    rank = {pair: index for index, pair in enumerate(merges)}
    pieces = [*word[:-1], word[-1] + END_OF_WORD]
    while len(pieces) > 1:
        pairs = [(rank.get((a, b), len(rank)), i) for i, (a, b) in enumerate(itertools.pairwise(pieces))]
        best, index = min(pairs)
        if best == len(rank):
            break
        pieces[index : index + 2] = [pieces[index] + pieces[index + 1]]
    return pieces


def save_word_tokenizer(words: list[str], folder: str | Path) -> Path:
    """Write `vocab.json`, `merges.txt` and the tokenizer configs of a CLIP tokenizer for `words` into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = byte_level_alphabet()
    new_tokens, merges = word_merges([word.lower() for word in words])
    tokens = alphabet + [symbol + END_OF_WORD for symbol in alphabet] + new_tokens + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    merge_lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (folder / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return folder


def load_word_tokenizer(folder: str | Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
