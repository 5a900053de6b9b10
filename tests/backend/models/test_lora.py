"""LoRAs fused at load time: the domain adapter (`motion_lora`) and user LoRAs (`loras`), on the tiny preset.

The LoRA files are written here for the tiny models, in the layouts real files come in: the official
`v3_sd15_adapter.ckpt` (attention-processor keys, torch.save), peft/diffusers keys in a `.safetensors`, and kohya
keys (`lora_unet_…`, `lora_te_…`, with alphas).
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from motionclone.backend.errors import ModelNotFoundError, ParameterError
from motionclone.backend.models import load_preset
from motionclone.backend.models.lora import LoraSpec, parse_lora_spec
from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import write_mp4

from ..test_cli import run_cli

RANK = 2
PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
# Two spatial attention blocks of the tiny UNet: self-attention (attn1) and cross-attention (attn2).
ADAPTER_BLOCKS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
    "up_blocks.1.attentions.2.transformer_blocks.0.attn2",
)
KOHYA_UNET_MODULE = "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k"
KOHYA_TEXT_MODULE = "encoder.layers.1.self_attn"


def weight_of(model: torch.nn.Module, name: str) -> torch.Tensor:
    return dict(model.named_modules())[name].weight.detach().clone()


def random_pair(weight: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) of a rank-RANK update for a Linear weight (out, in)."""
    out_features, in_features = weight.shape
    down = torch.randn(RANK, in_features, generator=generator)
    up = torch.randn(out_features, RANK, generator=generator)
    return down, up


def domain_adapter_layers(unet: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module path -> (down, up) for q, k, v and out of `ADAPTER_BLOCKS`."""
    generator = torch.Generator().manual_seed(7)
    layers = {}
    for block in ADAPTER_BLOCKS:
        for projection in PROJECTIONS.values():
            name = f"{block}.{projection}"
            layers[name] = random_pair(weight_of(unet, name), generator)
    return layers


def official_adapter_keys(layers: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The official v3_sd15_adapter.ckpt layout: `X.processor.to_q_lora.down.weight` for module `X.to_q`."""
    state_dict = {}
    for block in ADAPTER_BLOCKS:
        for official, projection in PROJECTIONS.items():
            down, up = layers[f"{block}.{projection}"]
            state_dict[f"{block}.processor.{official}_lora.down.weight"] = down
            state_dict[f"{block}.processor.{official}_lora.up.weight"] = up
    return state_dict


@pytest.fixture(scope="module")
def tiny():
    return load_preset("tiny")


@pytest.fixture(scope="module")
def adapter_layers(tiny):
    return domain_adapter_layers(tiny.unet)


@pytest.fixture(scope="module")
def official_adapter_file(adapter_layers, tmp_path_factory):
    path = tmp_path_factory.mktemp("adapter") / "v3_sd15_adapter.ckpt"
    torch.save(official_adapter_keys(adapter_layers), path)
    return path


def unet_output(bundle) -> torch.Tensor:
    sample = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    tokens = bundle.tokenizer(["a fox"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        embeds = bundle.text_encoder(tokens)[0]
        return bundle.unet(sample, 500, encoder_hidden_states=embeds.repeat_interleave(2, dim=0)).sample


def test_motion_lora_at_scale_zero_leaves_the_unet_output_bit_for_bit(tiny, official_adapter_file):
    loaded = load_preset("tiny", motion_lora=LoraSpec(str(official_adapter_file), 0.0))
    assert torch.equal(unet_output(loaded), unet_output(tiny))
    assert loaded.description["motion_lora"]["scale"] == 0.0


def test_official_motion_lora_adds_scale_times_up_down_to_each_target(tiny, adapter_layers, official_adapter_file):
    loaded = load_preset("tiny", motion_lora=f"{official_adapter_file}:0.7")
    for name, (down, up) in adapter_layers.items():
        expected = weight_of(tiny.unet, name) + 0.7 * (up @ down)
        torch.testing.assert_close(weight_of(loaded.unet, name), expected, rtol=0, atol=1e-6)
    untouched = "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q"
    assert torch.equal(weight_of(loaded.unet, untouched), weight_of(tiny.unet, untouched))
    assert not torch.equal(unet_output(loaded), unet_output(tiny))
    recorded = loaded.description["motion_lora"]
    assert (recorded["file"], recorded["scale"], len(recorded["sha256"])) == ("v3_sd15_adapter.ckpt", 0.7, 64)


def test_motion_lora_defaults_to_scale_one_from_a_diffusers_safetensors(tiny, adapter_layers, tmp_path):
    peft_layout = {}
    for name, (down, up) in adapter_layers.items():
        peft_layout[f"unet.{name}.lora_A.weight"] = down
        peft_layout[f"unet.{name}.lora_B.weight"] = up
    folder = tmp_path / "animatediff-motion-lora-v1-5-3"
    folder.mkdir()
    save_file(peft_layout, folder / "diffusion_pytorch_model.safetensors")
    loaded = load_preset("tiny", motion_lora=str(folder))
    for name, (down, up) in adapter_layers.items():
        torch.testing.assert_close(
            weight_of(loaded.unet, name), weight_of(tiny.unet, name) + up @ down, rtol=0, atol=1e-6
        )
    assert loaded.description["motion_lora"]["scale"] == 1.0


def kohya_lora(tiny) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor, float]]]:
    """A kohya LoRA for one UNet projection and the four attention projections of one text-encoder layer, with
    alphas; returns (file contents, module path -> (down, up, alpha / rank))."""
    generator = torch.Generator().manual_seed(11)
    targets = {("unet", KOHYA_UNET_MODULE): 1.0}
    for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
        targets[("text_encoder", f"{KOHYA_TEXT_MODULE}.{projection}")] = 4.0
    contents, expected = {}, {}
    for (model, name), alpha in targets.items():
        owner = tiny.unet if model == "unet" else tiny.text_encoder
        down, up = random_pair(weight_of(owner, name), generator)
        prefix = (
            "lora_unet_" + name.replace(".", "_") if model == "unet" else "lora_te_text_model_" + name.replace(".", "_")
        )
        contents[f"{prefix}.lora_down.weight"] = down
        contents[f"{prefix}.lora_up.weight"] = up
        contents[f"{prefix}.alpha"] = torch.tensor(alpha)
        expected[(model, name)] = (down, up, alpha / RANK)
    return contents, expected


def test_kohya_lora_is_fused_into_unet_and_text_encoder_at_its_scale(tiny, tmp_path):
    contents, expected = kohya_lora(tiny)
    path = tmp_path / "style.safetensors"
    save_file(contents, path)
    loaded = load_preset("tiny", loras=[parse_lora_spec(f"{path}:0.5")])
    for (model, name), (down, up, alpha_over_rank) in expected.items():
        before = weight_of(getattr(tiny, model), name)
        after = weight_of(getattr(loaded, model), name)
        torch.testing.assert_close(after, before + 0.5 * alpha_over_rank * (up @ down), rtol=0, atol=1e-6)
    # The peft layers are gone again: the engine sees plain modules.
    assert type(dict(loaded.unet.named_modules())[KOHYA_UNET_MODULE]) is torch.nn.Linear
    assert not any("lora" in name for name, _ in loaded.text_encoder.named_modules())
    assert loaded.description["loras"] == [
        {"file": "style.safetensors", "scale": 0.5, "sha256": loaded.description["loras"][0]["sha256"]}
    ]


def test_diffusers_layout_lora_at_scale_zero_leaves_the_output_bit_for_bit(tiny, tmp_path):
    generator = torch.Generator().manual_seed(3)
    contents = {}
    for block in ADAPTER_BLOCKS:
        for projection in PROJECTIONS.values():
            down, up = random_pair(weight_of(tiny.unet, f"{block}.{projection}"), generator)
            contents[f"unet.{block}.{projection}.lora_A.weight"] = down
            contents[f"unet.{block}.{projection}.lora_B.weight"] = up
    path = tmp_path / "diffusers_lora.safetensors"
    save_file(contents, path)
    unchanged = load_preset("tiny", loras=[f"{path}:0"])
    assert torch.equal(unet_output(unchanged), unet_output(tiny))
    changed = load_preset("tiny", loras=[str(path)])
    name = f"{ADAPTER_BLOCKS[0]}.to_v"
    down, up = contents[f"unet.{name}.lora_A.weight"], contents[f"unet.{name}.lora_B.weight"]
    torch.testing.assert_close(weight_of(changed.unet, name), weight_of(tiny.unet, name) + up @ down, rtol=0, atol=1e-6)


def test_lora_whose_keys_match_no_module_names_the_flag_and_the_count(tmp_path):
    path = tmp_path / "sdxl.safetensors"
    save_file(
        {
            "unet.down_blocks.9.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 4),
            "unet.down_blocks.9.attentions.0.proj_in.lora_B.weight": torch.zeros(4, 2),
        },
        path,
    )
    with pytest.raises(ParameterError, match=r"`--lora`.*sdxl\.safetensors.*0 of 1 LoRA layers match"):
        load_preset("tiny", loras=[str(path)])
    adapter = tmp_path / "not_an_adapter.ckpt"
    torch.save({"mid_block.nowhere.processor.to_q_lora.down.weight": torch.zeros(2, 4)}, adapter)
    with pytest.raises(ParameterError, match=r"`--motion-lora`.*0 of 1 LoRA layers match.*mid_block\.nowhere"):
        load_preset("tiny", motion_lora=str(adapter))


def test_a_lora_for_another_base_model_whose_names_fit_is_refused_naming_the_flag(tiny, tmp_path):
    """An SDXL LoRA names SD-1.5's modules too (attn2.to_k), but its matrices are wider (2048 text features)."""
    weight = weight_of(tiny.unet, KOHYA_UNET_MODULE)
    prefix = "lora_unet_" + KOHYA_UNET_MODULE.replace(".", "_")
    wider = {
        f"{prefix}.lora_down.weight": torch.zeros(RANK, 2 * weight.shape[1]),
        f"{prefix}.lora_up.weight": torch.zeros(weight.shape[0], RANK),
    }
    path = tmp_path / "sdxl_style.safetensors"
    save_file(wider, path)
    with pytest.raises(ParameterError, match=r"`--lora`.*sdxl_style\.safetensors.*another base model"):
        load_preset("tiny", loras=[str(path)])


def test_running_out_of_memory_while_loading_a_lora_is_not_blamed_on_the_file(tiny, tmp_path, monkeypatch):
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    contents, _ = kohya_lora(tiny)
    path = tmp_path / "style.safetensors"
    save_file(contents, path)
    monkeypatch.setattr(StableDiffusionLoraLoaderMixin, "load_lora_into_unet", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        load_preset("tiny", loras=[str(path)])


def test_a_diffusers_lora_is_fused_with_the_alpha_its_header_gives(tiny, tmp_path):
    """diffusers and peft keep alpha in the file's metadata, not in a tensor: alpha 8 at rank 2 is 4 x up @ down."""
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY

    generator = torch.Generator().manual_seed(5)
    name = f"{ADAPTER_BLOCKS[0]}.to_v"
    down, up = random_pair(weight_of(tiny.unet, name), generator)
    contents = {f"unet.{name}.lora_A.weight": down, f"unet.{name}.lora_B.weight": up}
    settings = {"unet.r": RANK, "unet.lora_alpha": 4 * RANK, "unet.target_modules": [name]}
    path = tmp_path / "alpha.safetensors"
    save_file(contents, path, metadata={LORA_ADAPTER_METADATA_KEY: json.dumps(settings)})
    loaded = load_preset("tiny", loras=[str(path)])
    expected = weight_of(tiny.unet, name) + 4 * up @ down
    torch.testing.assert_close(weight_of(loaded.unet, name), expected, rtol=0, atol=1e-6)


def test_a_truncated_lora_file_is_model_not_found_naming_it(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({"unet.a.lora_A.weight": torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelNotFoundError, match=r"`--lora` file .*cut\.safetensors.* cannot be read as weights"):
        load_preset("tiny", loras=[str(path)])


def test_motion_lora_with_one_unknown_layer_is_refused_and_fuses_nothing(adapter_layers, tmp_path):
    contents = official_adapter_keys(adapter_layers)
    contents["up_blocks.9.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"] = torch.zeros(2, 4)
    contents["up_blocks.9.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight"] = torch.zeros(4, 2)
    path = tmp_path / "extra.ckpt"
    torch.save(contents, path)
    with pytest.raises(ParameterError, match=r"8 of 9 LoRA layers match"):
        load_preset("tiny", motion_lora=str(path))


def test_missing_lora_file_is_model_not_found_naming_the_flag(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"`--lora` file .*gone\.safetensors' does not exist"):
        load_preset("tiny", loras=[str(tmp_path / "gone.safetensors")])
    with pytest.raises(ModelNotFoundError, match=r"`--motion-lora` file .*v3_sd15_adapter\.ckpt' does not exist"):
        load_preset("tiny", motion_lora=str(tmp_path / "v3_sd15_adapter.ckpt:1.0"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("style.safetensors", LoraSpec("style.safetensors", 1.0)),
        ("style.safetensors:0.5", LoraSpec("style.safetensors", 0.5)),
        ("/loras/a:b.safetensors:-1", LoraSpec("/loras/a:b.safetensors", -1.0)),
        ("C:\\loras\\style.safetensors", LoraSpec("C:\\loras\\style.safetensors", 1.0)),
    ],
)
def test_parse_lora_spec_reads_path_and_optional_scale(text, expected):
    assert parse_lora_spec(text) == expected


@pytest.mark.parametrize("text", ["style.safetensors:strong", "style.safetensors:nan"])
def test_scale_that_is_not_a_finite_number_is_a_parameter_error(text):
    with pytest.raises(ParameterError, match=r"`--motion-lora` expects"):
        parse_lora_spec(text, "--motion-lora")


def test_cli_generate_with_a_lora_records_it_in_result_json(tiny, tmp_path):
    contents, _ = kohya_lora(tiny)
    lora = tmp_path / "style.safetensors"
    save_file(contents, lora)
    reference = write_mp4(make_moving_square_clip(4, 64, 64), tmp_path / "reference.mp4")
    out = tmp_path / "out"
    result = run_cli(
        *("generate", "--preset", "tiny", "--device", "cpu", "--reference", str(reference), "--prompt", "a fox"),
        *("--frames", "4", "--width", "32", "--height", "32", "--steps", "2", "--guidance-steps", "1"),
        *("--lora", f"{lora}:0.5", "--out", str(out)),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    model = json.loads((out / "result.json").read_text())["model"]
    assert [(entry["file"], entry["scale"]) for entry in model["loras"]] == [("style.safetensors", 0.5)]
    result = run_cli(
        *("generate", "--preset", "tiny", "--reference", str(reference), "--prompt", "x", "--frames", "4"),
        *("--lora", f"{lora}:half", "--out", str(tmp_path / "bad")),
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "`--lora`" in result.stderr and "'half'" in result.stderr
