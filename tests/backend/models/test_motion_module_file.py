"""AnimateDiff's own motion-module file (the official layout of v3_sd15_mm.ckpt) read as a diffusers MotionAdapter."""

import re

import pytest
import torch
from diffusers import MotionAdapter

from motionclone.backend.errors import ModelNotFoundError
from motionclone.backend.models.motion_module_file import load_motion_module_file

# AnimateDiff v3's layout (8 heads, 32 norm groups, no mid block, 32 frames) at a width a CPU test can afford.
SMALL_V3 = {
    "block_out_channels": (32, 64, 64, 64),
    "motion_layers_per_block": 2,
    "motion_num_attention_heads": 8,
    "motion_norm_num_groups": 32,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": False,
}


def official_name(key: str) -> str:
    """A diffusers MotionAdapter key under AnimateDiff's original name."""
    key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
    for ours, theirs in ((".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1.")):
        key = key.replace(ours, theirs)
    for ours, theirs in ((".norm1.", ".norms.0."), (".norm2.", ".norms.1."), (".norm3.", ".ff_norm.")):
        key = key.replace(ours, theirs)
    return key


def official_file(adapter: MotionAdapter, path) -> None:
    """Save `adapter` as AnimateDiff saves its motion modules, with the positional encodings in each attention."""
    contents = {}
    for key, tensor in adapter.state_dict().items():
        if key.endswith(".pos_embed.pe"):
            block = key.removesuffix(".pos_embed.pe")
            for attention in (0, 1):
                contents[official_name(f"{block}.attn{attention + 1}.pos_encoder.pe")] = tensor.clone()
        else:
            contents[official_name(key)] = tensor.clone()
    torch.save(contents, path)


def test_an_official_motion_module_file_loads_with_every_weight_in_place(tmp_path):
    torch.manual_seed(0)
    adapter = MotionAdapter(**SMALL_V3)
    path = tmp_path / "v3_sd15_mm.ckpt"
    official_file(adapter, path)
    assert any("temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q" in key for key in torch.load(path))
    loaded = load_motion_module_file(path, torch.float32)
    for name in SMALL_V3:
        assert loaded.config[name] == adapter.config[name], name
    expected = adapter.state_dict()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[key]), key


def test_a_file_that_is_not_a_motion_module_is_refused_naming_the_flag(tmp_path):
    path = tmp_path / "style.ckpt"
    torch.save({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 4)}, path)
    with pytest.raises(ModelNotFoundError, match=r"`--motion-adapter` file '.*style\.ckpt' holds no AnimateDiff"):
        load_motion_module_file(path, torch.float32)
    torch.manual_seed(0)
    partial = tmp_path / "partial.ckpt"
    official_file(MotionAdapter(**SMALL_V3), partial)
    contents = torch.load(partial)
    torch.save({key: value for key, value in contents.items() if ".ff." not in key}, partial)
    with pytest.raises(ModelNotFoundError, match=r"does not fit an AnimateDiff SD-1.5 motion adapter \(\d+ weights"):
        load_motion_module_file(partial, torch.float32)
