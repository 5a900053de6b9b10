"""The setup scripts' checks: a half-made or foreign .venv is made again, and a system that lacks what Python or
Blender need gets the command that installs it, not a traceback."""

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def bash(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {script}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def fake_python(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_venv_that_a_failed_setup_left_without_pip_is_made_again_and_a_good_one_is_kept(tmp_path):
    venv = tmp_path / "venv"
    fake_python(venv / "bin" / "python", "exit 1")  # what `python -m venv` leaves when ensurepip is missing
    helpers = f"source {SCRIPTS / 'venv_helpers.sh'}; python_bin={sys.executable}"
    made = bash(f"{helpers}; make_venv {venv}")
    assert made.returncode == 0, made.stderr
    assert "is not a usable Python 3.11 environment" in made.stderr
    assert subprocess.run([venv / "bin" / "python", "-m", "pip", "--version"], capture_output=True).returncode == 0
    (venv / "kept").write_text("")
    again = bash(f"{helpers}; make_venv {venv}")
    assert again.returncode == 0 and again.stderr == "" and (venv / "kept").exists()


def test_a_missing_blender_library_is_named_with_the_packages_that_hold_it(tmp_path):
    venv = tmp_path / "venv"
    fake_python(venv / "bin" / "python", 'echo "ImportError: libX11.so.6: cannot open shared object file" >&2; exit 1')
    checked = bash(f"source {SCRIPTS / 'venv_helpers.sh'}; check_bpy {venv}; echo not reached")
    assert checked.returncode == 1 and "not reached" not in checked.stdout
    assert "libX11.so.6" in checked.stderr and "sudo apt install libx11-6 libxrender1" in checked.stderr


def test_a_python_that_cannot_make_environments_is_named_with_the_package_to_install(tmp_path):
    python = fake_python(tmp_path / "python3.11", 'case "$2" in *ensurepip*) exit 1;; *) exit 0;; esac')
    found = bash(f"source {SCRIPTS / 'find_python311.sh'}; echo not reached", PYTHON=str(python))
    assert found.returncode == 1 and "not reached" not in found.stdout
    assert "sudo apt install python3.11-venv" in found.stderr


def test_the_blender_42_environment_takes_the_backends_wire_library_versions(tmp_path):
    from importlib.metadata import version

    helpers = f"source {SCRIPTS / 'venv_helpers.sh'}"
    backend_venv = Path(sys.executable).parent.parent
    pinned = bash(f"{helpers}; wire_requirements {backend_venv}")
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.split() == [f"pyzmq=={version('pyzmq')}", f"msgpack=={version('msgpack')}"]
    newest = bash(f"{helpers}; wire_requirements {tmp_path / 'no-venv'}")
    assert newest.stdout.split() == ["pyzmq>=26", "msgpack>=1.0"]


def test_the_setup_stamp_changes_with_the_checkouts_place_and_needs_no_sha256sum(tmp_path):
    # The editable install records the checkout's absolute path: a moved or copied checkout must set up again.
    (tmp_path / "file").write_text("pyproject")
    stamp = f'source {SCRIPTS}/venv_helpers.sh; echo torch | setup_hash "$ROOT" {tmp_path}/file'
    here, there = (bash(stamp, ROOT=root) for root in ("/repo", "/moved/repo"))
    assert here.returncode == there.returncode == 0, here.stderr + there.stderr
    assert len(here.stdout.strip()) == 64 and here.stdout != there.stdout
    assert bash(stamp, ROOT="/repo").stdout == here.stdout
    # macOS has shasum but, before 15, no sha256sum: the same digest from a PATH without it.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("cat", "cut", "shasum", "perl"):
        (tools / tool).symlink_to(f"/usr/bin/{tool}")
    without = subprocess.run(
        ["/bin/bash", "-c", f"set -euo pipefail; {stamp}"],
        capture_output=True,
        text=True,
        env={"PATH": str(tools), "ROOT": "/repo"},
    )
    assert without.returncode == 0 and without.stdout == here.stdout, without.stderr


def test_a_failed_install_on_a_machine_without_a_bpy_wheel_says_which_machines_have_one(tmp_path):
    for machine, named in (("Linux aarch64", True), ("Darwin x86_64", True), ("Linux x86_64", False)):
        system, arch = machine.split()
        fake_python(tmp_path / machine / "uname", f'case "$1" in -s) echo {system};; -m) echo {arch};; esac')
        result = bash(
            f"source {SCRIPTS}/venv_helpers.sh; explain_bpy_platform", PATH=f"{tmp_path / machine}:/usr/bin:/bin"
        )
        assert result.returncode == 0
        assert ("this machine is " + machine in result.stderr) == named, result.stderr
