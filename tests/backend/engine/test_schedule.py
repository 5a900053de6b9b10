import pytest
import torch

from motionclone.backend.engine.schedule import guidance_ramp, guided_ddim_step, uneven_timesteps
from motionclone.backend.errors import ParameterError
from motionclone.backend.models.bundle import official_ddim_scheduler

# (N, G, guidance fraction) -> first values, the boundary around G, last values
SPEC_TABLE = [
    ((100, 50, 0.3), [999, 993, 987], [706, 700, 699, 685], [14, 0]),
    ((300, 180, 0.4), [999, 997, 995], [602, 600, 599, 594], [5, 0]),
    ((100, 40, 0.3), [999, 991, 984], [708, 700, 699, 687], [12, 0]),
    ((200, 120, 0.4), [999, 996, 992], [603, 600, 599, 591], [8, 0]),
]


@pytest.mark.parametrize(("config", "first", "boundary", "last"), SPEC_TABLE)
def test_uneven_schedule_matches_the_official_values(config, first, boundary, last):
    steps, guided, fraction = config
    timesteps = uneven_timesteps(steps, guided, fraction)
    assert len(timesteps) == steps
    assert timesteps.dtype == torch.int64
    assert (timesteps[1:] < timesteps[:-1]).all()
    assert timesteps[:3].tolist() == first
    assert timesteps[guided - 2 : guided + 2].tolist() == boundary
    assert timesteps[-2:].tolist() == last


def test_short_preview_schedule_is_strictly_decreasing():
    timesteps = uneven_timesteps(6, 3, 0.3)
    assert timesteps.tolist() == [999, 850, 700, 699, 350, 0]


def test_schedule_without_guided_steps_spreads_over_the_whole_range():
    assert uneven_timesteps(6, 0, 0.3).tolist() == [999, 799, 599, 400, 200, 0]


def test_schedule_rejects_more_guided_than_total_steps():
    with pytest.raises(ParameterError, match="`guidance_steps`"):
        uneven_timesteps(10, 11, 0.3)


def test_schedule_rejects_guided_steps_that_do_not_fit_the_range():
    # only 10 timesteps lie in [990, 999]
    with pytest.raises(ParameterError, match=r"`guidance_steps` is 20, but .* leaves only 10 timesteps"):
        uneven_timesteps(50, 20, 0.01)


def test_schedule_names_the_step_count_when_the_unguided_steps_do_not_fit():
    """1000 steps, 100 guided: 900 unguided steps for the 700 timesteps below 700 (guidance_steps was blamed)."""
    with pytest.raises(ParameterError) as raised:
        uneven_timesteps(1000, 100, 0.3)
    assert raised.value.name == "num_inference_steps" and "use at most 800, or more guidance_steps" in str(raised.value)


def test_schedule_rejects_a_guidance_fraction_too_small_to_leave_a_guided_timestep():
    with pytest.raises(ParameterError, match="`guidance_fraction` is too small"):
        uneven_timesteps(10, 1, 1e-17)  # 1 − f is 1.0 in floats: the guided step would be timestep 1000
    assert int(uneven_timesteps(10, 1, 0.001)[0]) == 999


def test_ramps_follow_the_official_warm_up_and_cool_down():
    ramps = [guidance_ramp(i, 50, 10, 10) for i in range(50)]
    assert ramps[0] == pytest.approx(0.1)
    assert ramps[9] == pytest.approx(1.0)
    assert ramps[40] == pytest.approx(1.0)  # i = G − 10 still has λ = 1
    assert ramps[41] == pytest.approx(0.9)
    assert ramps[49] == pytest.approx(0.1)


def test_overlapping_ramps_multiply_as_in_the_official_code():
    # G = 3 with warm-up and cool-down of 10: both factors apply on every step
    assert [guidance_ramp(i, 3, 10, 10) for i in range(3)] == pytest.approx([0.1 * 0.3, 0.2 * 0.2, 0.3 * 0.1])


def test_ddim_step_without_score_equals_diffusers_on_a_leading_schedule():
    scheduler = official_ddim_scheduler()
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8, generator=generator, dtype=torch.float64)
    timesteps = scheduler.timesteps.tolist()
    for i, t in enumerate(timesteps):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        expected = scheduler.step(noise, t, x, eta=0.0).prev_sample
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        ours = guided_ddim_step(x, noise, t, t_prev, scheduler.alphas_cumprod, scheduler.final_alpha_cumprod)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
        x = expected


def test_score_enters_the_direction_term_only():
    scheduler = official_ddim_scheduler()
    a = scheduler.alphas_cumprod
    x = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x)
    score = torch.randn_like(x)
    plain = guided_ddim_step(x, noise, 999, 993, a, scheduler.final_alpha_cumprod)
    guided = guided_ddim_step(x, noise, 999, 993, a, scheduler.final_alpha_cumprod, score)
    # x_{t_prev} = DDIM(x_t, ε) − √(1−ᾱ_{t_prev})·√(1−ᾱ_t)·∇L
    expected = plain - (1 - a[993]).sqrt() * (1 - a[999]).sqrt() * score
    torch.testing.assert_close(guided, expected.to(guided.dtype))


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def official_customized_step(x, noise, t, t_prev, alphas_cumprod, final_alpha_cumprod, score=None):
    """The official DDIM step with guidance, operation by operation (η = 0, guidance_scale 1.0, host-side ᾱ)."""
    alpha_prod_t = alphas_cumprod[t]
    alpha_prod_t_prev = alphas_cumprod[t_prev] if t_prev >= 0 else final_alpha_cumprod
    beta_prod_t = 1 - alpha_prod_t
    pred_original_sample = (x - beta_prod_t ** (0.5) * noise) / alpha_prod_t ** (0.5)
    pred_epsilon = noise
    if score is not None:
        pred_epsilon = pred_epsilon - 1.0 * (1 - alpha_prod_t) ** (0.5) * score
    std_dev_t = 0.0 * alpha_prod_t
    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
    return alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reduced_precision_step_equals_the_official_formula_bit_for_bit(device, dtype):
    scheduler = official_ddim_scheduler()
    generator = torch.Generator().manual_seed(3)
    for t, t_prev in ((999, 993), (700, 699), (400, 386), (14, 0), (0, -1)):
        x, noise, score = (torch.randn(1, 4, 2, 8, 8, generator=generator).to(device, dtype) for _ in range(3))
        for guidance in (None, score):
            ours = guided_ddim_step(
                x, noise, t, t_prev, scheduler.alphas_cumprod, scheduler.final_alpha_cumprod, guidance
            )
            official = official_customized_step(
                x, noise, t, t_prev, scheduler.alphas_cumprod, scheduler.final_alpha_cumprod, guidance
            )
            assert ours.dtype == dtype and torch.equal(ours, official), (t, guidance is None)


def test_last_step_uses_the_final_alpha():
    scheduler = official_ddim_scheduler()
    x = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x)
    a_t = scheduler.alphas_cumprod[0]
    x0 = (x - (1 - a_t).sqrt() * noise) / a_t.sqrt()
    out = guided_ddim_step(x, noise, 0, -1, scheduler.alphas_cumprod, scheduler.final_alpha_cumprod)
    torch.testing.assert_close(out, x0)  # ᾱ_{-1} = 1: the step lands on x̂_0
