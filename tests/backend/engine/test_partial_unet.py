"""Tests for partial UNet runs (official-code bug B6) on the tiny SD-1.5-layout bundle."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from motionclone.backend.engine.attention_capture import capture_temporal_attention, guided_module_names
from motionclone.backend.engine.partial_unet import block_execution_order, last_block, no_grad_after, run_unet_until
from motionclone.backend.errors import ParameterError
from motionclone.backend.models.bundle import ModelBundle
from motionclone.backend.models.tiny import build_tiny_bundle

FRAMES = 6
TIMESTEP = 400
EXECUTION_ORDER = [f"down_blocks.{i}" for i in range(4)] + ["mid_block"] + [f"up_blocks.{i}" for i in range(4)]


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return build_tiny_bundle(seed=0)


@pytest.fixture(scope="module")
def embeddings(bundle: ModelBundle) -> torch.Tensor:
    """Empty-prompt CLIP embeddings repeated over frames: UNetMotionModel wants (B·F, 77, C)."""
    ids = bundle.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return bundle.text_encoder(ids)[0].repeat_interleave(FRAMES, dim=0)


def random_latents() -> torch.Tensor:
    return torch.randn(1, 4, FRAMES, 16, 16, generator=torch.Generator().manual_seed(0))


@contextmanager
def record_outputs(unet: torch.nn.Module, names: list[str]) -> Iterator[dict[str, object]]:
    """Forward hooks that keep each named module's output (modules that never run stay absent)."""
    outputs: dict[str, object] = {}

    def keep(name: str) -> Callable[..., None]:
        return lambda module, args, output: outputs.update({name: output})

    handles = [unet.get_submodule(name).register_forward_hook(keep(name)) for name in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def first_tensor(output: object) -> torch.Tensor:
    """Down blocks return (sample, res_samples); the others return the sample."""
    return output[0] if isinstance(output, tuple) else output


def motion_loss(probs: dict[str, torch.Tensor]) -> torch.Tensor:
    targets = torch.Generator().manual_seed(1)
    return sum(((A - torch.rand(A.shape, generator=targets)) ** 2).mean() for A in probs.values())


# Execution order and the last guided block


def test_block_execution_order_puts_mid_block_between_down_and_up(bundle: ModelBundle) -> None:
    assert block_execution_order(bundle.unet) == EXECUTION_ORDER


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        (["up_blocks.1"], "up_blocks.1"),
        (["up_blocks.1", "down_blocks.2"], "up_blocks.1"),
        (["up_blocks.2", "up_blocks.1"], "up_blocks.2"),
        (["down_blocks.3", "down_blocks.0"], "down_blocks.3"),
        (["mid_block", "down_blocks.3"], "mid_block"),
    ],
)
def test_last_block_follows_execution_order(bundle: ModelBundle, blocks: list[str], expected: str) -> None:
    assert last_block(bundle.unet, blocks) == expected


@pytest.mark.parametrize("blocks", [[], ["up_blocks.9"], ["blocks.1"], "up_blocks.1"])
def test_last_block_rejects_unknown_blocks(bundle: ModelBundle, blocks: list[str]) -> None:
    with pytest.raises(ParameterError) as raised:
        last_block(bundle.unet, blocks)
    assert raised.value.name == "motion_guidance_blocks"


# Early exit for extraction


def test_early_exit_captures_the_same_probabilities_and_runs_nothing_later(
    bundle: ModelBundle, embeddings: torch.Tensor
) -> None:
    unet, latents = bundle.unet, random_latents()
    module_names = guided_module_names(unet, ["up_blocks.1"])
    later = ["up_blocks.2", "up_blocks.3", "conv_norm_out", "conv_out"]
    hooks_before = len(unet.up_blocks[1]._forward_hooks)
    with torch.no_grad():
        with capture_temporal_attention(unet, module_names) as full:
            unet(latents, TIMESTEP, embeddings)
        with capture_temporal_attention(unet, module_names) as early, record_outputs(unet, later) as ran:
            run_unet_until(unet, "up_blocks.1", latents, TIMESTEP, embeddings)

    assert ran == {}
    assert list(early.probs) == module_names
    for name in module_names:
        torch.testing.assert_close(early.probs[name], full.probs[name], atol=0, rtol=0)
    assert len(unet.up_blocks[1]._forward_hooks) == hooks_before  # the stop hook is gone


def test_early_exit_after_a_down_block_skips_mid_and_up_blocks(bundle: ModelBundle, embeddings: torch.Tensor) -> None:
    later = ["down_blocks.3", "mid_block", "up_blocks.0", "conv_out"]
    with torch.no_grad(), record_outputs(bundle.unet, ["down_blocks.2", *later]) as ran:
        run_unet_until(bundle.unet, "down_blocks.2", random_latents(), TIMESTEP, embeddings)
    assert list(ran) == ["down_blocks.2"]


def test_early_exit_rejects_an_unknown_block(bundle: ModelBundle, embeddings: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="block_name"):
        run_unet_until(bundle.unet, "up_blocks.9", random_latents(), TIMESTEP, embeddings)


# No autograd after the last guided block


def epsilon_and_gradient(
    bundle: ModelBundle, embeddings: torch.Tensor, guided_block: str, without_grad_after: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
    """ε, ∂L/∂x_t of a loss on the guided block's maps, and the outputs of every top-level block."""
    unet = bundle.unet
    x_t = random_latents().requires_grad_(True)
    module_names = guided_module_names(unet, [guided_block])
    with capture_temporal_attention(unet, module_names) as store, record_outputs(unet, EXECUTION_ORDER) as outputs:
        if without_grad_after:
            with no_grad_after(unet, guided_block):
                epsilon = unet(x_t, TIMESTEP, embeddings).sample
        else:
            epsilon = unet(x_t, TIMESTEP, embeddings).sample
        (gradient,) = torch.autograd.grad(motion_loss(store.probs), x_t)
    return epsilon.detach(), gradient, outputs


@pytest.mark.parametrize("guided_block", ["up_blocks.1", "down_blocks.2"])
def test_no_grad_after_leaves_epsilon_and_gradient_unchanged(
    bundle: ModelBundle, embeddings: torch.Tensor, guided_block: str
) -> None:
    epsilon_full, gradient_full, outputs_full = epsilon_and_gradient(bundle, embeddings, guided_block, False)
    epsilon, gradient, outputs = epsilon_and_gradient(bundle, embeddings, guided_block, True)

    torch.testing.assert_close(epsilon, epsilon_full, atol=1e-6, rtol=0)
    torch.testing.assert_close(gradient, gradient_full, atol=1e-9, rtol=1e-6)
    assert gradient.abs().max() > 0
    later = EXECUTION_ORDER[EXECUTION_ORDER.index(guided_block) + 1 :]
    assert all(first_tensor(outputs_full[name]).requires_grad for name in EXECUTION_ORDER)
    assert first_tensor(outputs[guided_block]).requires_grad
    assert not any(first_tensor(outputs[name]).requires_grad for name in later)


def test_no_grad_after_restores_forwards_and_keeps_names(bundle: ModelBundle) -> None:
    unet = bundle.unet
    keys = list(unet.state_dict())
    with no_grad_after(unet, "up_blocks.1"):
        assert "forward" in vars(unet.up_blocks[3])
        assert "forward" not in vars(unet.up_blocks[1])
        assert list(unet.state_dict()) == keys
    assert not any("forward" in vars(unet.get_submodule(name)) for name in EXECUTION_ORDER)

    with pytest.raises(KeyError), no_grad_after(unet, "down_blocks.0"):
        raise KeyError("inside")
    assert not any("forward" in vars(unet.get_submodule(name)) for name in EXECUTION_ORDER)


def test_no_grad_after_puts_back_an_instance_forward_it_found(bundle: ModelBundle) -> None:
    block = bundle.unet.up_blocks[3]
    patched = block.forward  # a bound method stored on the instance, as accelerate's hooks do
    block.forward = patched
    try:
        with no_grad_after(bundle.unet, "up_blocks.1"):
            assert block.forward is not patched
        assert vars(block)["forward"] is patched
    finally:
        del block.forward
