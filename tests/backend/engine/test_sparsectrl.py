"""SparseCtrl image- and sketch-to-video on the tiny preset with tiny random SparseCtrl models."""

import numpy as np
import pytest
import torch

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.engine.parameters import CONFIG_PRESETS
from motionclone.backend.engine.sparsectrl import SparseCondition, SparseCtrl, condition_tensors
from motionclone.backend.errors import ParameterError
from motionclone.backend.models import load_preset
from motionclone.backend.samples import make_moving_square_clip

SIZE, FRAMES = 64, 4


@pytest.fixture(scope="module", params=["rgb", "scribble"])
def pipe(request) -> MotionClonePipeline:
    return MotionClonePipeline.from_bundle(load_preset("tiny", seed=0, sparsectrl=request.param))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return make_moving_square_clip(num_frames=8, height=SIZE, width=SIZE)


def params(**changes) -> MotionCloneParams:
    values = dict(
        prompt="a fox", num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=4, guidance_steps=2, seed=3
    )
    return MotionCloneParams(**{**values, **changes})


def condition(kind: str, frames=(0,)) -> SparseCondition:
    rng = np.random.default_rng(1)
    return SparseCondition(kind, rng.integers(0, 256, (len(frames), SIZE, SIZE, 3), dtype=np.uint8), tuple(frames))


def test_residuals_reach_the_unet_in_extraction_guided_and_unguided_passes(pipe, reference, monkeypatch) -> None:
    passes: list[tuple[int, bool]] = []
    forward = pipe.unet.forward

    def recording(sample, *args, **kwargs):
        residual = kwargs.get("mid_block_additional_residual")
        passes.append((sample.shape[0], residual is not None and bool(residual.abs().sum() > 0)))
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", recording)
    pipe(reference, params(), condition=condition(pipe.controlnet_kind))
    # extraction (batch 1), 2 guided steps (ε_u, ε_c: batch 1 each), 2 unguided steps (batch 2): every one conditioned
    assert passes == [(1, True), (1, True), (1, True), (1, True), (1, True), (2, True), (2, True)]


def test_the_motion_norm_switch_reaches_sparsectrls_motion_modules_too(pipe, reference) -> None:
    """Its down blocks hold motion modules like the UNet's: per-frame GroupNorm (official, default) there too."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    from motionclone.backend.engine.groupnorm import PerFrameGroupNorm

    def norms(model: torch.nn.Module) -> set[bool]:
        modules = [module for module in model.modules() if isinstance(module, AnimateDiffTransformer3D)]
        return {isinstance(module.norm, PerFrameGroupNorm) for module in modules}

    for mode, per_frame in (("per-frame", True), ("cross-frame", False)):
        pipe(
            reference,
            params(num_inference_steps=1, guidance_steps=1, motion_norm=mode),
            condition=condition(pipe.controlnet_kind),
        )
        assert norms(pipe.controlnet) == norms(pipe.unet) == {per_frame}


def test_zero_scale_gives_exactly_the_text_to_video_result(pipe, reference) -> None:
    plain = pipe(reference, params()).frames
    scaled_out = pipe(reference, params(controlnet_scale=0.0), condition=condition(pipe.controlnet_kind)).frames
    conditioned = pipe(reference, params(), condition=condition(pipe.controlnet_kind))
    assert np.array_equal(scaled_out, plain)
    assert not np.array_equal(conditioned.frames, plain)
    described = conditioned.metadata["condition"]
    assert described["kind"] == pipe.controlnet_kind and described["frames"] == [0] and len(described["sha256"]) == 64


def test_conditions_on_several_frames_and_named_errors(pipe, reference) -> None:
    kind = pipe.controlnet_kind
    wide = params(num_frames=16, num_inference_steps=2, guidance_steps=1)
    reference16 = make_moving_square_clip(num_frames=16, height=SIZE, width=SIZE)
    assert pipe(reference16, wide, condition=condition(kind, (0, 15))).frames.shape == (16, SIZE, SIZE, 3)
    for bad, field in [
        (condition(kind, (0, 16)), "condition_frames"),
        (condition(kind, (3, 1)), "condition_frames"),
        (condition("rgb" if kind == "scribble" else "scribble"), "condition_type"),
        (SparseCondition(kind, np.zeros((1, 32, 32, 3), np.uint8), (0,)), "condition"),
    ]:
        with pytest.raises(ParameterError) as error:
            pipe(reference16, wide, condition=bad)
        assert error.value.name == field


def test_extraction_without_sparsectrl_is_a_named_option(pipe, reference, monkeypatch) -> None:
    seen: list[bool] = []
    forward = pipe.unet.forward

    def recording(sample, *args, **kwargs):
        seen.append("mid_block_additional_residual" in kwargs)
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", recording)
    pipe(
        reference,
        params(sparsectrl_extraction="none", num_inference_steps=1, guidance_steps=1),
        condition=condition(pipe.controlnet_kind),
    )
    assert seen == [False, True, True]  # extraction bare, then ε_u and ε_c of the one guided step


def test_a_condition_needs_a_sparsectrl_model_and_the_single_step_method(reference) -> None:
    plain = MotionClonePipeline.from_bundle(load_preset("tiny", seed=0))
    with pytest.raises(ParameterError) as error:
        plain(reference, params(), condition=condition("rgb"))
    assert error.value.name == "condition"


def test_official_image_to_video_configs() -> None:
    rgb = MotionCloneParams.from_config("i2v-rgb", prompt="x")
    assert (rgb.num_inference_steps, rgb.guidance_steps, rgb.guidance_fraction, rgb.seed) == (100, 40, 0.3, 76739)
    sketch = MotionCloneParams.from_config("i2v-sketch", prompt="x")
    assert (sketch.num_inference_steps, sketch.guidance_steps, sketch.guidance_fraction) == (200, 120, 0.4)
    assert CONFIG_PRESETS["i2v-sketch"]["seed"] == 76739
    i2v_negative = (  # the i2v yamls' words, in their own order (the t2v ones start "bad anatomy, extra limbs")
        "ugly, deformed, noisy, blurry, distorted, out of focus, bad anatomy, extra limbs, poorly drawn face, "
        "poorly drawn hands, missing fingers"
    )
    assert rgb.negative_prompt == sketch.negative_prompt == i2v_negative


def test_residuals_do_not_depend_on_the_noisy_sample(pipe) -> None:
    cond, mask = condition_tensors(
        pipe.controlnet_kind,
        condition(pipe.controlnet_kind).images,
        (0,),
        FRAMES,
        pipe.vae,
        torch.float32,
        torch.Generator().manual_seed(0),
    )
    sparsectrl = SparseCtrl(pipe.controlnet, cond, mask, 1.0)
    embeds = pipe.encode_prompt("a fox").repeat_interleave(FRAMES, dim=0)
    a = sparsectrl.residuals(torch.randn(1, 4, FRAMES, 8, 8), 500, embeds)
    b = sparsectrl.residuals(torch.randn(1, 4, FRAMES, 8, 8), 500, embeds)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_scribbles_become_light_strokes_on_dark_whichever_way_they_were_drawn() -> None:
    from motionclone.backend.engine.sparsectrl import scribble_strokes

    page = np.full((2, 8, 8, 3), 255, dtype=np.uint8)
    page[:, 3, :] = 0  # a dark line on white, as the add-on's line art draws it
    page[1] = 255 - page[1]  # and the official way: a light stroke on black
    automatic = scribble_strokes(page, "auto")
    assert np.array_equal(automatic[0], 255 - page[0]) and np.array_equal(automatic[1], page[1])
    assert np.array_equal(scribble_strokes(page, "never"), page)
    assert np.array_equal(scribble_strokes(page, "always"), 255 - page)


def test_a_sketch_of_the_reference_draws_the_edges_as_light_strokes() -> None:
    from motionclone.backend.engine.sparsectrl import reference_sketch

    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    frames[0, 8:24, 8:24] = 200  # a square
    sketch = reference_sketch(frames)
    assert sketch.shape == frames.shape and set(np.unique(sketch)) == {0, 255}
    assert sketch[0, 8, 16].all() and sketch[0, 16, 8].all()  # on the square's edges
    assert not sketch[0, 16, 16].any() and not sketch[0, 2, 2].any()  # not inside it, not in the background


def test_scribble_inversion_and_the_sketch_extraction_reach_the_model(reference) -> None:
    pipe = MotionClonePipeline.from_bundle(load_preset("tiny", seed=0, sparsectrl="scribble"))
    drawn = np.full((1, SIZE, SIZE, 3), 255, dtype=np.uint8)
    drawn[0, 20:24, :] = 0  # dark on white
    auto = pipe(reference, params(), condition=SparseCondition("scribble", drawn, (0,))).frames
    flipped = SparseCondition("scribble", 255 - drawn, (0,))
    assert np.array_equal(auto, pipe(reference, params(scribble_invert="never"), condition=flipped).frames)
    assert not np.array_equal(
        auto,
        pipe(reference, params(scribble_invert="never"), condition=SparseCondition("scribble", drawn, (0,))).frames,
    )
    # The extraction pass (the first UNet pass) gets residuals of the reference's sketch instead of the drawing. Its
    # effect on a tiny random model's frames is below one grey level, so the residuals themselves are compared.
    extraction_residuals = {}
    forward = pipe.unet.forward
    for extraction in ("reference", "sketch"):

        def recording(sample, *args, _name=extraction, **kwargs):
            extraction_residuals.setdefault(_name, kwargs["mid_block_additional_residual"].clone())
            return forward(sample, *args, **kwargs)

        pipe.unet.forward = recording
        try:
            pipe(
                reference, params(sparsectrl_extraction=extraction), condition=SparseCondition("scribble", drawn, (0,))
            )
        finally:
            del pipe.unet.forward
    assert not torch.equal(extraction_residuals["reference"], extraction_residuals["sketch"])
    with pytest.raises(ParameterError, match="scribble_invert"):
        pipe(reference, params(scribble_invert="sometimes"), condition=flipped)
