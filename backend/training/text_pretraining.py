"""Teach the text encoder to tell the captions apart before the UNet learns to read it. No bpy.

SD-1.5's UNet was trained against a CLIP text encoder that had already learned what captions mean. A text encoder
trained from scratch together with the UNet has no such head start: while its outputs are nearly the same for every
caption the UNet learns to ignore them, and while the UNet ignores them they get almost no gradient, so the model
never follows the prompt. This stage breaks that loop with a bag-of-words objective: from every output position at or
after the caption's end token (CLIP's attention is causal, so those positions have seen the whole caption) a linear
probe must tell which vocabulary words the caption holds. The probe is then dropped; what stays is a text encoder
whose outputs carry every word of the caption at most of the 77 positions the UNet's cross-attention reads.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer

from .checks import CheckResult
from .stages import EMA, StageSettings, drop_captions, make_optimizer, run_stage, stage_checkpoint, tokenize

WORD_F1_TARGET = 0.95


def caption_words_target(ids: torch.Tensor, tokenizer: CLIPTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """For token ids (B, L): the multi-hot word targets (B, V) and the positions at or after the end token (B, L)."""
    end = tokenizer.eos_token_id
    after_end = (ids == end).cumsum(dim=1) > 0
    words = torch.zeros(ids.shape[0], len(tokenizer), device=ids.device)
    words.scatter_(1, ids, 1.0)
    words[:, [tokenizer.bos_token_id, end]] = 0.0
    return words, after_end


def probe_logits(text_encoder: CLIPTextModel, probe: torch.nn.Linear, ids: torch.Tensor) -> torch.Tensor:
    return probe(text_encoder(ids)[0])  # (B, L, V)


def bag_of_words_loss(
    text_encoder: CLIPTextModel, probe: torch.nn.Linear, tokenizer: CLIPTokenizer, ids: torch.Tensor
) -> torch.Tensor:
    words, after_end = caption_words_target(ids, tokenizer)
    logits = probe_logits(text_encoder, probe, ids)
    targets = words[:, None, :].expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits[after_end], targets[after_end])


def pretrain_text_encoder(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    captions: list[str],
    settings: StageSettings,
    work_dir: Path,
) -> tuple[list[float], torch.nn.Linear]:
    """Train `text_encoder` and a probe on the bag-of-words objective (10 % empty captions); returns the losses and
    the probe, which only the check uses."""
    device = settings.device
    text_encoder.to(device).train()
    probe = torch.nn.Linear(text_encoder.config.hidden_size, len(tokenizer)).to(device)
    parameters = list(text_encoder.parameters()) + list(probe.parameters())
    optimizer = make_optimizer([(parameters, settings.learning_rate)])
    modules = {"text_encoder": text_encoder, "probe": probe}
    reads = (tokenizer.get_vocab(), captions)
    checkpoint = stage_checkpoint(work_dir, "stage2_text", modules, optimizer, EMA(parameters), reads, settings)

    def loss_for_step(step: int) -> torch.Tensor:
        rng = np.random.default_rng([settings.seed, 20, step])
        picked = rng.integers(0, len(captions), settings.batch_size)
        text = drop_captions([captions[i] for i in picked], rng)
        return bag_of_words_loss(text_encoder, probe, tokenizer, tokenize(tokenizer, text, device))

    losses = run_stage("2/5 text encoder", settings, checkpoint, loss_for_step, parameters)
    text_encoder.eval()
    return losses, probe


@torch.no_grad()
def check_text_encoder(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, captions: list[str], probe: torch.nn.Linear
) -> CheckResult:
    """F1 of the words the probe reads back from the last output position, over up to 256 captions."""
    ids = tokenize(tokenizer, captions[:256], str(text_encoder.device))
    words, _ = caption_words_target(ids, tokenizer)
    predicted = (probe_logits(text_encoder, probe, ids)[:, -1] > 0).float()
    true_positives = (predicted * words).sum()
    f1 = float(2 * true_positives / (predicted.sum() + words.sum()).clamp(min=1))
    return CheckResult("text encoder tells the captions apart", f1 >= WORD_F1_TARGET, {"word_f1": f1})
