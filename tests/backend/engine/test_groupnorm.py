"""Tests for the per-frame motion-module GroupNorm."""

from collections.abc import Iterator

import pytest
import torch
from diffusers import SparseControlNetModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from motionclone.backend.engine.groupnorm import MOTION_NORMS, PerFrameGroupNorm, set_motion_module_norm
from motionclone.backend.errors import ParameterError
from motionclone.backend.models.bundle import ModelBundle
from motionclone.backend.models.tiny import build_tiny_bundle

FRAMES = 4
TIMESTEP = 400
TINY_MOTION_MODULES = 4 * 2 + 4 * 3  # 2 per down block, 3 per up block, none in the mid block


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return build_tiny_bundle(seed=0)


@pytest.fixture
def unet(bundle: ModelBundle) -> Iterator[torch.nn.Module]:
    """The tiny UNet, put back to diffusers' cross-frame norm after each test."""
    yield bundle.unet
    set_motion_module_norm(bundle.unet, "cross-frame")


def epsilon(bundle: ModelBundle) -> torch.Tensor:
    ids = bundle.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents = torch.randn(1, 4, FRAMES, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeddings = bundle.text_encoder(ids)[0].repeat_interleave(FRAMES, dim=0)
        return bundle.unet(latents, TIMESTEP, embeddings).sample


def random_group_norm(cls: type[torch.nn.GroupNorm] = torch.nn.GroupNorm) -> torch.nn.GroupNorm:
    norm = cls(num_groups=2, num_channels=6, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(generator=torch.Generator().manual_seed(1))
        norm.bias.normal_(generator=torch.Generator().manual_seed(2))
    return norm


# The module


def test_per_frame_group_norm_equals_a_frame_by_frame_reference() -> None:
    norm = random_group_norm(PerFrameGroupNorm)
    # frames on very different scales, so joint and per-frame statistics disagree
    x = torch.randn(2, 6, 5, 3, 4, generator=torch.Generator().manual_seed(0)) * torch.arange(1.0, 6.0)[:, None, None]
    reference = torch.stack(
        [torch.nn.functional.group_norm(x[:, :, f], 2, norm.weight, norm.bias, norm.eps) for f in range(5)], dim=2
    )
    with torch.no_grad():
        per_frame = norm(x)
        cross_frame = torch.nn.functional.group_norm(x, 2, norm.weight, norm.bias, norm.eps)
    assert per_frame.shape == x.shape
    torch.testing.assert_close(per_frame, reference, atol=1e-5, rtol=1e-5)
    assert (per_frame - cross_frame).abs().max() > 0.1


def test_four_dimensional_input_is_a_plain_group_norm() -> None:
    plain, per_frame = random_group_norm(), random_group_norm(PerFrameGroupNorm)
    x = torch.randn(3, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(per_frame(x), plain(x), atol=0, rtol=0)


def test_per_frame_group_norm_loads_a_group_norm_state_dict() -> None:
    plain, per_frame = random_group_norm(), PerFrameGroupNorm(num_groups=2, num_channels=6, eps=1e-6)
    per_frame.load_state_dict(plain.state_dict(), strict=True)
    torch.testing.assert_close(per_frame.weight, plain.weight, atol=0, rtol=0)


# Switching the motion modules of a model


def test_set_per_frame_swaps_every_motion_module_norm_and_keeps_the_state_dict(
    bundle: ModelBundle, unet: torch.nn.Module
) -> None:
    state_before = {key: value.clone() for key, value in unet.state_dict().items()}
    norms = [module.norm for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    assert len(norms) == TINY_MOTION_MODULES

    assert set_motion_module_norm(unet, "per-frame") == TINY_MOTION_MODULES

    swapped = [module.norm for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    assert all(type(norm) is PerFrameGroupNorm for norm in swapped)
    assert all(new.weight is old.weight and new.bias is old.bias for new, old in zip(swapped, norms, strict=True))
    assert all((new.num_groups, new.eps) == (old.num_groups, old.eps) for new, old in zip(swapped, norms, strict=True))
    state_after = unet.state_dict()
    assert list(state_after) == list(state_before)
    assert all(torch.equal(state_after[key], value) for key, value in state_before.items())
    # The spatial ResNet norms are not motion-module norms and stay as they are.
    assert type(unet.up_blocks[1].resnets[0].norm1) is torch.nn.GroupNorm


def test_set_motion_module_norm_is_idempotent(unet: torch.nn.Module) -> None:
    set_motion_module_norm(unet, "per-frame")
    first = [module.norm for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    assert set_motion_module_norm(unet, "per-frame") == TINY_MOTION_MODULES
    second = [module.norm for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_unet_output_depends_on_the_mode_and_cross_frame_restores_it_exactly(
    bundle: ModelBundle, unet: torch.nn.Module
) -> None:
    cross_frame = epsilon(bundle)
    set_motion_module_norm(unet, "per-frame")
    per_frame = epsilon(bundle)
    assert (per_frame - cross_frame).abs().max() > 1e-3

    assert set_motion_module_norm(unet, "cross-frame") == TINY_MOTION_MODULES
    motion_modules = [module for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    assert all(type(module.norm) is torch.nn.GroupNorm for module in motion_modules)
    torch.testing.assert_close(epsilon(bundle), cross_frame, atol=0, rtol=0)


def test_unknown_mode_raises_and_lists_the_choices(unet: torch.nn.Module) -> None:
    with pytest.raises(ParameterError) as raised:
        set_motion_module_norm(unet, "per_frame")
    assert raised.value.name == "motion_norm"
    assert all(mode in str(raised.value) for mode in MOTION_NORMS)


def test_sparse_controlnet_motion_modules_are_switched_too() -> None:
    controlnet = SparseControlNetModel(
        block_out_channels=(8, 8),
        layers_per_block=2,
        in_channels=4,
        conditioning_channels=3,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        cross_attention_dim=8,
        conditioning_embedding_out_channels=(8, 8),
        norm_num_groups=1,
    )
    assert set_motion_module_norm(controlnet, "per-frame") == 2 * 2
    motion_norms = [module.norm for module in controlnet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    assert all(type(norm) is PerFrameGroupNorm for norm in motion_norms)


def test_device_and_dtype_are_preserved() -> None:
    motion_module = AnimateDiffTransformer3D(
        num_attention_heads=2, attention_head_dim=4, in_channels=8, norm_num_groups=2
    )
    motion_module.to(torch.bfloat16)
    set_motion_module_norm(motion_module, "per-frame")
    assert motion_module.norm.weight.dtype == torch.bfloat16
    assert motion_module.norm.weight.device.type == "cpu"
    x = torch.randn(2 * 3, 8, 2, 2, dtype=torch.bfloat16)  # (B·F, C, h, w) as the blocks call it
    assert motion_module(x, num_frames=3).dtype == torch.bfloat16
