"""SparseCtrl weights for SD-1.5: the official single file, a diffusers folder, the per-kind config, and the SD-1.5
preset and CLI that load them. Tiny SparseCtrl models of both kinds stand in for the real ones."""

import re

import pytest
import torch

from motionclone.backend.cli import build_parser, main, preset_options_from_args
from motionclone.backend.errors import ModelNotFoundError, ParameterError
from motionclone.backend.models import load_preset
from motionclone.backend.models.lora import LoraSpec
from motionclone.backend.models.sd15 import SD15Sources, load_sd15_bundle
from motionclone.backend.models.sparsectrl import load_sparsectrl, sparsectrl_config
from motionclone.backend.models.tiny import build_tiny_components, build_tiny_sparsectrl
from motionclone.backend.models.tokenizer import build_offline_clip_tokenizer

from .test_lora import domain_adapter_layers, official_adapter_keys

KINDS = ("rgb", "scribble")


def to_official_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' SparseControlNetModel names -> the official AnimateDiff SparseCtrl names (the inverse of the
    loader's conversion): motion modules sit under `temporal_transformer`, with `attention_blocks.0`, `norms.0`,
    `ff_norm` and the positional table `attention_blocks.0.pos_encoder.pe`."""
    official = {}
    for key, tensor in state_dict.items():
        if ".motion_modules." in key:
            key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
            key = key.replace(".pos_embed.", ".attention_blocks.0.pos_encoder.")
            key = key.replace(".attn1.", ".attention_blocks.0.")
            key = key.replace(".norm1.", ".norms.0.")
            key = key.replace(".norm3.", ".ff_norm.")
        official[key] = tensor.clone()
    return official


def assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    expected = original.state_dict()
    actual = loaded.state_dict()
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


@pytest.mark.parametrize("kind", KINDS)
def test_official_single_file_loads_every_tensor_of_the_original(kind, tmp_path):
    original = build_tiny_sparsectrl(kind, seed=4)
    official = to_official_layout(original.state_dict())
    block = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0"
    for key in (
        "attention_blocks.0.to_q.weight",
        "attention_blocks.0.pos_encoder.pe",
        "norms.0.weight",
        "ff_norm.bias",
    ):
        assert f"{block}.{key}" in official
    path = tmp_path / f"v3_sd15_sparsectrl_{kind}.ckpt"
    # The rgb file as the official trainer wraps it, the scribble one bare: the loader opens both.
    torch.save({"state_dict": official} if kind == "rgb" else official, path)
    loaded = load_sparsectrl(kind, str(path), config=dict(original.config))
    assert_same_weights(loaded, original)
    assert loaded.dtype == torch.float32 and not loaded.training


def test_single_file_of_the_other_kind_is_refused_by_name(tmp_path):
    original = build_tiny_sparsectrl("rgb")
    path = tmp_path / "v3_sd15_sparsectrl_rgb.ckpt"
    torch.save(to_official_layout(original.state_dict()), path)
    config = dict(build_tiny_sparsectrl("scribble").config)
    with pytest.raises(ParameterError, match=r"`--sparsectrl` is 'scribble' but .* holds a rgb SparseCtrl model"):
        load_sparsectrl("scribble", str(path), config=config)


def test_single_file_with_a_missing_weight_names_it(tmp_path):
    official = to_official_layout(build_tiny_sparsectrl("rgb").state_dict())
    del official["controlnet_mid_block.weight"]
    path = tmp_path / "partial.ckpt"
    torch.save(official, path)
    with pytest.raises(ParameterError, match=r"1 weights missing, 0 unknown .*controlnet_mid_block\.weight"):
        load_sparsectrl("rgb", str(path), config=dict(build_tiny_sparsectrl("rgb").config))


@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_folder_round_trip(kind, tmp_path):
    original = build_tiny_sparsectrl(kind, seed=2)
    original.save_pretrained(tmp_path / kind)
    loaded = load_sparsectrl(kind, str(tmp_path / kind), dtype=torch.float16, local_files_only=True)
    assert loaded.dtype == torch.float16
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.half()), name
    other = "scribble" if kind == "rgb" else "rgb"
    with pytest.raises(ParameterError, match=rf"`--sparsectrl` is '{other}' but .* is a {kind} model"):
        load_sparsectrl(other, str(tmp_path / kind), local_files_only=True)


def test_missing_single_file_is_model_not_found_with_a_download_hint(tmp_path):
    with pytest.raises(ModelNotFoundError) as raised:
        load_sparsectrl("scribble", str(tmp_path / "v3_sd15_sparsectrl_scribble.ckpt"))
    message = str(raised.value)
    assert "does not exist" in message
    assert "hf download guoyww/animatediff-sparsectrl-scribble --local-dir DIR" in message


def test_uncached_hub_id_offline_is_model_not_found_with_a_download_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as raised:
        load_sparsectrl("rgb", local_files_only=True)  # the default id, guoyww/animatediff-sparsectrl-rgb
    message = str(raised.value)
    assert "guoyww/animatediff-sparsectrl-rgb" in message and "--sparsectrl-model" in message
    assert "v3_sd15_sparsectrl_rgb.ckpt" in message


@pytest.mark.parametrize(
    ("kind", "embedding_key", "in_channels"),
    [("rgb", "controlnet_cond_embedding.weight", 5), ("scribble", "controlnet_cond_embedding.conv_in.weight", 4)],
)
def test_sd15_config_of_each_kind_matches_the_spec(kind, embedding_key, in_channels):
    with torch.device("meta"):
        controlnet = load_config_model(kind)
    weights = dict(controlnet.named_parameters())
    assert weights[embedding_key].shape[1] == in_channels  # condition channels + the mask
    assert controlnet.config.concat_conditioning_mask
    assert len(controlnet.controlnet_down_blocks) == 12
    names = [name for name, _ in controlnet.named_modules()]
    assert not any("motion_modules" in name and ".attn2" in name for name in names)  # one temporal self-attention
    assert not any(name.startswith("mid_block.motion_modules") for name in names)
    if kind == "scribble":
        assert weights["controlnet_cond_embedding.conv_out.weight"].shape[1] == 256


def load_config_model(kind: str) -> torch.nn.Module:
    from diffusers import SparseControlNetModel

    return SparseControlNetModel.from_config(sparsectrl_config(kind))


@pytest.fixture(scope="module")
def saved_sd15(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15")
    unet2d, motion_adapter, vae, text_encoder = build_tiny_components(seed=5)
    unet2d.save_pretrained(root / "base" / "unet")
    vae.save_pretrained(root / "base" / "vae")
    text_encoder.save_pretrained(root / "base" / "text_encoder")
    build_offline_clip_tokenizer().save_pretrained(root / "base" / "tokenizer")
    motion_adapter.save_pretrained(root / "adapter")
    build_tiny_sparsectrl("rgb").save_pretrained(root / "rgb")
    return root


def test_sd15_preset_loads_sparsectrl_and_the_domain_adapter_and_records_both(saved_sd15, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plain = load_sd15_bundle(
        SD15Sources(base=str(saved_sd15 / "base"), motion_adapter=str(saved_sd15 / "adapter"), local_files_only=True),
        device="cpu",
    )
    assert plain.controlnet is None and "sparsectrl" not in plain.description
    layers = domain_adapter_layers(plain.unet)
    torch.save(official_adapter_keys(layers), tmp_path / "v3_sd15_adapter.ckpt")
    bundle = load_preset(
        "sd15-animatediff-v3",
        device="cpu",
        base=str(saved_sd15 / "base"),
        motion_adapter=str(saved_sd15 / "adapter"),
        local_files_only=True,
        sparsectrl="rgb",
        sparsectrl_model=str(saved_sd15 / "rgb"),
        motion_lora=f"{tmp_path / 'v3_sd15_adapter.ckpt'}:1",
    )
    assert bundle.controlnet_kind == "rgb"
    assert_same_weights(bundle.controlnet, build_tiny_sparsectrl("rgb"))
    assert bundle.description["sparsectrl"] == {"kind": "rgb", "model": str(saved_sd15 / "rgb")}
    name, (down, up) = next(iter(layers.items()))
    before = dict(plain.unet.named_modules())[name].weight
    torch.testing.assert_close(dict(bundle.unet.named_modules())[name].weight, before + up @ down, rtol=0, atol=1e-6)
    assert bundle.description["motion_lora"]["file"] == "v3_sd15_adapter.ckpt"


def test_sd15_sources_refuse_a_model_without_a_kind_and_an_unknown_kind():
    with pytest.raises(ParameterError, match=r"`--sparsectrl-model` needs --sparsectrl"):
        SD15Sources(sparsectrl_model="guoyww/animatediff-sparsectrl-rgb")
    with pytest.raises(ParameterError, match=r"`--sparsectrl` must be one of rgb, scribble, got 'depth'"):
        SD15Sources(sparsectrl="depth")


def cli_args(*extra: str):
    return build_parser().parse_args(["generate", "--reference", "r.mp4", "--prompt", "p", "--out", "o", *extra])


def test_serve_takes_the_sparsectrl_and_lora_flags_into_its_preset_options():
    args = build_parser().parse_args(
        [
            *("serve", "--preset", "sd15-animatediff-v3", "--sparsectrl", "scribble", "--sparsectrl-model", "sc.ckpt"),
            *("--motion-lora", "v3_sd15_adapter.ckpt", "--lora", "a.safetensors:0.5", "--lora", "b.safetensors"),
        ]
    )
    options = preset_options_from_args(args, args.preset)
    assert options["sparsectrl"] == "scribble" and options["sparsectrl_model"] == "sc.ckpt"
    assert options["motion_lora"] == LoraSpec("v3_sd15_adapter.ckpt", 1.0)
    assert options["loras"] == [LoraSpec("a.safetensors", 0.5), LoraSpec("b.safetensors", 1.0)]


def test_weights_that_exist_here_go_to_the_loaders_as_absolute_paths(tmp_path, monkeypatch):
    """Ray workers load them in other working folders; a hub id stays as written."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "style.safetensors").touch()
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(
        [
            *("serve", "--preset", "sd15-animatediff-v3", "--base", "weights", "--motion-adapter", "guoyww/adapter"),
            *("--lora", "weights/style.safetensors:0.5"),
        ]
    )
    options = preset_options_from_args(args, args.preset)
    assert options["base"] == str(tmp_path / "weights") and options["motion_adapter"] == "guoyww/adapter"
    assert options["loras"] == [LoraSpec(str(tmp_path / "weights" / "style.safetensors"), 0.5)]
    # A link is kept, not followed: the Hugging Face cache links files to blobs without the suffix loaders read.
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "3f2a9c").touch()
    (tmp_path / "weights" / "linked.safetensors").symlink_to(tmp_path / "blobs" / "3f2a9c")
    linked = build_parser().parse_args(["serve", "--lora", "weights/linked.safetensors"])
    assert preset_options_from_args(linked, "tiny")["loras"][0].path == str(tmp_path / "weights" / "linked.safetensors")


def test_condition_kind_and_sparsectrl_flag_must_agree():
    options = preset_options_from_args(cli_args("--sparsectrl", "rgb"), "tiny", condition_kind="rgb")
    assert options["sparsectrl"] == "rgb"
    with pytest.raises(ParameterError, match=r"`--sparsectrl` is 'rgb' but the condition is 'scribble'"):
        preset_options_from_args(cli_args("--sparsectrl", "rgb"), "tiny", condition_kind="scribble")


def write_keyframe(folder):
    from PIL import Image

    path = folder / "keyframe.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return path


def write_reference(folder):
    """A two-frame reference folder: the CLI checks the reference before it loads the model."""
    from PIL import Image

    frames = folder / "reference"
    frames.mkdir()
    for index in range(2):
        Image.new("RGB", (64, 64), (30, 30 + 100 * index, 200)).save(frames / f"frame_{index:04d}.png")
    return frames


def test_cli_sd15_condition_with_a_missing_sparsectrl_file_exits_3_with_the_hint(tmp_path, capsys):
    keyframe = write_keyframe(tmp_path)
    missing = tmp_path / "v3_sd15_sparsectrl_rgb.ckpt"
    code = main(
        [
            *("generate", "--preset", "sd15-animatediff-v3", "--device", "cpu"),
            *("--reference", str(write_reference(tmp_path))),
            *("--prompt", "p", "--frames", "2", "--width", "64", "--height", "64", "--condition", str(keyframe)),
            *("--sparsectrl-model", str(missing), "--local-files-only", "--out", str(tmp_path / "out")),
        ]
    )
    message = capsys.readouterr().err
    assert code == 3
    assert str(missing) in message and "hf download guoyww/animatediff-sparsectrl-rgb" in message


def test_cli_blocks_preset_refuses_sparsectrl_by_name(tmp_path, capsys):
    keyframe = write_keyframe(tmp_path)
    code = main(
        [
            *("generate", "--preset", "blocks", "--device", "cpu", "--prompt", "p"),
            *("--reference", str(write_reference(tmp_path))),
            *("--frames", "2", "--condition", str(keyframe), "--out", str(tmp_path / "out")),
        ]
    )
    assert code == 2
    assert "`--sparsectrl` is not available with the blocks preset" in capsys.readouterr().err


@pytest.mark.parametrize("preset", [None, "tiny"])
@pytest.mark.parametrize("flag", ["--base", "--checkpoint", "--motion-adapter", "--sparsectrl-model"])
def test_sd15_weights_with_a_built_in_preset_are_refused_not_ignored(tmp_path, capsys, flag, preset):
    """blocks is the default on a CPU: `--base sd15` without --preset would otherwise run the built-in model, and
    `--preset tiny` random weights."""
    code = main(
        [
            *("generate", "--device", "cpu", "--reference", str(write_keyframe(tmp_path)), "--prompt", "p"),
            *(flag, str(tmp_path), "--out", str(tmp_path / "out")),
            *(("--preset", preset) if preset else ()),
        ]
    )
    assert code == 2
    assert f"`{flag}` gives SD-1.5 weights, but the preset is '{preset or 'blocks'}'" in capsys.readouterr().err
