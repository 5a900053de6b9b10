"""The training stages of the `blocks` model, each resumable from its checkpoint. No bpy.

1. `train_vae`: the autoencoder on single frames, with the loss weighted towards the subject so that its colour
   survives (a small subject is a few percent of the pixels and would otherwise be the first thing lost).
2. the text encoder alone (`text_pretraining.py`), so that its outputs tell the captions apart;
3. `train_image_model`: the 2-D UNet and the text encoder together on single frames (epsilon prediction with the
   betas the presets sample with; 10 % empty captions, so classifier-free guidance has an unconditional branch);
4. `train_motion_modules`: the motion modules on 16-frame clips. AnimateDiff freezes everything else, because its
   videos are not the images its image model learned; here they are the same clips, so the recipe may also let the
   image UNet keep learning at a lower rate (`spatial_learning_rate`), which costs little more per step;
5. `train_cross_attention`: only the keys and values that the image UNet's cross-attention computes from the text,
   on single frames with the subject weighted, so that each colour word draws its subject at that colour's strength.

Both UNet stages weight the loss by Min-SNR-5 (Hang et al., 2023): min(SNR_t, 5) / SNR_t, which stops the nearly
noise-free timesteps (large, hard to lower, and of little use to the picture) from dominating the gradient.

Each stage keeps an exponential moving average of the weights it trains; the average is what gets exported.
"""

import hashlib
import json
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from ..models.bundle import build_motion_unet, official_ddim_scheduler

SUBJECT_LOSS_WEIGHT = 9.0  # extra weight of subject pixels in the VAE loss
KL_WEIGHT = 1e-6
CAPTION_DROPOUT = 0.1
EMA_DECAY = 0.995
MIN_SNR_GAMMA = 5.0
CHECKPOINT_EVERY = 100


@dataclass
class StageSettings:
    """How long and how hard one stage trains."""

    steps: int
    batch_size: int
    learning_rate: float
    device: str = "cpu"
    seed: int = 0
    subject_weight: float = 0.0  # extra weight of the subject's latent positions in the denoising loss ...
    subject_weight_from: int = 0  # ... from this step on (a curriculum: first the scenes, then the subjects)
    spatial_learning_rate: float = 0.0  # motion stage only: the image UNet's own weights (0: frozen, AnimateDiff)
    latent_pool: int = 1  # motion stage only: train on latents average-pooled by this factor (2: a quarter of them)

    def step_recipe(self) -> dict[str, object]:
        """The settings that decide what a step computes. Not the step count (raise it and the stage goes on), the
        learning rates (changeable for the rest of a stage) or the device (a run stopped on one may go on on
        another)."""
        recipe: dict[str, object] = {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "subject_weight": self.subject_weight,
            "subject_weight_from": self.subject_weight_from,
            "trains_spatial_weights": self.spatial_learning_rate > 0,
        }
        if self.latent_pool != 1:  # left out at full resolution, so that those checkpoints keep their names
            recipe["latent_pool"] = self.latent_pool
        return recipe


@dataclass
class EncodedClips:
    """The training clips as the UNet stages see them.

    Attributes:
        latents: VAE posterior means, float16 (N, F, 4, h, w), before scaling.
        captions: one caption per clip.
        scaling_factor: multiplies the latents (SD's 0.18215, measured for this VAE).
        subject_masks: (N, F, h, w) booleans at latent resolution, for the subject weighting; None to train without.
    """

    latents: np.ndarray
    captions: list[str]
    scaling_factor: float
    subject_masks: np.ndarray | None = None


class EMA:
    """Exponential moving average of some parameters, with the usual warm-up of the decay."""

    def __init__(self, parameters: list[torch.nn.Parameter], decay: float = EMA_DECAY) -> None:
        self.parameters = parameters
        self.shadow = [p.detach().clone() for p in parameters]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, parameter in zip(self.shadow, self.parameters, strict=True):
            average.lerp_(parameter.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for average, parameter in zip(self.shadow, self.parameters, strict=True):
            parameter.copy_(average)

    def state_dict(self) -> list[torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: list[torch.Tensor]) -> None:
        # Checkpoints load onto the CPU: the averages go where their parameters are (a GPU run resumed).
        self.shadow = [
            tensor.to(device=parameter.device, dtype=parameter.dtype).clone()
            for tensor, parameter in zip(shadow, self.parameters, strict=True)
        ]


def fingerprint(*parts: object) -> str:
    """The first 12 hex digits of a SHA-256 over `parts`: modules by their weights (in state-dict order), arrays by
    their bytes, anything else by its JSON."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.nn.Module):
            for name, tensor in part.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def clips_parts(clips: "EncodedClips") -> tuple[object, ...]:
    """What a UNet stage reads of the clips, for `stage_checkpoint`."""
    masks = clips.subject_masks if clips.subject_masks is not None else "no subject masks"
    return clips.latents, clips.captions, clips.scaling_factor, masks


def stage_checkpoint(
    work_dir: Path,
    stage: str,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    ema: "EMA",
    reads: tuple[object, ...],
    settings: StageSettings,
) -> "Checkpoint":
    """The checkpoint of `stage`, named by what the stage starts from: the weights it trains, as they are before it,
    everything else its loss reads (`reads`: frozen modules, data) and `settings.step_recipe()`. A work folder
    then never resumes a stage from a checkpoint that began from other weights or data (an earlier stage trained
    longer, another data seed): that stage trains again, in a file of its own."""
    origin = fingerprint(*modules.values(), *reads, settings.step_recipe())
    return Checkpoint(work_dir / f"{stage}-{origin}.pt", modules, optimizer, ema)


class CheckpointUnreadable(RuntimeError):
    """A stage's checkpoint file is damaged."""


class Checkpoint:
    """One stage's resumable state in `path`: model weights, optimizer, EMA, step and random state (loaded with
    weights_only)."""

    def __init__(self, path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer, ema: EMA):
        self.path, self.modules, self.optimizer, self.ema = path, modules, optimizer, ema

    def load(self) -> tuple[int, list[float]]:
        """Restore the saved state; returns (next step, loss history), or (0, []) when nothing was saved."""
        if not self.path.exists():
            return 0, []
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:  # cut short by a full disk, say
            raise CheckpointUnreadable(
                f"The checkpoint {self.path} cannot be read ({error}): delete it, and this stage starts again"
            ) from error
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        # The optimizer's state comes back, but the learning rates are this run's: a rate changed on the command
        # line for the rest of a stage would otherwise be replaced by the saved one.
        rates = [group["initial_lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            group["initial_lr"] = rate
        self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():  # the VAE's sampled latents draw on the device's
            # One state per GPU seen when it was saved; a run resumed with fewer GPUs visible takes the first ones.
            for index, rng_state in enumerate(state["cuda_rng"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(rng_state, device=index)
        return int(state["step"]), [float(value) for value in state["losses"]]

    def save(self, step: int, losses: list[float]) -> None:
        state = {
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "step": step,
            "losses": torch.tensor(losses),
        }
        temporary = self.path.with_suffix(".partial")
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before it replaces the last good checkpoint
        temporary.replace(self.path)


def run_stage(
    name: str,
    settings: StageSettings,
    checkpoint: Checkpoint,
    loss_for_step: Callable[[int], torch.Tensor],
    parameters: list[torch.nn.Parameter],
) -> list[float]:
    """The shared loop: warm-up then cosine learning rate, gradient clipping, EMA, checkpoints, a progress bar."""
    start, losses = checkpoint.load()
    optimizer = checkpoint.optimizer
    warmup = max(1, min(100, settings.steps // 20))
    bar = tqdm(range(start, settings.steps), desc=name, initial=start, total=settings.steps, unit="step")
    for step in bar:
        factor = min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * step / settings.steps))
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        loss = loss_for_step(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        checkpoint.ema.update(step)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if (step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == settings.steps:
            checkpoint.save(step + 1, losses)
    bar.close()
    checkpoint.ema.copy_to_model()
    return losses


def make_optimizer(groups: list[tuple[list[torch.nn.Parameter], float]]) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": lr, "initial_lr": lr} for params, lr in groups], weight_decay=0.01
    )
    return optimizer


def frames_to_tensor(frames: np.ndarray, device: str) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float() / 127.5 - 1.0
    return tensor.movedim(-1, -3)


# --- Stage 1: the autoencoder -----------------------------------------------------------------------------------


def train_vae(
    vae: AutoencoderKL, frames: np.ndarray, masks: np.ndarray, settings: StageSettings, work_dir: Path
) -> list[float]:
    """Train `vae` to reconstruct single frames; `frames` uint8 (N, F, H, W, 3), `masks` (N, F, H, W)."""
    vae.to(settings.device).train()
    parameters = list(vae.parameters())
    optimizer = make_optimizer([(parameters, settings.learning_rate)])
    checkpoint = stage_checkpoint(
        work_dir, "stage1_vae", {"vae": vae}, optimizer, EMA(parameters), (frames, masks), settings
    )

    def loss_for_step(step: int) -> torch.Tensor:
        clip_rng = np.random.default_rng([settings.seed, 1, step])
        clips = clip_rng.integers(0, frames.shape[0], settings.batch_size)
        frame_ids = clip_rng.integers(0, frames.shape[1], settings.batch_size)
        x = frames_to_tensor(frames[clips, frame_ids], settings.device)
        weight = 1.0 + SUBJECT_LOSS_WEIGHT * torch.from_numpy(masks[clips, frame_ids]).to(settings.device).float()
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        error = (reconstruction - x).abs().mean(dim=1)
        return (weight * error).mean() / weight.mean() + KL_WEIGHT * posterior.kl().mean()

    losses = run_stage("1/5 VAE", settings, checkpoint, loss_for_step, parameters)
    vae.eval()
    return losses


@torch.no_grad()
def encode_clips(vae: AutoencoderKL, frames: np.ndarray, device: str, batch: int = 256) -> np.ndarray:
    """Posterior means of every frame, float16 (N, F, 4, h, w), before scaling."""
    flat = frames.reshape(-1, *frames.shape[2:])
    latents = []
    for start in tqdm(range(0, flat.shape[0], batch), desc="encode", unit="batch"):
        x = frames_to_tensor(flat[start : start + batch], device)
        latents.append(vae.encode(x).latent_dist.mean.half().cpu())
    stacked = torch.cat(latents).numpy()
    return stacked.reshape(*frames.shape[:2], *stacked.shape[1:])


def latent_scaling_factor(latents: np.ndarray) -> float:
    """1 / standard deviation of the latents, SD's convention (its 0.18215 was found the same way)."""
    sample = latents[: min(len(latents), 512)].astype(np.float32)
    return float(1.0 / sample.std())


# --- Stage 2: the image model -----------------------------------------------------------------------------------


def latent_subject_masks(masks: np.ndarray, scale_factor: int) -> np.ndarray:
    """Pixel masks (N, F, H, W) -> latent-resolution masks (N, F, H/s, W/s): a position counts if any pixel does."""
    n, f, h, w = masks.shape
    blocks = masks.reshape(n, f, h // scale_factor, scale_factor, w // scale_factor, scale_factor)
    return blocks.any(axis=(3, 5))


def denoising_loss(
    prediction: torch.Tensor,
    epsilon: torch.Tensor,
    subject: torch.Tensor | None,
    weight: float,
    timestep_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between predicted and true noise; with `subject` (1 on the subject's latent positions, broadcastable over
    channels) those positions weigh `1 + weight` times as much, normalised so the loss keeps its scale; with
    `timestep_weights` (one per sample) each sample's error is scaled by its weight."""
    error = (prediction - epsilon) ** 2
    if subject is not None and weight != 0:
        weights = 1.0 + weight * subject
        error = weights * error / weights.expand_as(prediction).mean()
    per_sample = error.flatten(1).mean(dim=1)
    if timestep_weights is not None:
        per_sample = per_sample * timestep_weights
    return per_sample.mean()


def min_snr_weights(scheduler: DDIMScheduler, t: torch.Tensor, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """min(SNR_t, γ) / SNR_t per sample, with SNR_t = ᾱ_t / (1 − ᾱ_t) (epsilon prediction)."""
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


def subject_weights(
    subject_masks: np.ndarray | None, index: object, step: int, settings: StageSettings
) -> torch.Tensor | None:
    """The latent subject masks of this batch with a channel axis, or None before the weighting starts."""
    if subject_masks is None or step < settings.subject_weight_from or settings.subject_weight == 0:
        return None
    return torch.from_numpy(subject_masks[index]).to(settings.device).float().unsqueeze(1)


def tokenize(tokenizer: CLIPTokenizer, captions: list[str], device: str) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


def drop_captions(captions: list[str], rng: np.random.Generator) -> list[str]:
    """Replace a random 10 % of the captions by the empty prompt (the unconditional branch of CFG)."""
    return ["" if rng.random() < CAPTION_DROPOUT else caption for caption in captions]


def noised(
    scheduler: DDIMScheduler, z0: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε for one uniform t per sample; returns (x_t, t, ε)."""
    batch = z0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator).to(z0.device)
    epsilon = torch.randn(z0.shape, generator=generator).to(z0.device)
    return scheduler.add_noise(z0, epsilon, t), t, epsilon


def single_frame_loss(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clips: EncodedClips,
    settings: StageSettings,
    scheduler: DDIMScheduler,
    stage: int,
    step: int,
) -> torch.Tensor:
    """The weighted denoising loss of the 2-D UNet on one batch of single frames, whose frames, timesteps, noise and
    dropped captions are drawn from (seed, stage, step). Gradients reach whatever of the UNet and the text encoder
    requires them."""
    rng = np.random.default_rng([settings.seed, stage, step])
    picked = rng.integers(0, clips.latents.shape[0], settings.batch_size)
    frame_ids = rng.integers(0, clips.latents.shape[1], settings.batch_size)
    z0 = torch.from_numpy(clips.latents[picked, frame_ids]).to(settings.device).float() * clips.scaling_factor
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    x_t, t, epsilon = noised(scheduler, z0, generator)
    text = drop_captions([clips.captions[i] for i in picked], rng)
    embeddings = text_encoder(tokenize(tokenizer, text, settings.device))[0]
    subject = subject_weights(clips.subject_masks, (picked, frame_ids), step, settings)
    prediction = unet(x_t, t, embeddings).sample
    return denoising_loss(prediction, epsilon, subject, settings.subject_weight, min_snr_weights(scheduler, t))


def train_image_model(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clips: EncodedClips,
    settings: StageSettings,
    work_dir: Path,
) -> list[float]:
    """Train the 2-D UNet and the text encoder on single frames of the encoded clips."""
    device = settings.device
    unet.to(device).train()
    text_encoder.to(device).train()
    scheduler = official_ddim_scheduler()
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = make_optimizer([(parameters, settings.learning_rate)])
    modules = {"unet": unet, "text_encoder": text_encoder}
    reads = (tokenizer.get_vocab(), *clips_parts(clips))
    checkpoint = stage_checkpoint(work_dir, "stage3_image", modules, optimizer, EMA(parameters), reads, settings)

    def loss_for_step(step: int) -> torch.Tensor:
        return single_frame_loss(unet, text_encoder, tokenizer, clips, settings, scheduler, stage=2, step=step)

    losses = run_stage("3/5 image UNet + text", settings, checkpoint, loss_for_step, parameters)
    unet.eval()
    text_encoder.eval()
    return losses


# --- Stage 4: the motion modules --------------------------------------------------------------------------------


def motion_parameters(unet: UNetMotionModel) -> list[torch.nn.Parameter]:
    return [parameter for name, parameter in unet.named_parameters() if "motion_modules" in name]


def spatial_parameters(unet: UNetMotionModel) -> list[torch.nn.Parameter]:
    """The image UNet's own weights inside the inflated UNet."""
    return [parameter for name, parameter in unet.named_parameters() if "motion_modules" not in name]


def pooled_clips(clips: EncodedClips, factor: int) -> EncodedClips:
    """The clips at 1/`factor` of the latent side: each latent the mean of `factor` x `factor` of them, a subject
    position wherever one of those was. The same content, coarser: a quarter of the positions for a factor of 2."""
    if factor == 1:
        return clips
    n, f, c, h, w = clips.latents.shape
    blocks = clips.latents.astype(np.float32).reshape(n, f, c, h // factor, factor, w // factor, factor)
    latents = blocks.mean(axis=(4, 6)).astype(np.float16)
    masks = None if clips.subject_masks is None else latent_subject_masks(clips.subject_masks, factor)
    return EncodedClips(latents, clips.captions, clips.scaling_factor, masks)


def train_motion_modules(
    unet2d: UNet2DConditionModel,
    motion_adapter: MotionAdapter,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clips: EncodedClips,
    settings: StageSettings,
    work_dir: Path,
) -> tuple[UNetMotionModel, list[float]]:
    """Inflate the trained 2-D UNet with `motion_adapter` and train it on whole clips: the motion modules, and the
    image UNet's own weights too when `settings.spatial_learning_rate` is above 0 (`extract_image_unet` copies them
    back). The text encoder stays frozen. With `settings.latent_pool` above 1 the clips are pooled first
    (`pooled_clips`): the motion modules, which attend along time at each position whatever the resolution, learn
    from several times as many clips in the same time."""
    device = settings.device
    clips = pooled_clips(clips, settings.latent_pool)
    unet = build_motion_unet(unet2d, motion_adapter).to(device).train()
    unet.requires_grad_(False)
    text_encoder.to(device).eval().requires_grad_(False)
    groups = [(motion_parameters(unet), settings.learning_rate)]
    if settings.spatial_learning_rate > 0:
        groups.append((spatial_parameters(unet), settings.spatial_learning_rate))
    parameters = [parameter for group, _ in groups for parameter in group]
    for parameter in parameters:
        parameter.requires_grad_(True)
    scheduler = official_ddim_scheduler()
    optimizer = make_optimizer(groups)
    reads = (text_encoder, tokenizer.get_vocab(), *clips_parts(clips))
    checkpoint = stage_checkpoint(
        work_dir, "stage4_motion", {"unet": unet}, optimizer, EMA(parameters), reads, settings
    )
    num_frames = clips.latents.shape[1]

    def loss_for_step(step: int) -> torch.Tensor:
        rng = np.random.default_rng([settings.seed, 3, step])
        picked = rng.integers(0, clips.latents.shape[0], settings.batch_size)
        z0 = torch.from_numpy(clips.latents[picked]).to(device).float() * clips.scaling_factor  # (B, F, C, h, w)
        z0 = z0.permute(0, 2, 1, 3, 4)  # UNetMotionModel takes (B, C, F, h, w)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x_t, t, epsilon = noised(scheduler, z0, generator)
        with torch.no_grad():
            text = drop_captions([clips.captions[i] for i in picked], rng)
            embeddings = text_encoder(tokenize(tokenizer, text, device))[0]
        embeddings = embeddings.repeat_interleave(num_frames, dim=0)
        subject = subject_weights(clips.subject_masks, picked, step, settings)  # (B, 1, F, h, w)
        prediction = unet(x_t, t, embeddings).sample
        return denoising_loss(prediction, epsilon, subject, settings.subject_weight, min_snr_weights(scheduler, t))

    name = "4/5 motion modules" + (f" at 1/{settings.latent_pool} resolution" if settings.latent_pool > 1 else "")
    losses = run_stage(name, settings, checkpoint, loss_for_step, parameters)
    unet.eval()
    return unet, losses


def train_motion_coarse_to_fine(
    unet2d: UNet2DConditionModel,
    motion_adapter: MotionAdapter,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clips: EncodedClips,
    coarse: StageSettings,
    fine: StageSettings,
    work_dir: Path,
) -> tuple[UNetMotionModel, dict[str, list[float]]]:
    """The motion stage in two parts: `coarse` on pooled latents first (when it has steps), its weights handed back
    to `unet2d` and `motion_adapter`, then `fine` at the model's own resolution, where the motion modules learn the
    positions they will run at. Returns the last part's inflated UNet and the losses of each part that ran
    (`motion_low_res`, `motion`)."""
    losses: dict[str, list[float]] = {}
    unet = None
    if coarse.steps > 0:
        unet, losses["motion_low_res"] = train_motion_modules(
            unet2d, motion_adapter, text_encoder, tokenizer, clips, coarse, work_dir
        )
        extract_motion_adapter(unet, motion_adapter)
        extract_image_unet(unet, unet2d)
    if fine.steps > 0 or unet is None:
        unet, losses["motion"] = train_motion_modules(
            unet2d, motion_adapter, text_encoder, tokenizer, clips, fine, work_dir
        )
    return unet, losses


def extract_motion_adapter(unet: UNetMotionModel, motion_adapter: MotionAdapter) -> MotionAdapter:
    """Copy the trained motion modules of `unet` back into `motion_adapter` (same key names)."""
    weights = {name: tensor for name, tensor in unet.state_dict().items() if "motion_modules" in name}
    motion_adapter.load_state_dict(weights, strict=True)
    return motion_adapter


def extract_image_unet(unet: UNetMotionModel, unet2d: UNet2DConditionModel) -> UNet2DConditionModel:
    """Copy the image weights of `unet` back into `unet2d` (the inflated UNet keeps the 2-D model's key names)."""
    weights = {name: tensor for name, tensor in unet.state_dict().items() if "motion_modules" not in name}
    unet2d.load_state_dict(weights, strict=True)
    return unet2d


# --- Stage 5: the cross-attention's keys and values --------------------------------------------------------------


def cross_attention_text_parameters(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    """The projections that turn the text embeddings into the cross-attention's keys and values (`attn2`)."""
    return [
        parameter for name, parameter in unet.named_parameters() if ".attn2.to_k." in name or ".attn2.to_v." in name
    ]


def train_cross_attention(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clips: EncodedClips,
    settings: StageSettings,
    work_dir: Path,
) -> list[float]:
    """Train only the cross-attention's keys and values of the 2-D UNet on single frames; everything else is frozen.

    After the motion stage the conditional model still draws its subject faintly, and classifier-free guidance
    stretches that faint subject along its colour's direction in the latent space, past the colour's own length:
    green came out black and purple blue. The keys and values are where a caption's words become what the UNet
    draws, so training them alone, with the subject's positions weighted, makes the prompt's colour hold without
    moving the weights that the motion modules were trained with. The text encoder stays frozen.
    """
    device = settings.device
    unet.to(device).train().requires_grad_(False)
    text_encoder.to(device).eval().requires_grad_(False)
    parameters = cross_attention_text_parameters(unet)
    for parameter in parameters:
        parameter.requires_grad_(True)
    scheduler = official_ddim_scheduler()
    optimizer = make_optimizer([(parameters, settings.learning_rate)])
    reads = (text_encoder, tokenizer.get_vocab(), *clips_parts(clips))
    checkpoint = stage_checkpoint(
        work_dir, "stage5_cross_attention", {"unet": unet}, optimizer, EMA(parameters), reads, settings
    )

    def loss_for_step(step: int) -> torch.Tensor:
        return single_frame_loss(unet, text_encoder, tokenizer, clips, settings, scheduler, stage=5, step=step)

    losses = run_stage("5/5 cross-attention keys and values", settings, checkpoint, loss_for_step, parameters)
    unet.eval()
    return losses
