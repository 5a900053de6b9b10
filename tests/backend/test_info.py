"""`motionclone info`: one JSON object about the backend and the machine, without loading a model."""

import json
import subprocess
import sys

import torch

from motionclone.backend import __version__
from motionclone.backend.models.presets import PRESET_NAMES


def test_info_prints_one_json_object_with_version_presets_python_torch_and_cuda():
    result = subprocess.run(
        [sys.executable, "-m", "motionclone.backend", "info"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["version"] == __version__
    assert [preset["name"] for preset in info["presets"]] == list(PRESET_NAMES)
    tiny = next(preset for preset in info["presets"] if preset["name"] == "tiny")
    assert tiny["dtypes"] == {"cpu": "float32", "cuda": "float32"}
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["torch"] == torch.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["cuda_device"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    assert info["default_device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_info_imports_neither_diffusers_nor_the_engine():
    # The add-on's Check button waits for this command: it must not pay for the ML stack beyond torch.
    code = (
        "import sys\n"
        "from motionclone.backend.cli import main\n"
        "assert main(['info']) == 0\n"
        "heavy = sorted(name for name in ('diffusers', 'transformers', 'motionclone.backend.engine') "
        "if name in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "HEAVY []"
