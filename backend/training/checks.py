"""Checks that gate each training stage: did it learn what the next stage builds on? No bpy.

- after the VAE: the subject's mean colour survives reconstruction (within `COLOUR_TOLERANCE` on a 0-1 scale);
- after the image model: the caption steers the picture: its loss beats mismatched captions, and swapping the colour
  word in a caption swaps the colour of the picture;
- after the motion modules: unguided clips are coherent: frame-to-frame change far below that of independent frames;
- after the cross-attention stage: each of the ten colour words draws its own colour more than any other word does.

Each check returns a `CheckResult` with the numbers it measured; the trainer stops when one fails.
"""

import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..models.bundle import official_ddim_scheduler
from .data import COLOURS
from .sampling import decode_frames, encode_text, sample_latents
from .stages import frames_to_tensor

COLOUR_TOLERANCE = 0.05
TEXT_LOSS_MARGIN = 0.97  # matched-caption loss must be below this fraction of the mismatched-caption loss
COLOUR_SWAP_ACCURACY = 0.75
FLICKER_RATIO = 0.6  # motion model's frame-to-frame change / independent frames' change
SWAPPABLE_COLOURS = ("red", "blue", "yellow", "purple", "orange", "pink")
# Share of the ten colour words that must draw their own colour more than any other word does; the model before the
# cross-attention stage manages 0.3 (green, purple, pink and grey come out as black, blue or pale).
COLOUR_WORDS_DRAWN = 0.6
COLOUR_WORDS_CAPTION = "a {colour} cube sliding closer on desert sand"
COLOUR_WORDS_CFG_SCALE = 4.0  # the `blocks` config's scale, which the product samples with
FALLBACK_SWAP_CAPTION = "a red ball rolling right on the grass"


def with_articles(caption: str) -> str:
    """`caption` with "a" and "an" as the training captions use them: "an" before a vowel ("an orange cube")."""
    caption = re.sub(r"\ba (?=[aeiou])", "an ", caption)
    return re.sub(r"\ban (?=[^aeiou\s])", "a ", caption)


@dataclass
class CheckResult:
    name: str
    passed: bool
    measured: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        values = ", ".join(f"{key} {value:.4g}" for key, value in self.measured.items())
        return f"{self.name}: {'passed' if self.passed else 'FAILED'} ({values})"


@torch.no_grad()
def check_vae_colours(vae: AutoencoderKL, frames: np.ndarray, masks: np.ndarray, count: int = 64) -> CheckResult:
    """Mean absolute error of the subject's mean colour after reconstruction, over `count` frames."""
    rng = np.random.default_rng(7)
    clips = rng.integers(0, frames.shape[0], count)
    frame_ids = rng.integers(0, frames.shape[1], count)
    x = frames_to_tensor(frames[clips, frame_ids], str(vae.device))
    reconstruction = vae.decode(vae.encode(x).latent_dist.mean).sample
    errors, psnr = [], []
    for index in range(count):
        mask = torch.from_numpy(masks[clips[index], frame_ids[index]]).bool().to(x.device)
        if mask.sum() < 12:
            continue
        original = (x[index][:, mask].mean(dim=1) + 1) / 2
        rebuilt = (reconstruction[index].clamp(-1, 1)[:, mask].mean(dim=1) + 1) / 2
        errors.append(float((original - rebuilt).abs().max()))
    mse = F.mse_loss((reconstruction.clamp(-1, 1) + 1) / 2, (x + 1) / 2, reduction="none").mean(dim=(1, 2, 3))
    psnr = float((10 * torch.log10(1 / mse)).mean())
    error = float(np.mean(errors))
    return CheckResult("VAE subject colour", error <= COLOUR_TOLERANCE, {"colour_error": error, "psnr_db": psnr})


@torch.no_grad()
def check_text_conditioning(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    vae: AutoencoderKL,
    latents: np.ndarray,
    captions: list[str],
    scaling_factor: float,
    pairs: int = 6,
) -> CheckResult:
    """Matched vs mismatched caption loss, and colour-swap accuracy of sampled frames."""
    scheduler = official_ddim_scheduler()
    generator = torch.Generator().manual_seed(11)
    count = 64
    clips = torch.randint(0, latents.shape[0], (count,), generator=generator).numpy()
    z0 = torch.from_numpy(latents[clips, 0]).float().to(unet.device) * scaling_factor
    t = torch.randint(200, 800, (count,), generator=generator).to(unet.device)
    epsilon = torch.randn(z0.shape, generator=generator).to(unet.device)
    x_t = scheduler.add_noise(z0, epsilon, t)
    matched = [captions[i] for i in clips]
    mismatched = matched[1:] + matched[:1]
    losses = {}
    for name, text in (("matched", matched), ("mismatched", mismatched)):
        losses[name] = float(F.mse_loss(unet(x_t, t, encode_text(text_encoder, tokenizer, text)).sample, epsilon))

    accuracy = colour_swap_accuracy(unet, text_encoder, tokenizer, vae, captions, pairs)
    passed = losses["matched"] < TEXT_LOSS_MARGIN * losses["mismatched"] and accuracy >= COLOUR_SWAP_ACCURACY
    measured = {**{f"loss_{k}": v for k, v in losses.items()}, "colour_swap_accuracy": accuracy}
    return CheckResult("image model follows the caption", passed, measured)


def colour_share(images: np.ndarray, colour: str, radius: float = 70.0) -> np.ndarray:
    """Fraction of pixels within `radius` (RGB, 0-255) of the named colour, per image."""
    distance = np.linalg.norm(images.astype(np.float32) - np.array(COLOURS[colour], np.float32), axis=-1)
    return (distance < radius).mean(axis=(1, 2))


def colour_swap_accuracy(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    vae: AutoencoderKL,
    captions: list[str],
    pairs: int,
) -> float:
    """Same noise, captions that differ only in the colour word: does the prompted colour win each time?"""
    rng = np.random.default_rng(5)
    usable = [c for c in captions if c.split()[1] in SWAPPABLE_COLOURS and "night" not in c and "water" not in c]
    usable = usable or [FALLBACK_SWAP_CAPTION]  # a small data set may hold no caption with a swappable colour
    correct = 0
    for pair in range(pairs):
        caption = usable[int(rng.integers(len(usable)))]
        first = caption.split()[1]
        second = next(c for c in rng.permutation(SWAPPABLE_COLOURS) if c != first)
        swapped = with_articles(caption.replace(f" {first} ", f" {second} ", 1))
        noise = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(100 + pair)).to(unet.device)
        latents = sample_latents(unet, text_encoder, tokenizer, [caption, swapped], noise.repeat(2, 1, 1, 1))
        images = decode_frames(vae, latents)
        correct += int(colour_share(images[:1], first)[0] > colour_share(images[1:], first)[0])
        correct += int(colour_share(images[1:], second)[0] > colour_share(images[:1], second)[0])
    return correct / (2 * pairs)


def flicker(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (0-1 scale), for uint8 (F, H, W, 3)."""
    return float(np.abs(np.diff(frames.astype(np.float32) / 255, axis=0)).mean())


@torch.no_grad()
def check_motion_coherence(
    unet: UNetMotionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    vae: AutoencoderKL,
    captions: list[str],
    clips: int = 2,
    frames: int = 16,
) -> CheckResult:
    """Frame-to-frame change of unguided clips, against the same model with its motion modules switched off."""
    rng = np.random.default_rng(9)
    chosen = [captions[int(i)] for i in rng.integers(0, len(captions), clips)]
    noise = torch.randn((clips, 4, frames, 32, 32), generator=torch.Generator().manual_seed(3)).to(unet.device)
    results = {}
    for name, scale in (("motion", 1.0), ("independent", 0.0)):
        with motion_modules_scaled(unet, scale):
            latents = sample_latents(unet, text_encoder, tokenizer, chosen, noise, steps=15)
        values = []
        for clip in latents:
            values.append(flicker(decode_frames(vae, clip.permute(1, 0, 2, 3))))
        results[name] = float(np.mean(values))
    ratio = results["motion"] / max(results["independent"], 1e-6)
    measured = {"flicker_motion": results["motion"], "flicker_independent": results["independent"], "ratio": ratio}
    return CheckResult("motion modules make coherent clips", ratio <= FLICKER_RATIO, measured)


@torch.no_grad()
def colour_word_frames(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    vae: AutoencoderKL,
    caption: str = COLOUR_WORDS_CAPTION,
    cfg_scale: float = COLOUR_WORDS_CFG_SCALE,
    samples: int = 6,
    seed: int = 3,
) -> dict[str, np.ndarray]:
    """Single frames of `caption` (with `{colour}`) under each of the ten colour words, from the same noises."""
    noise = torch.randn((samples, 4, 32, 32), generator=torch.Generator().manual_seed(seed)).to(unet.device)
    frames = {}
    for word in COLOURS:
        captions = [with_articles(caption.format(colour=word))] * samples  # "an orange", as the captions say
        frames[word] = decode_frames(vae, sample_latents(unet, text_encoder, tokenizer, captions, noise, 20, cfg_scale))
    return frames


def colour_words_drawn(frames: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """The words whose own colour covers more pixels under them than under any other word (a tie is no win), and
    the share matrix behind it: [word, colour], in the order of `COLOURS`."""
    names = list(COLOURS)
    shares = np.array([[float(np.mean(colour_share(frames[word], colour))) for colour in names] for word in names])
    drawn = [
        word for index, word in enumerate(names) if shares[index, index] > np.delete(shares[:, index], index).max()
    ]
    return drawn, shares


def check_colour_words(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    vae: AutoencoderKL,
    samples: int = 6,
) -> CheckResult:
    """Sample one caption with each colour word from the same noises (single frames, CFG 4) and measure each colour's
    pixel share under every word: a word passes when the share of its own colour is higher under it than under any
    other word. The colour-swap check of the image stage tries six colours in pairs; this one asks all ten at once,
    the dark and pale ones (green, purple, pink, grey) included, which a model drawing colours too faint or too dark
    confuses with their neighbours."""
    drawn, shares = colour_words_drawn(colour_word_frames(unet, text_encoder, tokenizer, vae, samples=samples))
    share_drawn = len(drawn) / len(COLOURS)
    measured = {"colour_words_drawn": share_drawn, "own_colour_share": float(np.diag(shares).mean())}
    return CheckResult("each colour word draws its colour", share_drawn >= COLOUR_WORDS_DRAWN, measured)


class motion_modules_scaled:
    """Temporarily scale the output projection of every motion module (0 switches them off)."""

    def __init__(self, unet: UNetMotionModel, scale: float) -> None:
        self.layers = [m for n, m in unet.named_modules() if n.endswith("proj_out") and "motion_modules" in n]
        self.scale = scale
        self.saved: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def __enter__(self) -> None:
        for layer in self.layers:
            self.saved.append((layer.weight.data.clone(), None if layer.bias is None else layer.bias.data.clone()))
            layer.weight.data.mul_(self.scale)
            if layer.bias is not None:
                layer.bias.data.mul_(self.scale)

    def __exit__(self, *exc: object) -> None:
        for layer, (weight, bias) in zip(self.layers, self.saved, strict=True):
            layer.weight.data.copy_(weight)
            if bias is not None:
                layer.bias.data.copy_(bias)
