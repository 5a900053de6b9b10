"""An offline CLIP tokenizer for the tiny preset: byte-level vocabulary, no merges. No bpy.

Every character becomes one token. That is enough for shapes and control flow in tests and demos, and it needs no
download.
"""

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77


def byte_level_alphabet() -> list[str]:
    """The 256 printable characters GPT-2 and CLIP use to stand for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {byte: chr(byte) for byte in printable}
    next_code = 256
    for byte in range(256):
        if byte not in alphabet:
            alphabet[byte] = chr(next_code)
            next_code += 1
    return [alphabet[byte] for byte in range(256)]


def build_offline_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with 514 ids: 256 byte characters, the same with `</w>`, then BOS and EOS."""
    alphabet = byte_level_alphabet()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
    )
