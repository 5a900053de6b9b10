"""The real preset's loader, pointed at folders written with `save_pretrained` from tiny components."""

import pytest
import torch

from motionclone.backend.errors import ModelNotFoundError, ParameterError
from motionclone.backend.models import load_preset
from motionclone.backend.models.sd15 import SD15Sources, load_sd15_bundle
from motionclone.backend.models.tiny import build_tiny_bundle, build_tiny_components
from motionclone.backend.models.tokenizer import build_offline_clip_tokenizer


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    unet2d, motion_adapter, vae, text_encoder = build_tiny_components(seed=5)
    unet2d.save_pretrained(root / "base" / "unet")
    vae.save_pretrained(root / "base" / "vae")
    text_encoder.save_pretrained(root / "base" / "text_encoder")
    build_offline_clip_tokenizer().save_pretrained(root / "base" / "tokenizer")
    motion_adapter.save_pretrained(root / "adapter")
    return root


def test_loader_reads_saved_folders_offline_and_matches_the_source_weights(saved_weights, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources = SD15Sources(
        base=str(saved_weights / "base"), motion_adapter=str(saved_weights / "adapter"), local_files_only=True
    )
    loaded = load_sd15_bundle(sources, device="cpu")
    reference = build_tiny_bundle(seed=5)
    assert loaded.dtype == torch.float32  # CPU default
    for name, tensor in reference.unet.state_dict().items():
        assert torch.equal(tensor, loaded.unet.state_dict()[name]), name
    prompt = ["a cat"]
    assert loaded.tokenizer(prompt).input_ids == reference.tokenizer(prompt).input_ids
    assert loaded.description["preset"] == "sd15-animatediff-v3"
    assert loaded.max_frames == reference.max_frames


def test_missing_motion_adapter_names_the_path_and_how_to_get_it(saved_weights, tmp_path):
    missing = tmp_path / "no-adapter-here"
    sources = SD15Sources(base=str(saved_weights / "base"), motion_adapter=str(missing), local_files_only=True)
    with pytest.raises(ModelNotFoundError) as raised:
        load_sd15_bundle(sources, device="cpu")
    message = str(raised.value)
    assert str(missing) in message and "motion adapter" in message and "--local-dir" in message


def test_unreachable_hub_id_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as raised:
        load_preset("sd15-animatediff-v3", device="cpu", base="someone/not-a-cached-model")
    assert "someone/not-a-cached-model" in str(raised.value)
    assert "SD-1.5 base model" in str(raised.value)


def test_missing_dreambooth_checkpoint_is_reported(saved_weights, tmp_path):
    sources = SD15Sources(base=str(saved_weights / "base"), checkpoint=str(tmp_path / "rv.safetensors"))
    with pytest.raises(ModelNotFoundError, match=r"rv\.safetensors"):
        load_sd15_bundle(sources, device="cpu")


def test_a_damaged_or_wrong_checkpoint_is_named_not_blamed_on_the_base_folder(saved_weights, tmp_path):
    from safetensors.torch import save_file

    base = str(saved_weights / "base")
    damaged = tmp_path / "rv.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ModelNotFoundError, match=r"checkpoint '.*rv\.safetensors' cannot be read") as raised:
        load_sd15_bundle(SD15Sources(base=base, checkpoint=str(damaged)), device="cpu")
    assert "configs" not in str(raised.value)
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 4)}, lora)
    with pytest.raises(ModelNotFoundError, match=r"style\.safetensors' holds no SD-1.5 UNet weights.*--lora"):
        load_sd15_bundle(SD15Sources(base=base, checkpoint=str(lora)), device="cpu")


def test_a_base_folder_with_a_weights_file_cut_short_is_named(saved_weights, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(saved_weights / "base", base)
    weights = next((base / "text_encoder").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    sources = SD15Sources(base=str(base), motion_adapter=str(saved_weights / "adapter"), local_files_only=True)
    with pytest.raises(ModelNotFoundError, match=r"Cannot load the SD-1.5 base model from .*SafetensorError"):
        load_sd15_bundle(sources, device="cpu")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ParameterError, match=r"`preset`.*sd15-animatediff-v3.*tiny"):
        load_preset("sdxl")


def test_a_weights_file_replaced_under_the_same_name_gets_another_cache_description(tmp_path):
    """The description keys the representation cache: a re-trained model.safetensors must not reuse old entries."""
    import os

    from motionclone.backend.models.sd15 import _describe_sparsectrl

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first weights")
    sources = SD15Sources(sparsectrl="rgb", sparsectrl_model=str(weights))
    first = _describe_sparsectrl(sources)
    assert first["sparsectrl"]["model"]["file"] == "model.safetensors"
    modified = weights.stat().st_mtime_ns
    weights.write_bytes(b"longer other weights")
    os.utime(weights, ns=(modified, modified))  # a copy that kept the old time: the size tells
    assert _describe_sparsectrl(sources) != first
    weights.write_bytes(b"first weights")
    os.utime(weights, ns=(modified + 10**9, modified + 10**9))  # the same size, written later: the time tells
    assert _describe_sparsectrl(sources) != first


def test_a_motion_adapter_file_is_read_as_animatediffs_own_motion_module_file(saved_weights, tmp_path):
    not_a_module = tmp_path / "v3_sd15_mm.ckpt"
    torch.save({"something.else.weight": torch.zeros(2)}, not_a_module)
    sources = SD15Sources(base=str(saved_weights / "base"), motion_adapter=str(not_a_module), local_files_only=True)
    with pytest.raises(ModelNotFoundError, match=r"`--motion-adapter` file .*v3_sd15_mm\.ckpt' holds no AnimateDiff"):
        load_sd15_bundle(sources, device="cpu")
    missing = SD15Sources(base=str(saved_weights / "base"), motion_adapter=str(tmp_path / "mm.ckpt"))
    with pytest.raises(ModelNotFoundError, match=r"`--motion-adapter` file '.*mm\.ckpt' does not exist"):
        load_sd15_bundle(missing, device="cpu")  # named as a missing file, not looked up as a hub id
