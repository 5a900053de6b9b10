"""End-to-end behaviour of the MotionClone pipeline on the tiny preset (CPU, 16x16 latents)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline
from PIL import Image, ImageFilter

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline, MotionRepresentation
from motionclone.backend.engine.attention_capture import capture_temporal_attention, guided_module_names
from motionclone.backend.engine.noise_warp import reference_source_maps
from motionclone.backend.engine.partial_unet import run_unet_until
from motionclone.backend.engine.pipeline_motionclone import VAE_SEED_OFFSET
from motionclone.backend.engine.representation import (
    RepresentationCache,
    encode_reference,
    motion_loss,
    noise_latents,
)
from motionclone.backend.errors import JobCancelled, ParameterError
from motionclone.backend.models import load_preset
from motionclone.backend.models.bundle import official_ddim_scheduler
from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import prepare_reference

SIZE = 128  # 16x16 latents


@pytest.fixture(scope="module")
def pipe():
    return MotionClonePipeline.from_bundle(load_preset("tiny", seed=0))


@pytest.fixture(scope="module")
def reference():
    return make_moving_square_clip(num_frames=20, height=SIZE, width=SIZE)


def short_params(**changes):
    values = dict(
        prompt="a fox running",
        num_frames=8,
        height=SIZE,
        width=SIZE,
        num_inference_steps=6,
        guidance_steps=3,
        warm_up_steps=1,
        cool_down_steps=1,
    )
    values.update(changes)
    return MotionCloneParams(**values)


def run_denoise(pipe, reference, params):
    """Extraction and denoising without decoding; returns (x_0 latents, representation, extraction noise)."""
    frames = prepare_reference(reference, params.num_frames, params.height, params.width).frames
    empty = pipe.encode_prompt("")
    noise = pipe.prepare_noise(params.seed, params)
    representation, _, _ = pipe.obtain_representation(frames, noise, empty, params, None)
    module_names = guided_module_names(pipe.unet, params.motion_guidance_blocks)
    latents, _ = pipe.denoise(
        noise,
        pipe.prepare_timesteps(params),
        representation,
        module_names,
        pipe.encode_prompt(params.negative_prompt),
        pipe.encode_prompt(params.full_prompt),
        params,
        lambda *args: None,
        lambda: False,
    )
    return latents, representation, noise, empty


def motion_loss_of(pipe, latents, noise, empty, representation, params):
    """The motion loss of a finished video: its attention at t* against the reference representation."""
    module_names = guided_module_names(pipe.unet, params.motion_guidance_blocks)
    x_t = noise_latents(latents, noise, params.add_noise_step, pipe.scheduler.alphas_cumprod)
    with torch.no_grad(), capture_temporal_attention(pipe.unet, module_names) as store:
        store.recording = True
        run_unet_until(
            pipe.unet,
            "up_blocks.1",
            x_t,
            params.add_noise_step,
            encoder_hidden_states=empty.repeat_interleave(params.num_frames, dim=0),
        )
        return float(motion_loss(store.probs, representation))


def test_generates_uint8_frames_with_complete_metadata(pipe, reference):
    stages = []
    output = pipe(reference, short_params(), progress=lambda stage, step, total: stages.append((stage, step, total)))
    assert output.frames.shape == (8, SIZE, SIZE, 3) and output.frames.dtype == np.uint8
    meta = output.metadata
    assert meta["seed"] == 2025 and meta["noise_coupled"] is True
    assert meta["parameters"]["num_inference_steps"] == 6
    assert meta["parameters"]["motion_norm"] == "per-frame"
    assert meta["model"]["preset"] == "tiny"
    assert set(meta["timings_s"]) == {"prepare", "extract", "denoise", "decode"}
    assert len(meta["motion_loss"]) == 3 and all(np.isfinite(meta["motion_loss"]))
    assert meta["timesteps"] == [999, 850, 700, 699, 350, 0]
    assert ("denoise", 6, 6) in stages and stages[-1][0] == "decode"


def test_same_seed_twice_gives_identical_frames_and_another_seed_does_not(pipe, reference):
    first = pipe(reference, short_params(seed=7)).frames
    second = pipe(reference, short_params(seed=7)).frames
    other = pipe(reference, short_params(seed=8)).frames
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_motion_guidance_lowers_the_motion_loss_of_the_result(pipe, reference):
    for seed in (0, 1, 2):
        unguided = short_params(seed=seed, num_inference_steps=8, guidance_steps=4, motion_guidance_weight=0.0)
        guided = unguided.replace(motion_guidance_weight=20000.0)
        losses = []
        for params in (unguided, guided):
            latents, representation, noise, empty = run_denoise(pipe, reference, params)
            losses.append(motion_loss_of(pipe, latents, noise, empty, representation, params))
        assert losses[1] < 0.95 * losses[0], (seed, losses)


def test_weight_zero_is_an_unguided_baseline_that_needs_no_autograd(pipe, reference, monkeypatch):
    guided = pipe(reference, short_params(seed=5, motion_guidance_weight=3000.0))
    assert guided.metadata["guided"] is True

    def no_gradients(*args, **kwargs):
        raise AssertionError("an unguided step asked autograd for a gradient")

    monkeypatch.setattr(torch.autograd, "grad", no_gradients)
    baseline = pipe(reference, short_params(seed=5, motion_guidance_weight=0.0))
    assert baseline.metadata["guided"] is False
    assert len(baseline.metadata["motion_loss"]) == 3  # still measured, for comparison with the guided run
    assert baseline.metadata["timesteps"] == guided.metadata["timesteps"]
    assert not np.array_equal(baseline.frames, guided.frames)


def test_zero_guidance_steps_generate_without_extracting_a_representation(pipe, reference, monkeypatch):
    def no_extraction(*args, **kwargs):
        raise AssertionError("a run without guided steps extracted a motion representation")

    monkeypatch.setattr(pipe, "obtain_representation", no_extraction)
    result = pipe(reference, short_params(guidance_steps=0))
    assert result.metadata["guided"] is False
    assert result.metadata["representation"] is None
    assert result.metadata["motion_loss"] == []
    assert result.metadata["timesteps"] == [999, 799, 599, 400, 200, 0]
    assert result.frames.shape == (8, SIZE, SIZE, 3)


def test_a_leading_schedule_whose_first_timestep_has_no_alpha_is_refused_before_any_step(pipe, reference):
    """diffusers' steps_offset of 1 turns 1000 leading steps into timesteps 1000 ... 1, and ᾱ_1000 does not exist."""
    with pytest.raises(ParameterError) as raised:
        pipe.check_inputs(short_params(schedule="leading", num_inference_steps=1000, guidance_steps=2))
    assert raised.value.name == "num_inference_steps" and "at most 999" in str(raised.value)
    pipe.check_inputs(short_params(schedule="leading", num_inference_steps=999, guidance_steps=2))


def test_a_weight_past_float16s_range_is_refused_for_float16_weights_at_parity_precision(pipe):
    """There the loss's gradient starts from the weight in float16: inf past 65504, and the latents turn NaN."""
    half = MotionClonePipeline.from_bundle(load_preset("tiny", seed=0, dtype=torch.float16))
    with pytest.raises(ParameterError) as raised:
        half.check_inputs(short_params(motion_guidance_weight=70000.0))
    assert raised.value.name == "motion_guidance_weight" and "at most 65504 with float16 weights" in str(raised.value)
    half.check_inputs(short_params(motion_guidance_weight=60000.0))
    half.check_inputs(short_params(motion_guidance_weight=70000.0, attention_precision="accurate"))  # float32 loss
    pipe.check_inputs(short_params(motion_guidance_weight=70000.0))  # float32 weights


def test_checking_a_leading_schedule_leaves_the_shared_scheduler_alone(pipe):
    """The server checks a new job on its socket thread while the worker runs another with the same scheduler."""
    pipe.scheduler.set_timesteps(20)
    running = pipe.scheduler.timesteps.clone()
    checked = pipe.prepare_timesteps(short_params(schedule="leading", num_inference_steps=50, guidance_steps=2))
    assert len(checked) == 50 and torch.equal(pipe.scheduler.timesteps, running)


def test_attention_maps_are_computed_only_in_the_guided_steps_conditional_passes(pipe, reference, monkeypatch):
    """The explicit F×F maps cost time and memory; an unguided pass (ε_u, a step after the guided ones) needs none."""
    from motionclone.backend.engine import attention_capture

    computed = []
    probs = attention_capture.temporal_attention_probs

    def counting(query, *args, **kwargs):
        computed.append(query)
        return probs(query, *args, **kwargs)

    monkeypatch.setattr(attention_capture, "temporal_attention_probs", counting)
    unguided = short_params(guidance_steps=0)
    pipe.denoise(
        pipe.prepare_noise(0, unguided),
        pipe.prepare_timesteps(unguided),
        None,
        guided_module_names(pipe.unet, unguided.motion_guidance_blocks),
        pipe.encode_prompt(""),
        pipe.encode_prompt(unguided.prompt),
        unguided,
        lambda *args: None,
        lambda: False,
    )
    assert computed == []
    pipe(reference, short_params(guidance_steps=2))  # extraction, then each guided step's conditional pass
    assert len(computed) == 3 * len(guided_module_names(pipe.unet, ["up_blocks.1"]))


def test_without_guidance_it_reproduces_diffusers_animatediff(pipe, reference):
    params = short_params(
        motion_guidance_weight=0.0,
        schedule="leading",
        motion_norm="cross-frame",
        cfg_form="standard",
        cfg_scale=7.5,
        seed=11,
    )
    ours = pipe(reference, params).frames
    # diffusers runs the same UNet: make sure it is the stock one (cross-frame norms) again
    assert type(pipe.unet.up_blocks[1].motion_modules[0].norm) is torch.nn.GroupNorm
    scheduler = official_ddim_scheduler()
    animatediff = AnimateDiffPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        motion_adapter=pipe.motion_adapter,
        scheduler=scheduler,
    )
    theirs = animatediff(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        num_frames=params.num_frames,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.cfg_scale,
        latents=pipe.prepare_noise(params.seed, params),
        output_type="np",
    ).frames[0]
    expected = (np.asarray(theirs) * 255).astype(np.uint8)
    assert ours.shape == expected.shape
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1


def test_official_cfg_form_equals_standard_form_with_scale_plus_one(pipe):
    u, c = torch.randn(2, 1, 4, 2, 4, 4)
    official = pipe.combine_cfg(u, c, short_params(cfg_scale=7.5))
    standard = pipe.combine_cfg(u, c, short_params(cfg_scale=8.5, cfg_form="standard"))
    torch.testing.assert_close(official, standard)


def test_cancel_stops_within_one_step(pipe, reference):
    steps_done = []

    def progress(stage, step, total):
        if stage == "denoise":
            steps_done.append(step)

    with pytest.raises(JobCancelled, match="step 2 of 6"):
        pipe(reference, short_params(), progress=progress, cancel=lambda: len(steps_done) >= 3)
    assert max(steps_done) == 2  # steps 1 and 2 finished, step 3 never started


def test_representation_round_trip_through_safetensors_gives_zero_loss(pipe, reference, tmp_path):
    params = short_params()
    frames = prepare_reference(reference, params.num_frames, SIZE, SIZE).frames
    empty = pipe.encode_prompt("")
    noise = pipe.prepare_noise(params.seed, params)
    representation, _, _ = pipe.obtain_representation(frames, noise, empty, params, None)
    loaded = MotionRepresentation.load(representation.save(tmp_path / "rep.safetensors"))
    assert loaded.module_names == representation.module_names
    assert all(index.dtype == torch.uint8 for index in loaded.indices.values())
    assert loaded.metadata["add_noise_step"] == "400"
    # the same reference latents and noise again: the attention equals the reference, so the loss is 0
    z0 = encode_reference(pipe.vae, frames, "sample", torch.Generator().manual_seed(params.seed + VAE_SEED_OFFSET))
    assert motion_loss_of(pipe, z0, noise, empty, loaded, params) == 0.0


def test_representation_cache_serves_other_seeds_when_decoupled(pipe, reference, tmp_path):
    cache = RepresentationCache(tmp_path)
    first = pipe(reference, short_params(seed=1, motion_seed=5), representation_cache=cache)
    second = pipe(reference, short_params(seed=2, motion_seed=5), representation_cache=cache)
    assert first.metadata["representation"]["cache_hit"] is False
    assert second.metadata["representation"]["cache_hit"] is True
    assert first.metadata["representation"]["key"] == second.metadata["representation"]["key"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    # a fresh cache object on the same folder finds it on disk
    third = pipe(reference, short_params(seed=3, motion_seed=5), representation_cache=RepresentationCache(tmp_path))
    assert third.metadata["representation"]["cache_hit"] is True
    assert not np.array_equal(first.frames, second.frames)


def test_the_representation_cache_extracts_again_when_the_same_seed_gives_other_noise(pipe, reference):
    """Shared noise between frames changes the extraction noise but not its seed; a cached representation of the
    independent noise would guide with maps that this run's noise never gave (the official coupling x_T = noise)."""
    cache = RepresentationCache()
    independent = pipe(reference, short_params(seed=1, motion_seed=5), representation_cache=cache)
    shared = pipe(
        reference, short_params(seed=1, motion_seed=5, noise_frame_correlation=0.8), representation_cache=cache
    )
    assert independent.metadata["representation"]["cache_hit"] is False
    assert shared.metadata["representation"]["cache_hit"] is False
    assert independent.metadata["representation"]["key"] != shared.metadata["representation"]["key"]


def test_representation_files_unused_for_the_retention_time_are_purged(pipe, reference, tmp_path):
    import os
    import time

    cache = RepresentationCache(tmp_path)
    key = pipe(reference, short_params(seed=1, motion_seed=5), representation_cache=cache).metadata["representation"]
    path = tmp_path / f"{key['key']}.safetensors"
    day_ago = time.time() - 86400
    os.utime(path, (day_ago, day_ago))
    assert RepresentationCache(tmp_path).get(key["key"]) is not None  # reading it counts as a use
    assert cache.purge_unused(3600) == [] and path.is_file()
    os.utime(path, (day_ago, day_ago))
    assert cache.get(key["key"]) is not None  # so does a hit in memory: a representation in use is kept
    assert cache.purge_unused(3600) == [] and path.is_file()
    os.utime(path, (day_ago, day_ago))
    assert cache.purge_unused(3600) == [key["key"]] and not path.exists()
    assert cache.get(key["key"]) is None  # gone from memory too


def test_coupled_noise_extracts_again_for_a_new_seed(pipe, reference):
    cache = RepresentationCache()
    first = pipe(reference, short_params(seed=1), representation_cache=cache)
    second = pipe(reference, short_params(seed=2), representation_cache=cache)
    assert first.metadata["representation"]["key"] != second.metadata["representation"]["key"]


def test_accurate_precision_and_non_square_sizes_work(pipe, reference):
    output = pipe(reference, short_params(attention_precision="accurate", height=64, width=96, top_k=2))
    assert output.frames.shape == (8, 64, 96, 3)
    assert output.metadata["parameters"]["attention_precision"] == "accurate"


def test_noise_frame_correlation_shares_that_share_of_the_variance_between_frames(pipe):
    official = pipe.prepare_noise(7, short_params(num_frames=16, height=256, width=256))
    correlated = pipe.prepare_noise(7, short_params(num_frames=16, height=256, width=256, noise_frame_correlation=0.6))
    frames = correlated[0].transpose(0, 1).reshape(16, -1)  # (F, C·H·W)
    assert frames.std(dim=1).sub(1).abs().max() < 0.03  # still N(0, I) on every frame
    between = torch.corrcoef(frames)[~torch.eye(16, dtype=torch.bool)]
    assert between.sub(0.6).abs().max() < 0.05
    assert torch.corrcoef(official[0].transpose(0, 1).reshape(16, -1))[0, 1].abs() < 0.05
    # The frames' own parts are the official noise: ρ = 0 draws exactly what the official code draws.
    assert torch.equal(
        pipe.prepare_noise(7, short_params(noise_frame_correlation=0.0)), pipe.prepare_noise(7, short_params())
    )


def test_progressive_noise_correlates_neighbours_by_rho_and_frames_k_apart_by_rho_to_the_k(pipe):
    params = short_params(
        num_frames=16, height=256, width=256, noise_frame_correlation=0.8, noise_correlation_form="progressive"
    )
    frames = pipe.prepare_noise(7, params)[0].transpose(0, 1).reshape(16, -1)
    assert frames.std(dim=1).sub(1).abs().max() < 0.03
    correlation = torch.corrcoef(frames)
    for k in (1, 2, 5, 10):
        apart = torch.diagonal(correlation, offset=k)
        assert apart.mean().sub(0.8**k).abs() < 0.03, k


def test_reference_flow_noise_pans_with_a_panning_reference(pipe):
    # A random texture panning 8 px (one latent cell) to the right per frame.
    texture = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    texture = np.asarray(Image.fromarray(texture).filter(ImageFilter.GaussianBlur(1.5)))
    frames = np.stack([np.roll(texture, 8 * index, axis=1) for index in range(6)])
    params = short_params(num_frames=6, noise_frame_correlation=0.9, noise_correlation_form="reference-flow")
    noise = pipe.prepare_noise(7, params, reference_source_maps(frames, SIZE // 8, SIZE // 8))[0]  # (C, F, h, w)
    assert noise.std(dim=(0, 2, 3)).sub(1).abs().max() < 0.1  # still standard normal on every frame
    inner = slice(6, 14)  # away from the edge where new content enters

    def correlation(frame, shift):
        moved = torch.roll(noise[:, 0], shifts=shift, dims=-1)[..., inner]
        return torch.corrcoef(torch.stack([noise[:, frame, :, inner].flatten(), moved.flatten()]))[0, 1]

    for frame in (1, 3, 5):
        assert correlation(frame, frame) > 0.8, frame  # frame t holds frame 0's shared noise, t cells to the right
        assert correlation(frame, 0) < 0.3, frame
    with pytest.raises(ParameterError) as error:
        pipe.prepare_noise(7, params)
    assert error.value.name == "noise_correlation_form"


def test_subject_placement_moves_the_subject_noise_along_the_reference_subject(pipe, reference):
    params = short_params(noise_frame_correlation=0.9, subject_placement="reference-path", subject_preview_steps=2)
    frames = prepare_reference(reference, params.num_frames, params.height, params.width).frames
    embeds = (pipe.encode_prompt(params.negative_prompt), pipe.encode_prompt(params.full_prompt))
    placement = pipe.plan_subject_placement(params, frames, *embeds, lambda: False)
    assert placement.word in params.prompt.split()
    columns = [column for _, column in placement.path]
    assert columns[-1] - columns[0] >= 8 and {row for row, _ in placement.path} == {placement.path[0][0]}
    noise = pipe.prepare_noise(params.seed, params, placement=placement)[0]  # (C, F, h, w)

    def patch(frame, centre, half=1):
        row, column = centre
        return noise[:, frame, row - half : row + half + 1, column - half : column + half + 1].flatten()

    first, last = placement.path[0], placement.path[-1]
    travelled = torch.corrcoef(torch.stack([patch(0, first), patch(7, last)]))[0, 1]
    stayed = torch.corrcoef(torch.stack([patch(0, last), patch(7, last)]))[0, 1]
    assert travelled > 0.8  # the last frame's noise there is the first frame's subject noise
    assert stayed < 0.5
    output = pipe(reference, params)
    assert output.metadata["subject_placement"]["path"] == [list(centre) for centre in placement.path]


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"subject_placement": "reference-path"}, "subject_placement"),  # no shared noise to move
        ({"subject_placement": "anywhere", "noise_frame_correlation": 0.5}, "subject_placement"),
        (
            {"subject_placement": "reference-path", "noise_frame_correlation": 0.5, "subject_word": "cat"},
            "subject_word",
        ),
    ],
)
def test_subject_placement_errors_name_the_field(pipe, reference, changes, name):
    with pytest.raises(ParameterError) as error:
        pipe(reference, short_params(**changes))
    assert error.value.name == name


def test_subject_placement_leaves_the_subject_alone_when_nothing_in_the_reference_moves(pipe, reference):
    still = np.repeat(reference[:1], 8, axis=0)
    free = short_params(noise_frame_correlation=0.5)
    placed = pipe(still, replace(free, subject_placement="reference-path"))
    assert "nothing in the reference moves" in placed.metadata["subject_placement"]["skipped"]
    np.testing.assert_array_equal(placed.frames, pipe(still, free).frames)


def test_subject_placement_in_a_camera_move_lets_all_the_shared_noise_travel_with_the_flow(pipe):
    texture = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    texture = np.asarray(Image.fromarray(texture).filter(ImageFilter.GaussianBlur(1.5)))
    pan = np.stack([np.roll(texture, 4 * index, axis=1) for index in range(8)])
    shared = short_params(noise_frame_correlation=0.5)
    placed = pipe(pan, replace(shared, subject_placement="reference-path"))
    record = placed.metadata["subject_placement"]
    assert "camera move" in record["camera_move"] and record["moving_share"] >= 0.5 and record["spread"] >= 0.6
    flowing = pipe(pan, replace(shared, noise_correlation_form="reference-flow"))
    np.testing.assert_array_equal(placed.frames, flowing.frames)
    assert not np.array_equal(placed.frames, pipe(pan, shared).frames)


def test_noise_frame_correlation_makes_unguided_frames_more_alike(pipe, reference):
    def frame_change(rho):
        frames = pipe(reference, short_params(motion_guidance_weight=0.0, noise_frame_correlation=rho)).frames
        return np.abs(np.diff(frames.astype(np.float32), axis=0)).mean()

    assert frame_change(0.9) < 0.5 * frame_change(0.0)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"noise_frame_correlation": 1.0}, "noise_frame_correlation"),
        ({"noise_frame_correlation": -0.1}, "noise_frame_correlation"),
        ({"noise_correlation_form": "random"}, "noise_correlation_form"),
        ({"num_frames": 257}, "num_frames"),
        ({"num_frames": 33, "context_length": 33}, "context_length"),
        ({"width": 100}, "width"),
        ({"guidance_steps": 7}, "guidance_steps"),
        ({"motion_guidance_blocks": ("up_blocks.7",)}, "motion_guidance_blocks"),
        ({"motion_guidance_weight": float("nan")}, "motion_guidance_weight"),
    ],
)
def test_bad_parameters_raise_named_errors_before_any_work(pipe, reference, changes, name):
    with pytest.raises(ParameterError) as raised:
        pipe(reference, short_params(**changes), progress=lambda *args: pytest.fail("work started"))
    assert raised.value.name == name
