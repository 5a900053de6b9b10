"""Model preset names and defaults, as facts: which preset a device gets and each preset's default dtype.

Standard library only (no torch, no diffusers), so that `motionclone info` and the CLI's argument parser can name the
presets without importing the ML stack. `registry.PRESETS` maps the same names to their loaders.
"""

# Every preset `registry.load_preset` knows (tests check the two agree).
PRESET_NAMES = ("blocks", "tiny", "sd15-animatediff-v3")

# The preset a CPU uses when none is named: the trained blocks model; GPUs default to SD-1.5.
CPU_DEFAULT_PRESET = "blocks"
GPU_DEFAULT_PRESET = "sd15-animatediff-v3"

# The dtype each preset loads in when none is given, by device kind. SD-1.5 (and the blocks model, stored in the same
# layout) halve their memory on CUDA; the tiny random model stays float32 everywhere so results match across devices.
DEFAULT_DTYPES: dict[str, dict[str, str]] = {
    "blocks": {"cpu": "float32", "cuda": "float16"},
    "tiny": {"cpu": "float32", "cuda": "float32"},
    "sd15-animatediff-v3": {"cpu": "float32", "cuda": "float16"},
}


# The MotionClone config a preset's jobs start from when none is named: the blocks model has its own (40 steps, shared
# noise, subject placement); SD-1.5 and the tiny model take the official camera-motion config.
DEFAULT_CONFIGS: dict[str, str] = {"blocks": "blocks"}
FALLBACK_CONFIG = "camera"


def default_config(preset: str | None) -> str:
    return DEFAULT_CONFIGS.get(preset or "", FALLBACK_CONFIG)


def default_preset(device: str) -> str:
    return GPU_DEFAULT_PRESET if str(device).startswith("cuda") else CPU_DEFAULT_PRESET


def default_dtype(preset: str, device: str) -> str:
    """The dtype name `preset` loads in on `device` ("cpu", "cuda", "cuda:1", ...) when no dtype is given."""
    return DEFAULT_DTYPES[preset]["cuda" if str(device).startswith("cuda") else "cpu"]
