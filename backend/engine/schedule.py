"""The uneven timestep schedule, the guidance ramps and the guided DDIM step of MotionClone. No bpy.

Notation (the DDIM paper's):
    ᾱ_t          alphas_cumprod[t]; ᾱ_{-1} = final_alpha_cumprod (1 with `set_alpha_to_one`)
    x_t          the latent at timestep t
    ε            the classifier-free-guided noise prediction at t
    x̂_0          predicted clean latent, (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t
    ∇L           gradient of the motion loss with respect to x_t (the "score" here)
    G, N         guided steps, total steps
"""

import numpy as np
import torch

from ..errors import ParameterError

NUM_TRAIN_TIMESTEPS = 1000


def uneven_timesteps(
    num_inference_steps: int,
    guidance_steps: int,
    guidance_fraction: float,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> torch.LongTensor:
    """The official "uneven" schedule: G steps in [a, T−1] then N−G steps in [0, a−1], with a = int((1 − f)·T).

    Both halves are `round(linspace(...))` with numpy's round-half-to-even, descending. `steps_offset` plays no part.

    Args:
        num_inference_steps (`int`): N, the total number of denoising steps.
        guidance_steps (`int`): G, the number of steps that get motion guidance (G ≤ N).
        guidance_fraction (`float`): the official `guidance_scale`: the fraction of the timestep range, at the noisy
            end, that the guided steps cover.
        num_train_timesteps (`int`, defaults to 1000): T.

    Returns:
        `torch.LongTensor` of N strictly decreasing timesteps, the guided ones first. With G = 0 (no guidance) there
        is no guided part, and the N steps spread over the whole range: round(linspace(0, T − 1, N)), descending.
    """
    if not 0 <= guidance_steps <= num_inference_steps:
        raise ParameterError(
            "guidance_steps",
            f"must be between 0 and `num_inference_steps` ({num_inference_steps}), got {guidance_steps}",
        )
    T = num_train_timesteps
    a = int((1 - guidance_fraction) * T) if guidance_steps > 0 else T
    if guidance_steps > 0 and a >= T:  # 1 − f rounds to 1: no timestep is left for the guided steps
        raise ParameterError(
            "guidance_fraction", f"is too small to leave any of the {T} timesteps to guidance, got {guidance_fraction}"
        )
    t_guided = np.round(np.linspace(a, T - 1, guidance_steps))[::-1]
    t_unguided = np.round(np.linspace(0, a - 1, num_inference_steps - guidance_steps))[::-1]
    timesteps = np.concatenate([t_guided, t_unguided]).astype(np.int64)
    if np.any(np.diff(timesteps) >= 0):
        # Happens only for tiny ranges (e.g. more guided steps than timesteps in [a, T−1]); the official code would
        # silently repeat timesteps. Named: the side that does not fit.
        if guidance_steps > T - a:
            raise ParameterError(
                "guidance_steps",
                f"is {guidance_steps}, but `guidance_fraction` ({guidance_fraction}) leaves only {T - a} timesteps to "
                f"the guided steps: use at most {T - a}, or a larger guidance_fraction",
            )
        raise ParameterError(
            "num_inference_steps",
            f"is {num_inference_steps}, which leaves {num_inference_steps - guidance_steps} unguided steps, but "
            f"`guidance_fraction` ({guidance_fraction}) leaves only {a} timesteps below the guided ones: use at most "
            f"{a + guidance_steps}, or more guidance_steps",
        )
    return torch.from_numpy(timesteps.copy())


def guidance_ramp(step_index: int, guidance_steps: int, warm_up_steps: int, cool_down_steps: int) -> float:
    """λ(i), the factor on the motion loss at guided step i.

    Warm-up (i+1)/warm_up for i < warm_up; cool-down (G−i)/cool_down for i > G − cool_down. Where the two ramps
    overlap (short runs: G < warm_up + cool_down) both factors apply, as in the official code.
    """
    ramp = 1.0
    if step_index < warm_up_steps:
        ramp *= (step_index + 1) / warm_up_steps
    if cool_down_steps > 0 and step_index > guidance_steps - cool_down_steps:
        ramp *= (guidance_steps - step_index) / cool_down_steps
    return ramp


def alpha_cumprod_at(alphas_cumprod: torch.Tensor, final_alpha_cumprod: torch.Tensor | float, t: int) -> torch.Tensor:
    """ᾱ_t, with ᾱ_{-1} = `final_alpha_cumprod` for the step that lands on the clean sample."""
    if t < 0:
        return torch.as_tensor(final_alpha_cumprod, dtype=alphas_cumprod.dtype)
    return alphas_cumprod[t]


def guided_ddim_step(
    x_t: torch.Tensor,
    noise_pred: torch.Tensor,
    t: int,
    t_prev: int,
    alphas_cumprod: torch.Tensor,
    final_alpha_cumprod: torch.Tensor | float,
    score: torch.Tensor | None = None,
) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from t to an explicit t_prev, with the guidance gradient.

    x̂_0 comes from the unguided ε; only the direction term uses ε' = ε − √(1−ᾱ_t)·∇L (official behaviour, B11):
        x_{t_prev} = √ᾱ_{t_prev}·x̂_0 + √(1−ᾱ_{t_prev})·ε'

    Args:
        x_t: latent at t.
        noise_pred: ε at t (after classifier-free guidance).
        t: current timestep.
        t_prev: the next timestep of the schedule, or −1 after the last one.
        alphas_cumprod: the scheduler's ᾱ table.
        final_alpha_cumprod: ᾱ_{-1}.
        score: ∇L with respect to x_t, or None for a plain DDIM step.

    Returns:
        x_{t_prev}, in the dtype of `x_t`.
    """
    # The coefficients stay 0-dim float32 tensors on the host, as in the official step and diffusers' DDIMScheduler
    # (whose ᾱ table never leaves the CPU): a float16 tensor times such a scalar keeps the x_t dtype, and on CUDA the
    # kernel reads the scalar at float32 precision instead of rounding it to float16 first.
    alpha_prod_t = alpha_cumprod_at(alphas_cumprod, final_alpha_cumprod, t).to("cpu", torch.float32)
    alpha_prod_t_prev = alpha_cumprod_at(alphas_cumprod, final_alpha_cumprod, t_prev).to("cpu", torch.float32)
    beta_prod_t = 1 - alpha_prod_t
    x0_pred = (x_t - beta_prod_t**0.5 * noise_pred) / alpha_prod_t**0.5
    if score is not None:
        noise_pred = noise_pred - beta_prod_t**0.5 * score
    direction = (1 - alpha_prod_t_prev) ** 0.5 * noise_pred
    return alpha_prod_t_prev**0.5 * x0_pred + direction
