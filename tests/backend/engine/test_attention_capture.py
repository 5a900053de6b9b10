"""Tests for the temporal-attention capture (official-code bug B6) on the tiny SD-1.5-layout bundle."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from motionclone.backend.engine.attention_capture import (
    PRECISIONS,
    TEMPORAL_ATTENTION_PATTERN,
    TemporalAttentionProbsProcessor,
    TemporalAttentionStore,
    capture_temporal_attention,
    guidable_block_names,
    guided_module_names,
)
from motionclone.backend.errors import ParameterError
from motionclone.backend.models.bundle import ModelBundle
from motionclone.backend.models.tiny import build_tiny_bundle

FRAMES = 8
TIMESTEP = 400
UP_BLOCKS_1 = [f"up_blocks.1.motion_modules.{j}.transformer_blocks.0.attn{i}" for j in range(3) for i in (1, 2)]


def text_embeddings(bundle: ModelBundle, frames: int) -> torch.Tensor:
    """Empty-prompt CLIP embeddings repeated over frames: UNetMotionModel wants (B·F, 77, C)."""
    ids = bundle.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return bundle.text_encoder(ids)[0].repeat_interleave(frames, dim=0)


def random_latents(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(1, 4, FRAMES, 16, 16, generator=torch.Generator().manual_seed(0)).to(dtype)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return build_tiny_bundle(seed=0)


@pytest.fixture(scope="module")
def embeddings(bundle: ModelBundle) -> torch.Tensor:
    return text_embeddings(bundle, FRAMES)


def processors(unet: torch.nn.Module) -> dict[str, object]:
    return {name: module.processor for name, module in unet.named_modules() if isinstance(module, Attention)}


# Module and block names


def test_guided_module_names_of_up_blocks_1(bundle: ModelBundle) -> None:
    assert guided_module_names(bundle.unet, ["up_blocks.1"]) == UP_BLOCKS_1


def test_guidable_blocks_are_the_motion_blocks_in_execution_order(bundle: ModelBundle) -> None:
    expected = [f"down_blocks.{i}" for i in range(4)] + [f"up_blocks.{i}" for i in range(4)]
    assert guidable_block_names(bundle.unet) == expected


def test_guided_module_names_follow_execution_order_not_list_order(bundle: ModelBundle) -> None:
    names = guided_module_names(bundle.unet, ["up_blocks.0", "down_blocks.3"])
    assert [name.split(".motion_modules")[0] for name in names] == ["down_blocks.3"] * 4 + ["up_blocks.0"] * 6
    assert all(TEMPORAL_ATTENTION_PATTERN.match(name) for name in names)


@pytest.mark.parametrize(
    "blocks",
    [[], ["mid_block"], ["up_blocks.9"], ["own_blocks.1"], ["up_blocks.1.motion_modules.0"], ["up_blocks.1", "x"]],
)
def test_invalid_guidance_blocks_raise(bundle: ModelBundle, blocks: list[str]) -> None:
    with pytest.raises(ParameterError) as raised:
        guided_module_names(bundle.unet, blocks)
    assert raised.value.name == "motion_guidance_blocks"
    assert "up_blocks.1" in str(raised.value)  # the allowed blocks are listed


def test_a_plain_string_is_not_a_block_list(bundle: ModelBundle) -> None:
    with pytest.raises(ParameterError, match="motion_guidance_blocks"):
        guided_module_names(bundle.unet, "up_blocks.1")


class _MotionBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.motion_modules = torch.nn.ModuleList(
            [AnimateDiffTransformer3D(num_attention_heads=1, attention_head_dim=4, in_channels=4, norm_num_groups=1)]
        )


class _ElevenUpBlocks(torch.nn.Module):
    """Just enough UNet shape to hold an `up_blocks.10` next to `up_blocks.1`, plus a motion mid block (v1/v2)."""

    def __init__(self) -> None:
        super().__init__()
        self.down_blocks = torch.nn.ModuleList([_MotionBlock()])
        self.up_blocks = torch.nn.ModuleList([_MotionBlock() for _ in range(11)])
        self.mid_block = _MotionBlock()


def test_block_matching_is_exact() -> None:
    unet = _ElevenUpBlocks()
    names = guided_module_names(unet, ["up_blocks.1"])
    assert names == [f"up_blocks.1.motion_modules.0.transformer_blocks.0.attn{i}" for i in (1, 2)]
    assert guided_module_names(unet, ["up_blocks.10"])[0].startswith("up_blocks.10.")


def test_a_motion_mid_block_is_guidable_in_execution_order() -> None:
    blocks = guidable_block_names(_ElevenUpBlocks())
    assert blocks[:3] == ["down_blocks.0", "mid_block", "up_blocks.0"]


# The explicit-probability processor


@pytest.mark.parametrize("precision", PRECISIONS)
def test_capture_leaves_the_unet_output_unchanged_and_records_probabilities(
    bundle: ModelBundle, embeddings: torch.Tensor, precision: str
) -> None:
    unet, latents = bundle.unet, random_latents()
    with torch.no_grad():
        epsilon_sdpa = unet(latents, TIMESTEP, embeddings).sample
        with capture_temporal_attention(unet, UP_BLOCKS_1, precision) as store:
            epsilon_explicit = unet(latents, TIMESTEP, embeddings).sample

    # The guided modules' outputs still come from SDPA, as in diffusers (and the official code's fused kernel).
    assert torch.equal(epsilon_explicit, epsilon_sdpa)
    assert list(store.probs) == UP_BLOCKS_1
    for A in store.probs.values():
        # up_blocks.1 runs at 4×4 for 16×16 latents: N = B·h·w = 16 sequences, 2 heads
        assert A.shape == (16, 2, FRAMES, FRAMES)
        assert A.dtype == torch.float32
        torch.testing.assert_close(A.sum(dim=-1), torch.ones(16, 2, FRAMES))


def test_only_the_named_modules_get_the_processor(bundle: ModelBundle) -> None:
    with capture_temporal_attention(bundle.unet, UP_BLOCKS_1):
        for name, processor in processors(bundle.unet).items():
            expected = TemporalAttentionProbsProcessor if name in UP_BLOCKS_1 else AttnProcessor2_0
            assert type(processor) is expected, name


def test_gradient_through_captured_probabilities_is_finite_and_nonzero(
    bundle: ModelBundle, embeddings: torch.Tensor
) -> None:
    x_t = random_latents().requires_grad_(True)
    with capture_temporal_attention(bundle.unet, UP_BLOCKS_1) as store:
        bundle.unet(x_t, TIMESTEP, embeddings)
        targets = torch.Generator().manual_seed(1)
        L = sum(((A - torch.rand(A.shape, generator=targets)) ** 2).mean() for A in store.probs.values())
        (gradient,) = torch.autograd.grad(L, x_t)
    assert torch.isfinite(gradient).all()
    assert gradient.abs().max() > 0


def test_nothing_is_stored_while_not_recording(bundle: ModelBundle, embeddings: torch.Tensor) -> None:
    with capture_temporal_attention(bundle.unet, UP_BLOCKS_1) as store, torch.no_grad():
        assert store.recording
        store.recording = False
        bundle.unet(random_latents(), TIMESTEP, embeddings)
    assert store.probs == {}


def test_store_clear_drops_the_maps() -> None:
    store = TemporalAttentionStore(probs={"a": torch.zeros(1)})
    store.clear()
    assert store.probs == {}


def test_processors_are_restored_after_the_block(bundle: ModelBundle) -> None:
    before = processors(bundle.unet)
    with capture_temporal_attention(bundle.unet, UP_BLOCKS_1 + UP_BLOCKS_1[:1]):
        assert processors(bundle.unet) != before
    assert processors(bundle.unet) == before


def test_processors_are_restored_after_an_exception(bundle: ModelBundle) -> None:
    before = processors(bundle.unet)
    with pytest.raises(KeyError), capture_temporal_attention(bundle.unet, UP_BLOCKS_1):
        raise KeyError("inside")
    assert processors(bundle.unet) == before


def test_unknown_precision_raises_and_lists_the_choices(bundle: ModelBundle) -> None:
    with pytest.raises(ParameterError) as raised, capture_temporal_attention(bundle.unet, UP_BLOCKS_1, "fp8"):
        pass
    assert raised.value.name == "attention_precision"
    assert all(precision in str(raised.value) for precision in PRECISIONS)


NOT_TEMPORAL_ATTENTION = [[], ["up_blocks.1.resnets.0"], ["up_blocks.1.motion_modules.7.transformer_blocks.0.attn1"]]


@pytest.mark.parametrize("module_names", NOT_TEMPORAL_ATTENTION)
def test_capture_rejects_names_that_are_not_temporal_attention(bundle: ModelBundle, module_names: list[str]) -> None:
    with pytest.raises(ValueError, match="module_names"), capture_temporal_attention(bundle.unet, module_names):
        pass


def test_bfloat16_stores_module_dtype_in_parity_and_float32_when_accurate() -> None:
    bundle = build_tiny_bundle(seed=0, dtype=torch.bfloat16)
    embeddings = text_embeddings(bundle, FRAMES)
    stored = {}
    for precision in PRECISIONS:
        with torch.no_grad(), capture_temporal_attention(bundle.unet, UP_BLOCKS_1, precision) as store:
            epsilon = bundle.unet(random_latents(torch.bfloat16), TIMESTEP, embeddings).sample
        assert epsilon.dtype == torch.bfloat16
        stored[precision] = {A.dtype for A in store.probs.values()}
    assert stored == {"parity": {torch.bfloat16}, "accurate": {torch.float32}}


# The processor on a lone Attention module: features the motion modules do not use, and the error paths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_processor_output_is_sdpa_bit_for_bit_with_residual_connection_and_output_rescale(dtype) -> None:
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4, residual_connection=True, rescale_output_factor=2.0).to(dtype)
    hidden_states = torch.randn(5, 6, 8).to(dtype)
    store = TemporalAttentionStore()
    with torch.no_grad():
        expected = AttnProcessor2_0()(attn, hidden_states)
        actual = TemporalAttentionProbsProcessor(store, "attn")(attn, hidden_states)
    assert actual.dtype == dtype and torch.equal(actual, expected)
    assert store.probs["attn"].dtype == dtype  # parity: the loss's A in the module dtype, as official


def test_stored_probabilities_are_the_softmax_of_scaled_query_key_products() -> None:
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    hidden_states = torch.randn(5, 6, 8)
    store = TemporalAttentionStore()
    with torch.no_grad():
        TemporalAttentionProbsProcessor(store, "attn", "accurate")(attn, hidden_states)
        q = attn.to_q(hidden_states).view(5, 6, 2, 4).transpose(1, 2)
        k = attn.to_k(hidden_states).view(5, 6, 2, 4).transpose(1, 2)
        expected = torch.softmax(q @ k.transpose(-1, -2) / 4**0.5, dim=-1)
    torch.testing.assert_close(store.probs["attn"], expected, atol=1e-6, rtol=0)


def test_processor_refuses_masks_and_cross_attention() -> None:
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    processor = TemporalAttentionProbsProcessor(TemporalAttentionStore(), "attn")
    hidden_states = torch.randn(5, 6, 8)
    with pytest.raises(ValueError, match="mask"):
        processor(attn, hidden_states, attention_mask=torch.zeros(5, 6))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        processor(attn, hidden_states, encoder_hidden_states=torch.randn(5, 3, 8))
    processor(attn, hidden_states, encoder_hidden_states=hidden_states)  # self-attention spelled out is fine
