"""A few steps of each training stage lower its loss; the motion and cross-attention stages train what they say,
nothing else."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motionclone.backend.models.bundle import official_ddim_scheduler
from motionclone.backend.models.tiny import build_tiny_components
from motionclone.backend.training import stages
from motionclone.backend.training.architecture import build_vae
from motionclone.backend.training.data import caption_words, clip_at
from motionclone.backend.training.stages import (
    EncodedClips,
    StageSettings,
    extract_image_unet,
    extract_motion_adapter,
    frames_to_tensor,
    min_snr_weights,
    pooled_clips,
    tokenize,
    train_cross_attention,
    train_image_model,
    train_motion_coarse_to_fine,
    train_motion_modules,
    train_vae,
)
from motionclone.backend.training.stages import denoising_loss as weighted_denoising_loss
from motionclone.backend.training.word_tokenizer import load_word_tokenizer, save_word_tokenizer


@pytest.fixture(scope="module")
def clips():
    rendered = [clip_at(3, index, 32, 4) for index in range(6)]
    frames = np.stack([clip.frames for clip in rendered])
    masks = np.stack([clip.masks for clip in rendered])
    return frames, masks, [clip.caption for clip in rendered]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_word_tokenizer(save_word_tokenizer(caption_words(), tmp_path_factory.mktemp("tokenizer")))


def reconstruction_error(vae, frames):
    with torch.no_grad():
        x = frames_to_tensor(frames[:, 0], "cpu")
        return float((vae.decode(vae.encode(x).latent_dist.mean).sample - x).abs().mean())


def test_vae_stage_lowers_the_reconstruction_error_and_resumes(clips, tmp_path):
    frames, masks, _ = clips
    torch.manual_seed(0)
    vae = build_vae()
    before = reconstruction_error(vae, frames)
    settings = StageSettings(steps=30, batch_size=4, learning_rate=2e-3)
    losses = train_vae(vae, frames, masks, settings, tmp_path)
    assert len(losses) == 30
    assert reconstruction_error(vae, frames) < 0.7 * before
    # A finished stage resumes from its checkpoint without training again.
    assert len(list(tmp_path.glob("stage1_vae-*.pt"))) == 1
    torch.manual_seed(0)
    assert train_vae(build_vae(), frames, masks, settings, tmp_path) == losses


def denoising_loss(unet, text_encoder, tokenizer, latents, captions, seed=0):
    generator = torch.Generator().manual_seed(seed)
    scheduler = official_ddim_scheduler()
    z0 = torch.from_numpy(latents[:, 0]).float()
    t = torch.randint(100, 900, (len(z0),), generator=generator)
    epsilon = torch.randn(z0.shape, generator=generator)
    with torch.no_grad():
        embeddings = text_encoder(tokenize(tokenizer, captions, "cpu"))[0]
        return float(F.mse_loss(unet(scheduler.add_noise(z0, epsilon, t), t, embeddings).sample, epsilon))


def structured_latents(count: int, frames: int, size: int) -> np.ndarray:
    """Smooth latents a small UNet can learn quickly: one blob per clip that moves over the frames."""
    grid = np.linspace(-1, 1, size)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    latents = np.zeros((count, frames, 4, size, size), np.float16)
    for clip in range(count):
        for frame in range(frames):
            centre = -0.5 + frame / max(1, frames - 1) * (1 if clip % 2 else -1) * 0.5
            blob = np.exp(-((x - centre) ** 2 + y**2) * 6)
            latents[clip, frame] = (blob * (1 + clip % 4))[None] - 0.5
    return latents


def test_image_stage_lowers_the_denoising_loss_and_trains_the_text_encoder(clips, tokenizer, tmp_path):
    _, _, captions = clips
    unet2d, _, _, text_encoder = build_tiny_components(seed=1)
    latents = structured_latents(len(captions), 2, 8)
    text_before = [p.detach().clone() for p in text_encoder.parameters()]
    before = denoising_loss(unet2d, text_encoder, tokenizer, latents, captions)
    settings = StageSettings(steps=40, batch_size=6, learning_rate=3e-3)
    train_image_model(unet2d, text_encoder, tokenizer, EncodedClips(latents, captions, 1.0), settings, tmp_path)
    assert denoising_loss(unet2d, text_encoder, tokenizer, latents, captions) < 0.8 * before
    changed = [not torch.equal(a, b) for a, b in zip(text_before, text_encoder.parameters(), strict=True)]
    assert any(changed)


class Interrupted(Exception):
    """Stands for the training process being stopped."""


def assert_a_stopped_run_resumes_to_the_weights_of_one_run(train, tmp_path, stop_at_step: int) -> None:
    """`train(work_dir, stop_at_step=None)` -> (losses, state dict): stopped once and run again in one work folder,
    it ends with the losses and weights, bit for bit, of a run that was not stopped."""
    one_run_losses, one_run = train(tmp_path / "one-run")
    with pytest.raises(Interrupted):
        train(tmp_path / "stopped", stop_at_step=stop_at_step)
    resumed_losses, resumed = train(tmp_path / "stopped")
    assert resumed_losses == one_run_losses
    for name, tensor in one_run.items():
        assert torch.equal(resumed[name], tensor), name


def stop_after_calls(module: torch.nn.Module, calls_allowed: int) -> None:
    """Raise `Interrupted` when `module` is called once more than `calls_allowed` times (once per training step)."""
    calls = []

    def stop(module, args):
        calls.append(1)
        if len(calls) > calls_allowed:
            raise Interrupted

    module.register_forward_pre_hook(stop)


def test_an_interrupted_stage_resumed_from_its_checkpoint_ends_with_the_same_weights_as_one_run(
    clips, tokenizer, tmp_path, monkeypatch
):
    """What makes training reproducible: every step's batch and noise come from (seed, stage, step), and a checkpoint
    holds the weights, optimizer, EMA and step, so a stopped run resumed gives bit for bit the weights of one run."""
    _, _, captions = clips
    monkeypatch.setattr(stages, "CHECKPOINT_EVERY", 4)
    latents = EncodedClips(structured_latents(len(captions), 2, 8), captions, 1.0)
    settings = StageSettings(steps=10, batch_size=3, learning_rate=3e-3)

    def train(work_dir, stop_at_step=None):
        work_dir.mkdir(exist_ok=True)
        unet2d, _, _, text_encoder = build_tiny_components(seed=4)
        if stop_at_step is not None:
            stop_after_calls(unet2d, stop_at_step)
        losses = train_image_model(unet2d, text_encoder, tokenizer, latents, settings, work_dir)
        return losses, {**unet2d.state_dict(), **text_encoder.state_dict()}

    # stopped during step 7, after the checkpoint at step 4
    assert_a_stopped_run_resumes_to_the_weights_of_one_run(train, tmp_path, stop_at_step=6)


def test_motion_stage_trains_only_the_motion_modules(clips, tokenizer, tmp_path):
    _, _, captions = clips
    unet2d, motion_adapter, _, text_encoder = build_tiny_components(seed=2)
    latents = structured_latents(len(captions), 4, 8)
    image_weights = {name: tensor.clone() for name, tensor in unet2d.state_dict().items()}
    text_weights = {name: tensor.clone() for name, tensor in text_encoder.state_dict().items()}
    settings = StageSettings(steps=30, batch_size=2, learning_rate=3e-3)
    unet, losses = train_motion_modules(
        unet2d, motion_adapter, text_encoder, tokenizer, EncodedClips(latents, captions, 1.0), settings, tmp_path
    )
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    state = unet.state_dict()
    for name, tensor in image_weights.items():
        assert torch.equal(state[name], tensor), name  # the UNet keeps the 2-D model's names
    for name, tensor in text_encoder.state_dict().items():
        assert torch.equal(tensor, text_weights[name]), name
    before = {name: tensor.clone() for name, tensor in motion_adapter.state_dict().items()}
    extract_motion_adapter(unet, motion_adapter)
    after = motion_adapter.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    for name, tensor in after.items():
        assert torch.equal(tensor, state[name]), name


def test_motion_stage_with_a_spatial_rate_also_trains_the_image_unet_and_hands_it_back(clips, tokenizer, tmp_path):
    _, _, captions = clips
    unet2d, motion_adapter, _, text_encoder = build_tiny_components(seed=3)
    latents = structured_latents(len(captions), 4, 8)
    image_weights = {name: tensor.clone() for name, tensor in unet2d.state_dict().items()}
    settings = StageSettings(steps=5, batch_size=2, learning_rate=3e-3, spatial_learning_rate=1e-3)
    unet, _ = train_motion_modules(
        unet2d, motion_adapter, text_encoder, tokenizer, EncodedClips(latents, captions, 1.0), settings, tmp_path
    )
    state = unet.state_dict()
    assert any(not torch.equal(state[name], tensor) for name, tensor in image_weights.items())
    extract_image_unet(unet, unet2d)
    for name, tensor in unet2d.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_pooled_clips_average_each_block_of_latents_and_mark_a_subject_where_any_position_was() -> None:
    latents = np.arange(2 * 16, dtype=np.float16).reshape(2, 1, 1, 4, 4)
    masks = np.zeros((2, 1, 4, 4), bool)
    masks[0, 0, 1, 2] = True
    clips = EncodedClips(latents, ["a red ball", "a blue cube"], 0.5, masks)

    pooled = pooled_clips(clips, 2)

    assert pooled.latents.dtype == np.float16 and pooled.latents.shape == (2, 1, 1, 2, 2)
    assert pooled.latents[0, 0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]  # (0 + 1 + 4 + 5) / 4, ...
    assert pooled.subject_masks[0, 0].tolist() == [[False, True], [False, False]]
    assert not pooled.subject_masks[1].any()
    assert pooled.captions == clips.captions and pooled.scaling_factor == 0.5
    assert pooled_clips(clips, 1) is clips


def test_motion_stage_with_a_latent_pool_trains_on_pooled_clips_in_a_checkpoint_of_its_own(
    clips, tokenizer, tmp_path, monkeypatch
):
    _, _, captions = clips
    latents = structured_latents(len(captions), 4, 16)
    shapes = []
    real_noised = stages.noised

    def noised(scheduler, z0, generator):
        shapes.append(tuple(z0.shape))
        return real_noised(scheduler, z0, generator)

    monkeypatch.setattr(stages, "noised", noised)

    def train(pool: int):
        unet2d, motion_adapter, _, text_encoder = build_tiny_components(seed=2)
        before = {name: tensor.clone() for name, tensor in motion_adapter.state_dict().items()}
        settings = StageSettings(steps=3, batch_size=2, learning_rate=3e-3, latent_pool=pool)
        encoded = EncodedClips(latents, captions, 1.0)
        unet, _ = train_motion_modules(unet2d, motion_adapter, text_encoder, tokenizer, encoded, settings, tmp_path)
        extract_motion_adapter(unet, motion_adapter)
        return any(not torch.equal(before[name], tensor) for name, tensor in motion_adapter.state_dict().items())

    assert train(pool=2)
    assert set(shapes) == {(2, 4, 4, 8, 8)}  # (clips, channels, frames, side / 2, side / 2)
    shapes.clear()
    assert train(pool=1)
    assert set(shapes) == {(2, 4, 4, 16, 16)}
    assert len(list(tmp_path.glob("stage4_motion-*.pt"))) == 2  # neither resumed from the other
    # Full-resolution checkpoints are named as before the pooled part existed, so their runs still resume.
    assert set(StageSettings(steps=1, batch_size=2, learning_rate=1e-3).step_recipe()) == {
        "batch_size",
        "seed",
        "subject_weight",
        "subject_weight_from",
        "trains_spatial_weights",
    }


def test_the_coarse_to_fine_motion_stage_starts_its_full_resolution_part_from_the_pooled_parts_weights(
    clips, tokenizer, tmp_path, monkeypatch
):
    _, _, captions = clips
    unet2d, motion_adapter, _, text_encoder = build_tiny_components(seed=5)
    initial = {name: tensor.clone() for name, tensor in motion_adapter.state_dict().items()}
    starts, results = [], []
    real_train = stages.train_motion_modules

    def train(unet2d, motion_adapter, *args):
        starts.append((args[-2].latent_pool, {n: t.clone() for n, t in motion_adapter.state_dict().items()}))
        unet, losses = real_train(unet2d, motion_adapter, *args)
        results.append({name: tensor.clone() for name, tensor in unet.state_dict().items()})
        return unet, losses

    monkeypatch.setattr(stages, "train_motion_modules", train)
    coarse = StageSettings(steps=3, batch_size=2, learning_rate=3e-3, latent_pool=2)
    fine = StageSettings(steps=2, batch_size=2, learning_rate=3e-3)
    encoded = EncodedClips(structured_latents(len(captions), 4, 16), captions, 1.0)

    unet, losses = train_motion_coarse_to_fine(
        unet2d, motion_adapter, text_encoder, tokenizer, encoded, coarse, fine, tmp_path
    )

    assert list(losses) == ["motion_low_res", "motion"] and [len(v) for v in losses.values()] == [3, 2]
    assert [pool for pool, _ in starts] == [2, 1]
    fine_start = starts[1][1]
    assert any(not torch.equal(fine_start[name], initial[name]) for name in initial)
    for name, tensor in fine_start.items():  # exactly what the pooled part trained
        assert torch.equal(tensor, results[0][name]), name
    for name, tensor in unet.state_dict().items():  # the UNet handed back is the full-resolution part's
        assert torch.equal(tensor, results[1][name]), name

    starts.clear()
    _, losses = train_motion_coarse_to_fine(
        unet2d, motion_adapter, text_encoder, tokenizer, encoded, coarse, StageSettings(0, 2, 3e-3), tmp_path
    )
    assert list(losses) == ["motion_low_res"] and [pool for pool, _ in starts] == [2]


def test_cross_attention_stage_trains_only_the_text_keys_and_values_and_lowers_the_loss(clips, tokenizer, tmp_path):
    _, _, captions = clips
    unet2d, _, _, text_encoder = build_tiny_components(seed=5)
    latents = structured_latents(len(captions), 2, 8)
    subject_masks = np.ones((len(captions), 2, 8, 8), bool)
    before = denoising_loss(unet2d, text_encoder, tokenizer, latents, captions)
    image_weights = {name: tensor.clone() for name, tensor in unet2d.state_dict().items()}
    text_weights = {name: tensor.clone() for name, tensor in text_encoder.state_dict().items()}
    settings = StageSettings(steps=40, batch_size=6, learning_rate=1e-2, subject_weight=9.0)
    clips_seen = EncodedClips(latents, captions, 1.0, subject_masks)
    losses = train_cross_attention(unet2d, text_encoder, tokenizer, clips_seen, settings, tmp_path)
    assert len(losses) == 40
    assert denoising_loss(unet2d, text_encoder, tokenizer, latents, captions) < 0.9 * before
    trained = {name for name, tensor in unet2d.state_dict().items() if not torch.equal(tensor, image_weights[name])}
    assert trained and all(".attn2.to_k." in name or ".attn2.to_v." in name for name in trained), trained
    for name, tensor in text_encoder.state_dict().items():
        assert torch.equal(tensor, text_weights[name]), name
    assert len(list(tmp_path.glob("stage5_cross_attention-*.pt"))) == 1


def test_min_snr_weights_are_one_at_low_snr_and_gamma_over_snr_above() -> None:
    scheduler = official_ddim_scheduler()
    t = torch.arange(0, 1000)
    weights = min_snr_weights(scheduler, t, gamma=5.0)
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    noisy = snr < 5.0
    assert noisy.any() and (~noisy).any()
    assert torch.allclose(weights[noisy], torch.ones(int(noisy.sum())))
    assert torch.allclose(weights[~noisy], 5.0 / snr[~noisy])
    assert weights[0] < 0.01  # the nearly noise-free end weighs almost nothing


def test_weighted_loss_scales_each_sample_and_keeps_the_plain_mse_without_weights() -> None:
    generator = torch.Generator().manual_seed(0)
    prediction, epsilon = torch.randn(2, 4, 3, 3, generator=generator), torch.randn(2, 4, 3, 3, generator=generator)
    plain = weighted_denoising_loss(prediction, epsilon, None, 0.0)
    assert torch.allclose(plain, F.mse_loss(prediction, epsilon))
    per_sample = ((prediction - epsilon) ** 2).flatten(1).mean(dim=1)
    weighted = weighted_denoising_loss(prediction, epsilon, None, 0.0, torch.tensor([1.0, 0.0]))
    assert torch.allclose(weighted, per_sample[0] / 2)


def test_ema_averages_loaded_from_a_checkpoint_go_where_their_parameters_are():
    """Checkpoints load onto the CPU; a run resumed on a GPU must not mix devices in `update`."""
    parameters = [torch.nn.Parameter(torch.zeros(3, device="meta"))]  # a device other than the CPU's
    ema = stages.EMA(parameters)
    ema.load_state_dict([torch.ones(3)])
    assert ema.shadow[0].device == parameters[0].device
    ema.update(step=5)  # mixed devices raised here


def test_encoded_latents_are_reused_only_for_the_same_vae_and_data_set(clips, tmp_path, monkeypatch):
    from motionclone.backend.training import train

    frames = clips[0]
    encoded = []

    def encode(vae, frames, device):
        encoded.append(len(frames))
        return np.ones((len(frames), frames.shape[1], 4, 16, 16), dtype=np.float16)

    monkeypatch.setattr(train, "encode_clips", encode)
    torch.manual_seed(0)
    vae = build_vae()
    plan = train.TrainingPlan(work_dir=tmp_path, out_dir=tmp_path / "out", data_seed=1, clips=6)
    train.load_or_encode_latents(vae, frames, plan)
    train.load_or_encode_latents(vae, frames, plan)  # the same VAE and data: read back
    assert encoded == [6]
    other_data = train.TrainingPlan(work_dir=tmp_path, out_dir=tmp_path / "out", data_seed=2, clips=6)
    train.load_or_encode_latents(vae, frames, other_data)
    with torch.no_grad():
        next(vae.parameters()).add_(0.1)  # a VAE trained further
    train.load_or_encode_latents(vae, frames, plan)
    assert encoded == [6, 6, 6]


def linear_checkpoint(path, weights: torch.nn.Linear, learning_rate: float) -> stages.Checkpoint:
    optimizer = stages.make_optimizer([(list(weights.parameters()), learning_rate)])
    return stages.Checkpoint(path, {"m": weights}, optimizer, stages.EMA(list(weights.parameters())))


def test_a_resumed_stage_takes_this_runs_learning_rate(tmp_path):
    weights = torch.nn.Linear(2, 2)
    linear_checkpoint(tmp_path / "stage.pt", weights, 1.0).save(3, [0.5, 0.25, 0.125])
    resumed = linear_checkpoint(tmp_path / "stage.pt", weights, 5.0)
    assert resumed.load() == (3, [0.5, 0.25, 0.125])
    assert resumed.optimizer.param_groups[0]["initial_lr"] == 5.0  # the saved 1.0 used to win


def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path):
    checkpoint = linear_checkpoint(tmp_path / "stage.pt", torch.nn.Linear(2, 2), 1.0)
    checkpoint.save(3, [0.5])
    whole = (tmp_path / "stage.pt").read_bytes()
    (tmp_path / "stage.pt").write_bytes(whole[: len(whole) // 2])  # a disk that filled up, say
    with pytest.raises(stages.CheckpointUnreadable, match=r"stage\.pt cannot be read .*: delete it, and this stage"):
        checkpoint.load()


def test_a_stage_resumes_only_from_a_checkpoint_that_began_from_the_same_weights_data_and_settings(
    clips, tokenizer, tmp_path
):
    """A work folder reused after an earlier stage trained longer, or with other data or settings, trains the stage
    again instead of loading weights that began from something else; more steps or another learning rate resume."""
    _, _, captions = clips
    latents = structured_latents(len(captions), 2, 8)

    def train(settings, latents=latents, perturb_text_encoder=False):
        unet2d, _, _, text_encoder = build_tiny_components(seed=4)
        if perturb_text_encoder:  # what an earlier stage trained on hands this one other weights
            with torch.no_grad():
                next(text_encoder.parameters()).add_(0.01)
        clips = EncodedClips(latents, captions, 1.0)
        return train_image_model(unet2d, text_encoder, tokenizer, clips, settings, tmp_path)

    settings = StageSettings(steps=2, batch_size=3, learning_rate=3e-3)
    first = train(settings)
    assert len(first) == 2 and len(list(tmp_path.glob("stage3_image-*.pt"))) == 1
    longer = train(StageSettings(steps=3, batch_size=3, learning_rate=1e-3))  # resumes: one step more
    on_gpu = StageSettings(steps=2, batch_size=3, learning_rate=3e-3, device="cuda")
    assert on_gpu.step_recipe() == settings.step_recipe()  # a run stopped on one device may go on on another
    assert longer[:2] == first and len(list(tmp_path.glob("stage3_image-*.pt"))) == 1
    for changed in (
        lambda: train(settings, perturb_text_encoder=True),
        lambda: train(settings, latents=latents + np.float16(0.5)),
        lambda: train(StageSettings(steps=2, batch_size=2, learning_rate=3e-3)),
        lambda: train(StageSettings(steps=2, batch_size=3, learning_rate=3e-3, seed=1)),
    ):
        checkpoints = len(list(tmp_path.glob("stage3_image-*.pt")))
        assert len(changed()) == 2  # trained from its first step, not resumed from a finished checkpoint
        assert len(list(tmp_path.glob("stage3_image-*.pt"))) == checkpoints + 1


def test_an_interrupted_vae_stage_resumed_ends_with_the_same_weights_as_one_run(clips, tmp_path, monkeypatch):
    """The VAE stage samples its latents from torch's global generator, which the checkpoint keeps."""
    frames, masks, _ = clips
    monkeypatch.setattr(stages, "CHECKPOINT_EVERY", 3)
    settings = StageSettings(steps=6, batch_size=2, learning_rate=2e-3)

    def train(work_dir, stop_at_step=None):
        work_dir.mkdir(exist_ok=True)
        torch.manual_seed(0)
        vae = build_vae()
        if stop_at_step is not None:
            stop_after_calls(vae.encoder, stop_at_step)
        torch.manual_seed(123)  # the generator as the run's earlier work left it
        losses = train_vae(vae, frames, masks, settings, work_dir)
        return losses, vae.state_dict()

    # stopped during step 5, after the checkpoint at step 3
    assert_a_stopped_run_resumes_to_the_weights_of_one_run(train, tmp_path, stop_at_step=4)
