"""scripts/build_extension.py: the platform tags `pip download` is given match the wheels the build accepts.

pip adds no older manylinux_2_x tags to a `--platform manylinux_2_28_x86_64`, so every accepted tag must be passed.
The pip test runs offline: `--no-index --find-links` on a folder of minimal wheels built here.
"""

import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.script_modules import load_script

ROOT = Path(__file__).resolve().parents[2]


build = load_script("build_extension")
LINUX = build.PLATFORMS["linux-x64"]


def write_wheel(folder: Path, name: str, version: str, tag: str) -> Path:
    """A minimal valid wheel: only its dist-info, enough for pip to download it."""
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
        + "".join(f"Tag: {tag.split('-')[0]}-{tag.split('-')[1]}-{p}\n" for p in tag.split("-")[2].split(".")),
    }
    record = "".join(f"{file},,\n" for file in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(file, text)
    return path


def downloaded(platform: Any, wheels: Path, dest: Path) -> list[str]:
    """The wheel files the build's pip command downloads for pyzmq 27.3.0 on CPython 3.11 from `wheels`."""
    requirement = build.Requirement("pyzmq", "27.3.0", 11, platform)
    command = build.pip_download_command([requirement], dest)
    command += ["--no-index", "--find-links", str(wheels)]
    subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    return sorted(path.name for path in dest.glob("*.whl")) if dest.exists() else []


def test_every_tag_given_to_pip_is_one_the_build_accepts() -> None:
    for platform in build.PLATFORMS.values():
        assert platform.pip_platforms, platform.name
        for tag in platform.pip_platforms:
            assert platform.accepts(tag), f"{platform.name}: pip is given {tag}, which the build would reject"


def test_linux_gives_pip_every_manylinux_tag_the_build_accepts() -> None:
    candidates = [f"manylinux_2_{minor}_x86_64" for minor in range(0, 40)]
    candidates += [f"manylinux{legacy}_x86_64" for legacy in ("1", "2010", "2014")]
    accepted = {tag for tag in candidates if LINUX.accepts(tag)}
    assert accepted == set(LINUX.pip_platforms)
    assert LINUX.pip_platforms[0] == "manylinux_2_28_x86_64"  # newest first: pip prefers the earlier tags
    command = build.pip_download_command([build.Requirement("pyzmq", "27.3.0", 11, LINUX)], Path("dest"))
    passed = [command[i + 1] for i, option in enumerate(command) if option == "--platform"]
    assert passed == list(LINUX.pip_platforms)


def test_pip_downloads_a_wheel_tagged_only_for_an_older_glibc(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    older = write_wheel(wheels, "pyzmq", "27.3.0", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    assert downloaded(LINUX, wheels, tmp_path / "all-tags") == [older.name]
    # The single tag the build used to pass finds nothing: the reason for listing every tag.
    newest_only = replace(LINUX, pip_platforms=("manylinux_2_28_x86_64",))
    assert downloaded(newest_only, wheels, tmp_path / "newest-only") == []
