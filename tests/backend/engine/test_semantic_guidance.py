"""Location-aware semantic guidance (inversion-based MotionClone): masks, losses, word lookup."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from motionclone.backend.engine import MotionCloneParams, MotionClonePipeline
from motionclone.backend.engine.semantic_guidance import (
    block_grid,
    capture_cross_attention,
    cross_attention_module_names,
    gaussian_around_centroid,
    normalized_token_map,
    semantic_loss,
    semantic_masks,
    word_token_index,
)
from motionclone.backend.errors import ParameterError
from motionclone.backend.models import load_preset


@pytest.fixture(scope="module")
def pipe() -> MotionClonePipeline:
    return MotionClonePipeline.from_bundle(load_preset("tiny", seed=0))


def keys(tokens: int, frames: int, channels: int = 8, seed: int = 0, grad: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, frames, channels, generator=generator).requires_grad_(grad)


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_semantic_loss_is_finite_for_empty_and_full_masks(fill: float) -> None:
    frames, height, width = 5, 3, 4  # non-square, any frame count
    reference = torch.full((frames, height, width), fill)
    app = torch.full((frames, height, width), fill)
    masks = semantic_masks(reference, app, 0.3, 0.3, 5.0)
    gen = keys(height * width, frames, grad=True)
    loss = semantic_loss({"m": gen}, {"m": keys(height * width, frames, seed=1)}, {"m": 500.0}, masks, height, width)
    assert torch.isfinite(loss)
    (gradient,) = torch.autograd.grad(loss, gen)
    assert torch.isfinite(gradient).all()
    if fill == 0.0:
        # The reference word is found nowhere (official: NaN, B14): every frame is left out and nothing steers.
        assert masks.example_fg.sum() == 0 and not masks.reference_found.any()
        assert float(loss.detach()) == 0.0


def test_empty_masks_everywhere_give_zero_loss() -> None:
    frames, height, width = 2, 2, 2
    zero = torch.zeros(frames, height, width)
    masks = semantic_masks(zero, zero, 0.3, 0.3, 5.0)
    masks.example_bg = zero
    masks.app_bg = zero
    loss = semantic_loss({"m": keys(4, frames, grad=True)}, {"m": keys(4, frames, seed=1)}, {"m": 500.0}, masks, 2, 2)
    assert float(loss.detach()) == 0.0


def test_frames_count_as_in_the_official_mean_unless_the_reference_word_is_missing() -> None:
    """Frame 0: both words found; frame 1: the new word nowhere (its masked mean is 0, as official); frame 2: the
    reference word nowhere (official: NaN), the only frame left out."""
    frames, height, width = 3, 4, 4
    reference = torch.zeros(frames, height, width)
    reference[0, 1, 1] = reference[1, 2, 3] = 1.0
    app = torch.zeros(frames, height, width)
    app[0, 0, 0] = 1.0
    masks = semantic_masks(reference, app, 0.3, 0.3, 5.0)
    assert masks.reference_found.tolist() == [True, True, False]
    gen, other = keys(16, frames, grad=True), keys(16, frames, seed=1)
    loss = semantic_loss({"m": gen}, {"m": other}, {"m": 100.0}, masks, height, width)

    def masked(keys_hw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # Σ K·M / (Σ M + 1e−5) per frame
        k, m = keys_hw.detach().permute(1, 0, 2), mask.flatten(1).unsqueeze(-1)
        return (k * m).sum(1) / (m.sum(1) + 1e-5)

    kept = [0, 1]
    fg = ((masked(gen, masks.example_fg) - masked(other, masks.app_fg))[kept] ** 2).mean()
    bg = ((masked(gen, masks.example_bg) - masked(other, masks.app_bg))[kept] ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float((fg + bg).detach()), rel=1e-5)


def test_masks_resize_to_other_blocks_and_global_variant() -> None:
    frames = 3
    reference = torch.zeros(frames, 2, 3)
    reference[:, 0, 1] = 1.0
    masks = semantic_masks(reference, reference, 0.3, 0.3, 5.0)
    big = masks.resized(4, 6)
    assert big.example_fg.shape == (frames, 4, 6) and big.example_fg[:, :2, 2:4].min() > 0
    weights = {"a": 500.0, "b": 100.0}
    gen = {"a": keys(6, frames, grad=True), "b": keys(24, frames, seed=2, grad=True)}
    app = {"a": keys(6, frames, seed=3), "b": keys(24, frames, seed=4)}
    assert torch.isfinite(semantic_loss(gen, app, weights, masks, 4, 6))
    assert torch.isfinite(semantic_loss(gen, app, weights, None, 4, 6))
    assert block_grid(24, 4, 6) == (4, 6) and block_grid(6, 4, 6) == (2, 3) and block_grid(2, 3, 5) == (1, 2)


def test_gaussian_centres_on_the_mask_and_scales_with_the_map() -> None:
    binary = torch.zeros(2, 16, 32)
    binary[0, 4, 10] = 1
    gaussian = gaussian_around_centroid(binary, 5.0)
    assert gaussian[0, 4, 10] == pytest.approx(1.0)
    assert gaussian[0, 4, 15] == pytest.approx(float(torch.exp(torch.tensor(-0.5 * (5 / 10) ** 2))))
    assert gaussian[1].sum() == 0  # empty frame


def test_normalized_map_is_per_frame_min_max_and_constant_frames_are_zero() -> None:
    maps = torch.tensor([[1.0, 3.0, 2.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    normalised = normalized_token_map(maps, 2, 2, 2)
    assert normalised[0].flatten().tolist() == [0.0, 0.5, 0.25, 1.0]
    assert normalised[1].sum() == 0


def test_word_lookup_finds_the_word_and_names_the_field(pipe) -> None:
    tokenizer = pipe.tokenizer
    prompt = "Fox, moves its head, in the wild"
    index = word_token_index(tokenizer, prompt, "head", "semantic_object_pair")
    ids = tokenizer(prompt.lower()).input_ids
    word_ids = tokenizer("head", add_special_tokens=False).input_ids
    assert ids[index : index + len(word_ids)] == word_ids and index > 0
    assert word_token_index(tokenizer, prompt, "FOX", "semantic_object_pair") == 1
    with pytest.raises(ParameterError) as error:
        word_token_index(tokenizer, prompt, "zebra", "semantic_object_pair")
    assert error.value.name == "semantic_object_pair" and "zebra" in str(error.value)
    with pytest.raises(ParameterError, match="semantic_object_pair"):
        word_token_index(tokenizer, prompt, " ", "semantic_object_pair")


def test_check_inputs_rejects_a_word_missing_from_its_prompt(pipe) -> None:
    params = MotionCloneParams(
        prompt="a cat",
        num_frames=2,
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_steps=1,
        motion_source="inversion",
        inversion_prompt="a fox",
        semantic_object_pair=("fox", "dog"),
    )
    with pytest.raises(ParameterError) as error:
        pipe.check_inputs(params)
    assert error.value.name == "semantic_object_pair" and "dog" in str(error.value)
    pipe.check_inputs(params.replace(semantic_object_pair=("fox", "cat")))
    with pytest.raises(ParameterError) as error:
        pipe.check_inputs(params.replace(inversion_guidance_blocks=("up_blocks.9",), inversion_block_weights=(1.0,)))
    assert error.value.name == "inversion_guidance_blocks"


def test_cross_attention_processor_matches_sdpa(pipe) -> None:
    names = cross_attention_module_names(pipe.unet, "up_blocks.1")
    assert names and all(name.startswith("up_blocks.1.attentions.") and name.endswith("attn2") for name in names)
    module = pipe.unet.get_submodule(names[0])
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, module.query_dim, generator=generator)
    context = torch.randn(3, 77, module.cross_attention_dim, generator=generator)
    with torch.no_grad():
        expected = AttnProcessor2_0()(module, hidden, context)
        with capture_cross_attention(pipe.unet, names[:1]) as store:
            store.recording = True
            got = module(hidden, encoder_hidden_states=context)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    probs = store.probs[names[0]]
    assert probs.shape == (3, 6, 77)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 6))
    assert not isinstance(module.get_processor(), type(store))
