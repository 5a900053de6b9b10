"""DDIM inversion and time-dependent temporal-attention guidance (inversion-based MotionClone).

Tiny preset on the CPU: 64×64 frames (8×8 latents), 4 frames, a handful of steps.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline, guidance_inversion
from motionclone.backend.engine.guidance_inversion import (
    denoise_inversion,
    inversion_ramp,
    linspace_timesteps,
    previous_timestep,
    top1_motion_loss,
)
from motionclone.backend.engine.inversion import InversionCache, InvertedLatents, ddim_invert, inverse_scheduler
from motionclone.backend.engine.parameters import (
    CONFIG_PRESETS,
    OFFICIAL_INVERSION_NEGATIVE_PROMPT,
    OFFICIAL_NEGATIVE_PROMPT,
    validate_params,
)
from motionclone.backend.engine.schedule import guided_ddim_step
from motionclone.backend.engine.semantic_guidance import semantic_loss
from motionclone.backend.errors import ParameterError
from motionclone.backend.models import load_preset
from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import prepare_reference

SIZE = 64  # 8×8 latents
FRAMES = 4


@pytest.fixture(scope="module")
def pipe() -> MotionClonePipeline:
    return MotionClonePipeline.from_bundle(load_preset("tiny", seed=0))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    clip = make_moving_square_clip(num_frames=8, height=SIZE, width=SIZE)
    return prepare_reference(clip, FRAMES, SIZE, SIZE).frames


def inversion_params(**changes: object) -> MotionCloneParams:
    values: dict[str, object] = dict(
        prompt="a cat runs",
        num_frames=FRAMES,
        height=SIZE,
        width=SIZE,
        num_inference_steps=4,
        guidance_steps=3,
        warm_up_steps=1,
        cool_down_steps=0,
        motion_source="inversion",
        inversion_prompt="a fox runs",
        inversion_steps=5,
        semantic_block_weights=(0.0, 0.0),
    )
    values.update(changes)
    return MotionCloneParams(**values)


def test_inverse_scheduler_matches_the_official_next_step() -> None:
    """x_t = √ᾱ_t·x̂_0 + √(1−ᾱ_t)·ε from x_{t−1}, with ᾱ_{-1} = 1."""
    scheduler = inverse_scheduler()
    scheduler.set_timesteps(1000)
    assert scheduler.timesteps[0] == 0 and scheduler.timesteps[-1] == 999
    alphas = scheduler.alphas_cumprod
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 4, 2, 3, 3, generator=generator, dtype=torch.float64)
    for t in (0, 1, 500, 999):
        a_prev = alphas[t - 1].double() if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        a_t = alphas[t].double()
        expected = a_t.sqrt() * (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt() + (1 - a_t).sqrt() * eps
        got = scheduler.step(eps, t, x).prev_sample
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


class FixedNoiseUNet(torch.nn.Module):
    """Stands in for the UNet: ε depends on x and t only through a fixed rule, so both loops see the same ε."""

    def forward(self, x: torch.Tensor, t: int, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.sin(x * 3 + t / 100))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_inversion_steps_equal_the_official_next_step_bit_for_bit(dtype) -> None:
    """The official `next_step`, operation by operation, with ᾱ as float32 host scalars and the latents' dtype."""
    scheduler = inverse_scheduler()
    alphas = scheduler.alphas_cumprod
    z0 = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(5)).to(dtype)
    unet = FixedNoiseUNet()
    inverted = ddim_invert(unet, z0, torch.zeros(1, 77, 8), 10, store_dtype=dtype)
    x = z0
    for t in range(0, 1000, 100):
        noise_pred = unet(x, t, None).sample
        previous = t - 100
        alpha_prod_t = alphas[previous] if previous >= 0 else torch.tensor(1.0)
        alpha_prod_t_next = alphas[t]
        original = (x - (1 - alpha_prod_t) ** 0.5 * noise_pred) / alpha_prod_t**0.5
        x = alpha_prod_t_next**0.5 * original + (1 - alpha_prod_t_next) ** 0.5 * noise_pred
        assert x.dtype == dtype and torch.equal(inverted.latents[t], x), t


def test_inversion_round_trip_reconstructs_the_latents(pipe: MotionClonePipeline) -> None:
    """Inverting, then DDIM-sampling back with the recorded ε, gives z_0 back (fp32, ≈1e-6)."""
    generator = torch.Generator().manual_seed(3)
    z0 = torch.randn(1, 4, FRAMES, 8, 8, generator=generator)
    embeds = pipe.encode_prompt("a fox runs")
    inverted = ddim_invert(pipe.unet, z0, embeds, 3, store_dtype=torch.float32, record_noise=True)
    assert inverted.timesteps == [0, 333, 666]
    assert all(latent.device.type == "cpu" for latent in inverted.latents.values())
    step = 1000 // 3
    x = inverted.latents[666]
    for t in reversed(inverted.timesteps):
        x = guided_ddim_step(
            x, inverted.noise_preds[t], t, t - step, pipe.scheduler.alphas_cumprod, pipe.scheduler.final_alpha_cumprod
        )
    torch.testing.assert_close(x, z0, rtol=0, atol=1e-5)
    assert (x - z0).abs().max() < 5e-6


def test_inverted_latents_fp16_on_host_and_cached_as_safetensors(pipe, frames, tmp_path) -> None:
    params = inversion_params(inversion_steps=2, num_frames=2)
    frames = frames[:2]
    embeds = pipe.encode_prompt(params.inversion_prompt)
    inverted, key, hit = pipe.obtain_inversion(frames, embeds, params, tmp_path)
    assert not hit and all(latent.dtype == torch.float16 for latent in inverted.latents.values())
    assert (tmp_path / "inversion" / f"{key}.safetensors").is_file()
    again, key_again, hit_again = pipe.obtain_inversion(frames, embeds, params, tmp_path)
    assert hit_again and key_again == key and again is inverted
    from_disk = InversionCache(tmp_path / "inversion").get(key)
    assert from_disk is not None and from_disk.timesteps == inverted.timesteps
    torch.testing.assert_close(from_disk.latents[500], inverted.latents[500], rtol=0, atol=0)
    # Streaming picks the nearest stored timestep and moves only that one.
    assert from_disk.nearest_timestep(999) == 500 and from_disk.nearest_timestep(100) == 0
    assert from_disk.at(999, "cpu", torch.float32).dtype == torch.float32
    other = pipe.obtain_inversion(frames, embeds, params.replace(inversion_prompt="a wolf", inversion_steps=1))[1]
    assert other != key


def test_linspace_schedule_and_previous_timestep_parity() -> None:
    timesteps = linspace_timesteps(500)
    assert timesteps[0] == 999 and timesteps[-1] == 0 and len(timesteps) == 500
    fixed = [previous_timestep(timesteps, i, parity=False) for i in range(500)]
    old = [previous_timestep(timesteps, i, parity=True) for i in range(500)]
    assert fixed == [*timesteps[1:].tolist(), -1]
    # B12: the old rule t − 1000//N, off by one from the schedule on many steps.
    assert old[:-1] == [int(t) - 2 for t in timesteps[:-1]]
    assert old[-1] == -1
    # 499 gaps of 999/499 ≈ 2.002 round to 2 except one 3: exactly one step differs at N = 500; four at N = 200.
    assert sum(a != b for a, b in zip(fixed, old, strict=True)) == 1
    timesteps = linspace_timesteps(200)
    fixed = [previous_timestep(timesteps, i, parity=False) for i in range(200)]
    old = [previous_timestep(timesteps, i, parity=True) for i in range(200)]
    assert old[:-1] == [int(t) - 5 for t in timesteps[:-1]]
    assert sum(a != b for a, b in zip(fixed, old, strict=True)) == 4


def test_ramp_zeroes_motion_loss_where_the_official_code_does() -> None:
    # Official: `if step_index > guidance_step - cool_up_step: loss_motion = 0`, so with G = 10 and 3 cool-down
    # steps, steps 0-7 keep L_mot and only 8 and 9 lose it.
    assert inversion_ramp(0, 10, 4, 3) == (0.25, True)
    assert inversion_ramp(7, 10, 4, 3) == (1.0, True)
    assert inversion_ramp(8, 10, 4, 3) == (1.0, False)
    assert inversion_ramp(9, 10, 4, 3) == (1.0, False)
    # No cool-down: every guided step keeps L_mot.
    assert all(inversion_ramp(i, 10, 4, 0)[1] for i in range(10))


def test_top1_motion_loss_is_zero_for_identical_maps() -> None:
    probs = torch.rand(4, 2, 3, 3).softmax(-1)
    weighted, plain = top1_motion_loss({"m": probs}, {"m": probs.clone()}, {"m": 20000.0})
    assert float(weighted) == 0.0 and float(plain) == 0.0
    other = torch.rand(4, 2, 3, 3).softmax(-1)
    weighted, plain = top1_motion_loss({"m": probs}, {"m": other}, {"m": 20000.0})
    assert float(weighted) == pytest.approx(200 * float(plain))


def run_inversion_denoise(pipe, frames, params, seed, latents=None):
    config = pipe.inversion_guidance_config(params)
    embeds = pipe.encode_prompt(params.inversion_prompt)
    inverted, _, _ = pipe.obtain_inversion(frames, embeds, params)
    latents = pipe.prepare_noise(seed, params) if latents is None else latents
    return denoise_inversion(
        pipe.unet,
        pipe.scheduler.alphas_cumprod,
        pipe.scheduler.final_alpha_cumprod,
        latents,
        pipe.prepare_timesteps(params),
        inverted,
        pipe.encode_prompt(params.negative_prompt),
        pipe.encode_prompt(params.full_prompt),
        embeds,
        config,
        lambda *args: None,
        lambda: False,
    )


def test_guidance_lowers_time_dependent_motion_loss(pipe, frames) -> None:
    """Same start; the guided run's loss against x^ref_t at the later guided steps is below the weight-0 run's."""
    for seed in (0, 1, 2):
        params = inversion_params(seed=seed, num_inference_steps=5, guidance_steps=4, inversion_steps=5)
        _, guided = run_inversion_denoise(pipe, frames, params, seed)
        _, unguided = run_inversion_denoise(pipe, frames, params.replace(inversion_block_weights=(0.0, 0.0)), seed)
        assert len(guided) == len(unguided) == 4
        assert guided[0] == pytest.approx(unguided[0])  # same x_T, same reference
        assert sum(guided[1:]) < sum(unguided[1:])


def test_semantic_guidance_steps_down_the_semantic_loss(pipe, frames, monkeypatch) -> None:
    """Motion weights 0, one guided step: the gradient the step applies points up L_sem, so moving x_T a little
    against it lowers L_sem (same appearance targets and masks) and moving along it raises it."""
    targets: dict[str, object] = {}
    values: list[float] = []
    scores: list[torch.Tensor] = []

    def pinned_loss(gen_keys, app_keys, module_weights, masks, height, width):
        if not targets:
            targets.update(app_keys=app_keys, masks=masks)  # the first run's targets are kept for the others
        loss = semantic_loss(gen_keys, targets["app_keys"], module_weights, targets["masks"], height, width)
        values.append(float(loss.detach()))
        return loss

    def recording_step(*args, **kwargs):
        score = kwargs.get("score", args[6] if len(args) > 6 else None)
        if score is not None:
            scores.append(score.detach().clone())
        return guided_ddim_step(*args, **kwargs)

    monkeypatch.setattr(guidance_inversion, "semantic_loss", pinned_loss)
    monkeypatch.setattr(guidance_inversion, "guided_ddim_step", recording_step)
    params = inversion_params(
        num_inference_steps=2,
        guidance_steps=1,
        inversion_steps=2,
        inversion_block_weights=(0.0, 0.0),
        semantic_block_weights=(500.0, 500.0),
        semantic_object_pair=("fox", "cat"),
        semantic_example_threshold=0.0,  # every cell of the tiny model's maps counts as the object
    )
    x_T = pipe.prepare_noise(0, params)
    run_inversion_denoise(pipe, frames, params, 0, latents=x_T)
    assert len(scores) == 1 and scores[0].abs().sum() > 0
    direction = scores[0] / scores[0].norm() * x_T.norm() * 1e-3
    run_inversion_denoise(pipe, frames, params, 0, latents=x_T - direction)
    run_inversion_denoise(pipe, frames, params, 0, latents=x_T + direction)
    at_start, against, along = values
    assert against < at_start < along


def test_full_network_passes_of_a_guided_step_run_as_one_batch(pipe, frames, monkeypatch) -> None:
    """Per guided step with semantic guidance: the reference pass, one batch [ε_u, appearance ε_u, appearance ε_c]
    and the conditional pass; unguided steps one CFG batch of 2."""
    params = inversion_params(
        num_inference_steps=3,
        guidance_steps=2,
        inversion_steps=1,
        semantic_block_weights=(500.0, 100.0),
        semantic_object_pair=("fox", "cat"),
    )
    run_inversion_denoise(pipe, frames, params, 0)  # the inversion is then reused from memory: only sampling counts
    batches: list[int] = []
    forward = pipe.unet.forward

    def counting_forward(sample, *args, **kwargs):
        batches.append(sample.shape[0])
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", counting_forward)
    run_inversion_denoise(pipe, frames, params, 0)
    assert batches == [1, 3, 1, 1, 3, 1, 2]
    batches.clear()
    run_inversion_denoise(pipe, frames, params.replace(semantic_block_weights=(0.0, 0.0)), 0)
    assert batches == [1, 1, 1, 1, 1, 1, 2]  # no appearance stream: reference, ε_u, ε_c


def test_parity_switch_uses_the_old_previous_timestep(pipe, frames, monkeypatch) -> None:
    calls: list[tuple[int, int]] = []

    def recording_step(x_t, noise_pred, t, t_prev, *args, **kwargs):
        calls.append((t, t_prev))
        return guided_ddim_step(x_t, noise_pred, t, t_prev, *args, **kwargs)

    monkeypatch.setattr(guidance_inversion, "guided_ddim_step", recording_step)
    params = inversion_params(num_inference_steps=3, guidance_steps=1, inversion_steps=1)
    run_inversion_denoise(pipe, frames, params.replace(inversion_parity_prev_timestep=True), 0)
    assert calls == [(999, 666), (500, 167), (0, -1)]
    calls.clear()
    run_inversion_denoise(pipe, frames, params, 0)
    assert calls == [(999, 500), (500, 0), (0, -1)]


def test_inversion_mode_end_to_end_with_semantic_guidance(pipe) -> None:
    """Non-square latents, 2 frames, object pair, appearance stream: a finished video and metadata."""
    clip = make_moving_square_clip(num_frames=6, height=SIZE, width=96)
    params = inversion_params(
        num_frames=2,
        width=96,
        inversion_steps=2,
        num_inference_steps=3,
        guidance_steps=2,
        semantic_block_weights=(500.0, 100.0),
        semantic_object_pair=("fox", "cat"),
    )
    output = pipe(clip, params)
    assert output.frames.shape == (2, SIZE, 96, 3)
    assert output.metadata["inversion"]["semantic_guidance"] is True
    assert output.metadata["timesteps"] == [999, 500, 0]
    assert len(output.metadata["motion_loss"]) == 2
    assert all(np.isfinite(output.metadata["motion_loss"]))


def test_an_unguided_inversion_run_skips_the_inversion_nothing_reads(pipe, frames, monkeypatch) -> None:
    from motionclone.backend.engine import pipeline_motionclone

    monkeypatch.setattr(pipeline_motionclone, "ddim_invert", lambda *a, **k: pytest.fail("inverted for nothing"))
    output = pipe(frames, inversion_params(guidance_steps=0, num_inference_steps=2))
    assert output.frames.shape == (FRAMES, SIZE, SIZE, 3) and output.metadata["motion_loss"] == []


def test_motion_source_and_inversion_fields_are_validated() -> None:
    with pytest.raises(ParameterError) as error:
        validate_params(inversion_params(motion_source="ddim"))
    assert error.value.name == "motion_source"
    with pytest.raises(ParameterError) as error:
        validate_params(inversion_params(inversion_block_weights=(1.0,)))
    assert error.value.name == "inversion_block_weights"
    with pytest.raises(ParameterError) as error:
        validate_params(inversion_params(inversion_steps=0))
    assert error.value.name == "inversion_steps"
    assert MotionCloneParams(prompt="x").motion_source == "single-step"
    # The single-step method ignores them, but its result's metadata records them: bad values are refused there too.
    for field, value in [
        ("inversion_steps", "abc"),
        ("semantic_sigma", float("nan")),
        ("inversion_prompt", {"a": 1}),
        ("inversion_parity_prev_timestep", "yes"),
    ]:
        with pytest.raises(ParameterError) as error:
            validate_params(MotionCloneParams(prompt="x", **{field: value}))
        assert error.value.name == field


def test_old_configs_are_presets_and_survive_the_wire() -> None:
    for name in ("inversion-astronaut", "inversion-fox", "inversion-street", "inversion-walk", "inversion-wolf"):
        params = MotionCloneParams.from_config(name, prompt="a hunter walking")
        validate_params(params)
        assert params.motion_source == "inversion"
        assert MotionCloneParams.from_dict(params.to_dict()) == params
        # The old configs' own negative prompt and frame rule, not the text-to-video ones.
        assert params.negative_prompt == OFFICIAL_INVERSION_NEGATIVE_PROMPT != OFFICIAL_NEGATIVE_PROMPT
        assert params.frame_sampling == "interval"
    assert MotionCloneParams.from_config("camera", prompt="x").frame_sampling == "linspace"
    walk = CONFIG_PRESETS["inversion-walk"]
    assert (walk["num_inference_steps"], walk["guidance_steps"], walk["cool_down_steps"]) == (200, 120, 10)
    assert walk["semantic_example_threshold"] == 0.2
    assert InvertedLatents({0: torch.zeros(1)}).timesteps == [0]


def test_old_configs_invert_with_the_official_prompts() -> None:
    # The inversion prompt drives both the inversion and the reference stream: a shortened one is another run.
    official = {
        "inversion-astronaut": "Astronaut, walking, on the Mars surface",
        "inversion-fox": "Fox, moves its head, in the wild",
        "inversion-street": "Busy urban street, many buildings on both sides, crossings",
        "inversion-walk": "Astronaut, walks, in the dreamy world",
        "inversion-wolf": "Wolf, turns its head, in the wild",
    }
    assert {name: CONFIG_PRESETS[name]["inversion_prompt"] for name in official} == official
