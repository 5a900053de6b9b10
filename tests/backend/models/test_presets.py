"""The preset facts `motionclone info` reports agree with the loaders they describe."""

import torch

from motionclone.backend.models import PRESETS, load_preset
from motionclone.backend.models.presets import DEFAULT_DTYPES, PRESET_NAMES, default_dtype


def test_every_loader_has_facts_and_every_fact_a_loader():
    assert set(PRESET_NAMES) == set(PRESETS) == set(DEFAULT_DTYPES)


def test_the_tiny_preset_loads_in_its_stated_cpu_dtype():
    bundle = load_preset("tiny", device="cpu")
    assert bundle.unet.dtype == getattr(torch, default_dtype("tiny", "cpu"))


def test_cuda_devices_with_an_index_count_as_cuda():
    assert default_dtype("sd15-animatediff-v3", "cuda:1") == "float16"
    assert default_dtype("sd15-animatediff-v3", "cpu") == "float32"
