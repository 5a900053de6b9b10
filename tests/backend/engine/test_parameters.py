import math

import pytest

from motionclone.backend.engine.parameters import (
    CONFIG_PRESETS,
    OFFICIAL_NEGATIVE_PROMPT,
    MotionCloneParams,
    validate_params,
)
from motionclone.backend.errors import ParameterError


def test_defaults_are_the_official_camera_config():
    params = MotionCloneParams(prompt="x")
    assert (params.num_inference_steps, params.guidance_steps, params.guidance_fraction) == (100, 50, 0.3)
    assert params.motion_guidance_weight == 2000
    assert params.add_noise_step == 400
    assert params.motion_guidance_blocks == ("up_blocks.1",)
    assert params.cfg_scale == 7.5 and params.cfg_form == "official"
    assert params.negative_prompt == OFFICIAL_NEGATIVE_PROMPT
    assert params.append_positive_prompt is False  # parity with bug B1
    assert params.seed == 2025
    assert (params.num_frames, params.height, params.width) == (16, 512, 512)


def test_object_config_overrides_schedule_and_keeps_user_overrides():
    params = MotionCloneParams.from_config("object", prompt="x", guidance_steps=170)
    assert params.num_inference_steps == CONFIG_PRESETS["object"]["num_inference_steps"] == 300
    assert params.guidance_fraction == 0.4
    assert params.guidance_steps == 170


def unet_work(config: dict) -> float:
    """Batch-1 forwards of a run by the cost model (docs/performance.md): guided step ≈ 2.7, an unguided CFG step 2."""
    guided = config["guidance_steps"]
    return 2.7 * guided + 2.0 * (config["num_inference_steps"] - guided)


@pytest.mark.parametrize(("fast", "official"), [("camera-fast", "camera"), ("object-fast", "object")])
def test_fast_configs_cost_at_most_40_percent_and_keep_the_total_guidance(fast, official):
    fast_params = MotionCloneParams.from_config(fast, prompt="x")
    official_params = MotionCloneParams.from_config(official, prompt="x")
    validate_params(fast_params)
    budget = unet_work(CONFIG_PRESETS[fast]) / unet_work(
        {"num_inference_steps": official_params.num_inference_steps, "guidance_steps": official_params.guidance_steps}
    )
    assert budget <= 0.4
    # The same guided timestep range, and the weight scaled so that the guidance summed over the steps holds.
    assert fast_params.guidance_fraction == official_params.guidance_fraction
    total = fast_params.motion_guidance_weight * fast_params.guidance_steps
    assert total == pytest.approx(official_params.motion_guidance_weight * official_params.guidance_steps)


def test_unknown_config_and_unknown_parameter_are_named():
    with pytest.raises(ParameterError, match=r"`config`.*camera.*object"):
        MotionCloneParams.from_config("dolly", prompt="x")
    with pytest.raises(ParameterError, match=r"`guidance_sclae`"):
        MotionCloneParams.from_dict({"prompt": "x", "guidance_sclae": 1})


def test_positive_prompt_is_appended_with_a_separator_only_when_asked():
    assert MotionCloneParams(prompt="a fox").full_prompt == "a fox"
    appended = MotionCloneParams(prompt="a fox", append_positive_prompt=True).full_prompt
    assert appended.startswith("a fox, 8k, high detailed")


def test_round_trip_through_plain_values():
    params = MotionCloneParams(prompt="x", motion_guidance_blocks=("up_blocks.1", "up_blocks.2"), motion_seed=3)
    assert MotionCloneParams.from_dict(params.to_dict()) == params


@pytest.mark.parametrize(
    ("changes", "name", "fragment"),
    [
        ({"guidance_steps": 101}, "guidance_steps", "between 0 and 100"),
        ({"num_frames": 257}, "num_frames", "between 2 and 256"),  # windows: beyond the adapter's 32 frames
        ({"num_frames": 33, "context_length": 33}, "context_length", "between 2 and 32"),
        ({"context_overlap": 16}, "context_overlap", "between 0 and 15"),
        ({"num_frames": 48, "motion_source": "inversion"}, "num_frames", "single-step method only"),
        ({"frame_step": 0}, "frame_step", "between 1"),
        ({"context_schedule": "random"}, "context_schedule", "uniform, looped"),
        ({"width": 500}, "width", "multiple of 8"),
        ({"height": -8}, "height", "between 8 and 2048"),
        ({"guidance_fraction": math.nan}, "guidance_fraction", "nan"),
        ({"motion_guidance_weight": -1.0}, "motion_guidance_weight", "[0.0, 10000000.0]"),
        ({"cfg_scale": math.inf}, "cfg_scale", "inf"),
        ({"seed": -1}, "seed", "between 0"),
        ({"prompt": "  "}, "prompt", "must not be empty"),
        ({"cfg_form": "weird"}, "cfg_form", "official, standard"),
        ({"motion_norm": "none"}, "motion_norm", "per-frame, cross-frame"),
        ({"num_inference_steps": 2.5}, "num_inference_steps", "integer"),
        ({"top_k": 0}, "top_k", "between 1"),
        ({"motion_guidance_blocks": ()}, "motion_guidance_blocks", "non-empty"),
        ({"subject_preview_steps": 1}, "subject_preview_steps", "between 2 and 100"),  # one step runs at t = 0
    ],
)
def test_invalid_values_raise_an_error_naming_the_parameter_and_its_range(changes, name, fragment):
    params = MotionCloneParams(prompt="x").replace(**changes)
    with pytest.raises(ParameterError) as raised:
        validate_params(params, max_frames=32)
    assert raised.value.name == name
    assert f"`{name}`" in str(raised.value)
    assert fragment in str(raised.value)


def test_valid_defaults_pass():
    validate_params(MotionCloneParams(prompt="a fox"), max_frames=32)
