"""What `motionclone info` reports: this backend's version, its model presets and the machine's torch and CUDA.

Loads no model. torch is imported inside `machine_info` only, so importing this module is cheap. No bpy, no print.
"""

import platform
import sys
from pathlib import Path
from typing import Any

from ..protocol.messages import PROTOCOL_VERSION
from . import __version__
from .models.presets import DEFAULT_DTYPES, PRESET_NAMES, default_dtype, default_preset


def collect_info() -> dict[str, Any]:
    """One JSON-ready dict: versions, the presets with their default device and dtypes, torch and CUDA.

    Keys: "version", "protocol_version", "python" (version), "python_executable", "platform", "torch" (version, or
    None if torch cannot be imported), "torch_error" (why not, or None), "cuda_available", "cuda_device" (name of
    device 0, or None), "default_device", "default_preset", and "presets": a list of {"name", "default_device",
    "default_dtype" (on that device), "dtypes" ({"cpu": ..., "cuda": ...})}.
    """
    machine = machine_info()
    device = "cuda" if machine["cuda_available"] else "cpu"
    presets = [
        {
            "name": name,
            "default_device": device,
            "default_dtype": default_dtype(name, device),
            "dtypes": dict(DEFAULT_DTYPES[name]),
        }
        for name in PRESET_NAMES
    ]
    return {
        "version": __version__,
        "protocol_version": PROTOCOL_VERSION,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        **machine,
        "default_device": device,
        "default_preset": default_preset(device),
        "presets": presets,
    }


def machine_info() -> dict[str, Any]:
    """torch's version and whether CUDA is usable, with the name of the first CUDA device."""
    try:
        import torch
    except Exception as error:  # a broken torch install is a finding to report, not a crash of the check
        reason = f"{type(error).__name__}: {error}"
        return {"torch": None, "torch_error": reason, "cuda_available": False, "cuda_device": None}
    available = bool(torch.cuda.is_available())
    return {
        "torch": str(torch.__version__),
        "torch_error": None,
        "cuda_available": available,
        "cuda_device": torch.cuda.get_device_name(0) if available else None,
    }


def cpu_model_name() -> str:
    """The CPU's model name ("AMD EPYC ...") from /proc/cpuinfo where there is one, else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
