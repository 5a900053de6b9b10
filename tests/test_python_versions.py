"""The package installs and its CLI starts on each Python it claims (3.11-3.13), torch left out to stay fast.

For python3.12 and python3.13 found on PATH or installed with pyenv: a fresh virtual environment,
`pip install --no-deps -e <repo>` plus pyzmq, msgpack and numpy (from the package index), then
`import motionclone.protocol` and
`python -m motionclone.backend --help`. An interpreter that is not installed is reported as skipped, never as passed.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT_S = 600


def runs_as(path: str, wanted: str) -> bool:
    """Whether the interpreter at `path` starts and is Python `wanted` ("3.12")."""
    try:
        probe = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and probe.stdout.strip() == wanted


def pyenv_interpreters(wanted: str) -> list[str]:
    """Interpreters of version `wanted` installed with pyenv, newest first (a pyenv shim on PATH fails for a version
    that is installed but not active, so the installed ones are asked for by their own path)."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return []
    try:
        listed = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    versions = Path(listed.stdout.strip()) / "versions"
    if listed.returncode != 0 or not versions.is_dir():
        return []
    found = [folder for folder in versions.iterdir() if folder.name.startswith(wanted + ".")]
    return [str(folder / "bin" / f"python{wanted}") for folder in sorted(found, reverse=True)]


def working_interpreter(name: str) -> str | None:
    """A path of `name` ("python3.12") that runs and is that version: on PATH, else installed with pyenv."""
    wanted = name.removeprefix("python")
    candidates = [path for path in (shutil.which(name),) if path is not None] + pyenv_interpreters(wanted)
    return next((path for path in candidates if runs_as(path, wanted)), None)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["python3.12", "python3.13"])
def test_the_package_installs_and_its_cli_starts_without_torch(name, tmp_path):
    interpreter = working_interpreter(name)
    if interpreter is None:
        pytest.skip(f"{name} is not installed on this machine")
    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python"))

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([python, *args], capture_output=True, text=True, timeout=PIP_TIMEOUT_S, cwd=tmp_path)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    run("-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT))
    run("-m", "pip", "install", "--quiet", "pyzmq", "msgpack", "numpy")
    version = run("-c", "import sys, motionclone.protocol; print('%d.%d' % sys.version_info[:2])")
    assert version.stdout.strip() == name.removeprefix("python")
    helped = run("-m", "motionclone.backend", "--help")
    assert "serve" in helped.stdout and "info" in helped.stdout
