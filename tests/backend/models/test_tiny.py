import torch

from motionclone.backend.models import load_preset
from motionclone.backend.models.tiny import build_tiny_bundle
from motionclone.backend.models.tokenizer import BOS_TOKEN, EOS_TOKEN, build_offline_clip_tokenizer


def test_tiny_preset_builds_offline_and_runs_unet_on_16_frames(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = load_preset("tiny", device="cpu")
    tokens = bundle.tokenizer(["a fox"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    embeds = bundle.text_encoder(tokens)[0]
    sample = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        noise = bundle.unet(sample, 400, encoder_hidden_states=embeds.repeat_interleave(16, dim=0)).sample
    assert noise.shape == (1, 4, 16, 16, 16)
    assert torch.isfinite(noise).all()
    assert bundle.vae_scale_factor == 8
    assert bundle.max_frames == 32
    assert bundle.description["preset"] == "tiny"


def test_tiny_preset_has_sd15_block_layout():
    unet = build_tiny_bundle().unet
    assert len(unet.down_blocks) == 4 and len(unet.up_blocks) == 4
    assert not hasattr(unet.mid_block, "motion_modules") or unet.mid_block.motion_modules is None
    assert len(unet.up_blocks[1].motion_modules) == 3


def test_bundle_weights_are_frozen_so_the_guided_pass_keeps_no_weight_gradient_inputs():
    bundle = build_tiny_bundle()
    for model in (bundle.vae, bundle.text_encoder, bundle.unet, bundle.motion_adapter):
        assert not any(parameter.requires_grad for parameter in model.parameters()), type(model).__name__


def test_same_seed_gives_identical_weights_and_different_seed_does_not():
    first, second, other = build_tiny_bundle(seed=3), build_tiny_bundle(seed=3), build_tiny_bundle(seed=4)
    for name, tensor in first.unet.state_dict().items():
        assert torch.equal(tensor, second.unet.state_dict()[name]), name
    assert torch.equal(first.vae.encoder.conv_in.weight, second.vae.encoder.conv_in.weight)
    assert not torch.equal(first.unet.conv_in.weight, other.unet.conv_in.weight)


def test_building_the_tiny_preset_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_bundle(seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_offline_tokenizer_encodes_characters_between_bos_and_eos():
    tokenizer = build_offline_clip_tokenizer()
    ids = tokenizer(["ab"], padding="max_length", max_length=77).input_ids[0]
    assert len(ids) == 77
    assert ids[0] == tokenizer.convert_tokens_to_ids(BOS_TOKEN)
    assert ids[1] == tokenizer.convert_tokens_to_ids("a")
    assert ids[2] == tokenizer.convert_tokens_to_ids("b</w>")
    assert ids[3] == tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    assert max(ids) < 1000  # the tiny text encoder's vocabulary
