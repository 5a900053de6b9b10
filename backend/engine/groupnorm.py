"""Per-frame GroupNorm for AnimateDiff's motion modules (a fidelity option). No bpy.

diffusers' `AnimateDiffTransformer3D` reshapes its input to (B, C, F, H, W) before `self.norm`, so its GroupNorm
takes statistics jointly over all frames ("cross-frame"). The original AnimateDiff, which the motion weights were
trained with, and MotionClone's copy of it normalise each frame on its own ("(b f) c h w", "per-frame"). The two give
visibly different outputs from the same weights, so the engine picks one explicitly and records which.
"""

import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from ..errors import ParameterError

# "per-frame": original AnimateDiff / MotionClone (parity); "cross-frame": diffusers' behaviour.
MOTION_NORMS = ("per-frame", "cross-frame")


class PerFrameGroupNorm(torch.nn.GroupNorm):
    """GroupNorm whose statistics are taken over each frame separately.

    Same parameters and state dict as `torch.nn.GroupNorm`, so it loads the same checkpoints.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise (B, C, F, H, W) frame by frame; a 4-D (B, C, H, W) input is a single frame per sample.

        Args:
            input: (B, C, F, H, W) as `AnimateDiffTransformer3D` passes it, or (B, C, H, W).

        Returns:
            The normalised tensor, same shape as `input`.
        """
        if input.ndim != 5:
            return super().forward(input)
        batch, channels, frames, height, width = input.shape
        per_frame = input.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        normalised = super().forward(per_frame)
        return normalised.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)


def _group_norm_like(norm: torch.nn.GroupNorm, cls: type[torch.nn.GroupNorm]) -> torch.nn.GroupNorm:
    """A `cls` with `norm`'s configuration that shares `norm`'s parameter tensors (same values, device, dtype)."""
    # Built on the meta device so no throw-away parameters are allocated before the real ones are put in.
    rebuilt = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine, device="meta")
    if norm.affine:
        rebuilt.weight = norm.weight
        rebuilt.bias = norm.bias
    return rebuilt.train(norm.training)


def set_motion_module_norm(model: torch.nn.Module, mode: str) -> int:
    """Set how every motion module of `model` normalises its input; in place and idempotent.

    Args:
        model: a diffusers `UNetMotionModel` or `SparseControlNetModel` (anything holding `AnimateDiffTransformer3D`).
        mode: "per-frame" (`PerFrameGroupNorm`, parity with the original AnimateDiff) or "cross-frame" (plain
            `torch.nn.GroupNorm`, diffusers' behaviour).

    Returns:
        The number of motion-module norms now in `mode` (all of them, including those that already were).

    Raises:
        ParameterError: `motion_norm` is not one of `MOTION_NORMS`.
        TypeError: a motion module's `norm` is not a GroupNorm.
    """
    if mode not in MOTION_NORMS:
        raise ParameterError("motion_norm", f"must be one of {list(MOTION_NORMS)}; got {mode!r}.")
    target = PerFrameGroupNorm if mode == "per-frame" else torch.nn.GroupNorm
    # Listed first so the module tree is not modified while it is being walked.
    motion_modules = [module for module in model.modules() if isinstance(module, AnimateDiffTransformer3D)]
    for motion_module in motion_modules:
        norm = motion_module.norm
        if not isinstance(norm, torch.nn.GroupNorm):
            raise TypeError(f"motion module norm is {type(norm).__name__}, expected a GroupNorm.")
        if type(norm) is not target:
            motion_module.norm = _group_norm_like(norm, target)
    return len(motion_modules)
