"""The Blender extension zip built by scripts/build_extension.py: contents, Blender's validator, and registration.

Only linux-x64 is built here (the machine the tests run on), with the wheel cache in a session temporary folder, or
in $MOTIONCLONE_WHEEL_CACHE when that is set (for machines that cannot reach PyPI but hold the wheels).

The add-on is then unzipped the way Blender installs it, into `<user resources>/extensions/user_default/motionclone`,
and imported as `bl_ext.user_default.motionclone` in a fresh Python with every `motionclone.*` import blocked and the
repository off sys.path, so it must run from the zip alone. (A `bl_ext` package of our own on sys.path would not work:
bpy creates `bl_ext` at import time from the preferences' extension repositories, so the test points
BLENDER_USER_RESOURCES at a temporary folder instead.)
"""

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.script_modules import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_extension.py"
PLATFORM = "linux-x64"
ADDON_MODULE = "bl_ext.user_default.motionclone"


build_extension = load_script("build_extension")
VERSION = build_extension.project_version()


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if cache := os.environ.get("MOTIONCLONE_WHEEL_CACHE"):
        return Path(cache)
    return tmp_path_factory.mktemp("wheel-cache")


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory, wheel_cache: Path) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, str(SCRIPT), "--platforms", PLATFORM, "--output-dir", str(out)]
    command += ["--wheel-cache", str(wheel_cache)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"build failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="module")
def built_zip(dist_dir: Path) -> Path:
    return dist_dir / f"motionclone-{VERSION}-{PLATFORM}.zip"


@pytest.fixture(scope="module")
def zip_names(built_zip: Path) -> list[str]:
    with zipfile.ZipFile(built_zip) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def zipped_manifest(built_zip: Path) -> dict[str, object]:
    with zipfile.ZipFile(built_zip) as archive:
        return tomllib.loads(archive.read("blender_manifest.toml").decode("utf-8"))


def test_build_writes_one_zip_named_for_the_platform(dist_dir: Path, built_zip: Path) -> None:
    assert sorted(path.name for path in dist_dir.iterdir()) == [built_zip.name]
    assert built_zip.stat().st_size > 0


def test_zip_holds_the_addon_and_the_bundled_protocol(zip_names: list[str]) -> None:
    required = ["blender_manifest.toml", "__init__.py", "_protocol.py", "protocol/__init__.py", "protocol/client.py"]
    assert set(required) <= set(zip_names)
    addon_files = {path.name for path in (ROOT / "blender_addon").glob("*.py")}
    assert addon_files <= set(zip_names)
    protocol_files = {f"protocol/{path.name}" for path in (ROOT / "protocol").glob("*.py")}
    assert protocol_files <= set(zip_names)
    for name in zip_names:
        assert "__pycache__" not in name and not name.endswith(".pyc"), name
        assert not name.startswith("tests/"), name


def test_zip_bundles_pyzmq_and_msgpack_for_linux_only(zip_names: list[str]) -> None:
    wheels = [build_extension.Wheel.parse(Path(name)) for name in zip_names if name.endswith(".whl")]
    assert all(wheel is not None for wheel in wheels)
    assert all(Path(wheel.path).parent == Path("wheels") for wheel in wheels)
    assert {wheel.distribution for wheel in wheels} == {"pyzmq", "msgpack"}
    for wheel in wheels:
        assert all(tag.startswith("manylinux") for tag in wheel.platform_tags), wheel.path.name
        assert not any(tag.startswith(("win", "macosx")) for tag in wheel.platform_tags), wheel.path.name
    # Every bundled distribution loads on CPython 3.11 (Blender 4.2 to 5.0) and 3.13 (Blender 5.1+).
    for distribution in ("pyzmq", "msgpack"):
        for minor in build_extension.PYTHON_MINORS:
            assert any(wheel.distribution == distribution and wheel.python_score(minor) for wheel in wheels), (
                f"no {distribution} wheel for CPython 3.{minor}"
            )


def test_zip_bundles_the_versions_the_backend_uses(zip_names: list[str]) -> None:
    """Asked of the backend's own Python (on the Blender 4.2 leg the build runs in another environment)."""
    wheels = [build_extension.Wheel.parse(Path(name)) for name in zip_names if name.endswith(".whl")]
    backend_python = os.environ.get("MOTIONCLONE_BACKEND_PYTHON", sys.executable)
    names = list(build_extension.BUNDLED_DISTRIBUTIONS)
    ask = f"import json, importlib.metadata as m; print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    answer = subprocess.run([backend_python, "-c", ask], capture_output=True, text=True, check=True).stdout
    assert {(wheel.distribution, wheel.version) for wheel in wheels} == set(json.loads(answer).items())


def test_zipped_manifest_lists_exactly_the_bundled_wheels(
    zip_names: list[str], zipped_manifest: dict[str, object]
) -> None:
    listed = zipped_manifest["wheels"]
    assert isinstance(listed, list)
    assert sorted(path.removeprefix("./") for path in listed) == sorted(n for n in zip_names if n.endswith(".whl"))
    generated = zipped_manifest["build"]["generated"]  # type: ignore[index]
    assert generated["platforms"] == [PLATFORM]


def test_zip_passes_blenders_validator(built_zip: Path) -> None:
    command = [sys.executable, str(build_extension.blender_ext_path()), "validate", str(built_zip)]
    if (tags := build_extension.valid_tags_path()) is not None:
        command.append(f"--valid-tags={tags}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_manifest_version_equals_pyproject_version(zipped_manifest: dict[str, object]) -> None:
    committed = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text(encoding="utf-8"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert committed["version"] == pyproject["project"]["version"] == zipped_manifest["version"]
    assert "wheels" not in committed  # the build writes them into its staged copy only


def test_build_refuses_a_manifest_whose_version_differs_from_pyproject() -> None:
    manifest = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text(encoding="utf-8"))
    build_extension.check_manifest(manifest, VERSION)
    with pytest.raises(build_extension.BuildError, match="differs from pyproject"):
        build_extension.check_manifest({**manifest, "version": "9.9.9"}, VERSION)


def test_wheel_choice_prefers_the_exact_python_and_accepts_stable_abi(tmp_path: Path) -> None:
    for name in (
        "pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
        "pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
        "pyzmq-27.3.0-cp312-abi3-manylinux_2_34_x86_64.whl",  # needs a newer glibc than Blender's
        "pyzmq-27.3.0-cp313-cp313-win_amd64.whl",
    ):
        (tmp_path / name).touch()
    linux = build_extension.PLATFORMS["linux-x64"]
    on_311 = build_extension.Requirement("pyzmq", "27.3.0", 11, linux).best_in(tmp_path)
    on_313 = build_extension.Requirement("pyzmq", "27.3.0", 13, linux).best_in(tmp_path)
    assert on_311 is not None and on_311.name.startswith("pyzmq-27.3.0-cp311-cp311-manylinux_2_26")
    assert on_313 is not None and on_313.name.startswith("pyzmq-27.3.0-cp312-abi3-manylinux_2_26")
    windows = build_extension.PLATFORMS["windows-x64"]
    assert build_extension.Requirement("pyzmq", "27.3.0", 11, windows).best_in(tmp_path) is None


# Runs in a fresh interpreter (python -I: no PYTHONPATH, no script folder on sys.path). argv: mode, the unzipped
# add-on folder, the repository root, the site-packages folder Blender unpacks extension wheels into.
CHILD = r"""
import importlib
import importlib.abc
import importlib.machinery
import os
import sys

mode, addon_dir, repo_root, wheel_site = sys.argv[1:5]
name = "bl_ext.user_default.motionclone"
blocked = []


class BlockRepository(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "motionclone" or fullname.startswith("motionclone."):
            blocked.append(fullname)
            raise ImportError(f"{fullname} is blocked: the add-on must run from its zip alone", name=fullname)
        return None


class BundledWheelsOnly(importlib.abc.MetaPathFinder):
    # pyzmq and msgpack must come from the wheels Blender unpacked from the extension, not from the venv.
    def find_spec(self, fullname, path=None, target=None):
        if fullname in ("zmq", "msgpack"):
            spec = importlib.machinery.PathFinder.find_spec(fullname, [wheel_site])
            if spec is None:
                raise ImportError(f"{fullname} is not among the wheels unpacked into {wheel_site}", name=fullname)
            return spec
        return None


def outside_venv_in_repo(path):
    path = os.path.realpath(path)
    venv = os.path.realpath(sys.prefix) + os.sep  # whichever virtual environment runs the tests
    return path.startswith(repo_root + os.sep) and not path.startswith(venv)


sys.meta_path.insert(0, BlockRepository())
sys.path[:] = [entry for entry in sys.path if entry not in ("", ".") and not outside_venv_in_repo(entry or ".")]

import bpy  # noqa: E402
import addon_utils  # noqa: E402

repos = {repo.module: repo.directory for repo in bpy.context.preferences.extensions.repos}
assert os.path.realpath(repos["user_default"]) == os.path.realpath(os.path.dirname(addon_dir)), repos


def raise_error(error):
    raise error


if mode == "import":
    protocol = importlib.import_module(name + "._protocol")
    addon = sys.modules[name]
else:
    sys.meta_path.insert(0, BundledWheelsOnly())
    assert "zmq" not in sys.modules and "msgpack" not in sys.modules
    addon = addon_utils.enable(name, default_set=True, handle_error=raise_error)
    assert addon is not None, "addon_utils.enable returned None"
    assert addon.__addon_enabled__ is True
    assert name in bpy.context.preferences.addons, "not in the preferences' add-ons"
    protocol = importlib.import_module(name + "._protocol")
    for module_name in ("zmq", "msgpack"):
        module_file = os.path.realpath(sys.modules[module_name].__file__)
        assert module_file.startswith(os.path.realpath(wheel_site) + os.sep), (module_name, module_file)

assert addon.__name__ == name and addon.__package__ == name, (addon.__name__, addon.__package__)
assert os.path.realpath(addon.__file__) == os.path.realpath(os.path.join(addon_dir, "__init__.py")), addon.__file__
assert protocol.BUNDLED is True
bundled = os.path.realpath(os.path.join(addon_dir, "protocol")) + os.sep
for part in ("client", "codec", "endpoints", "errors", "keys", "messages"):
    module = getattr(protocol, part)
    assert module.__name__ == f"{name}.protocol.{part}", module.__name__
    assert os.path.realpath(module.__file__).startswith(bundled), module.__file__
assert not blocked, f"the add-on tried to import {blocked}"
strays = sorted(n for n in sys.modules if n == "motionclone" or n.startswith(("motionclone.", "blender_addon")))
assert not strays, strays
from_repo = sorted(
    n for n, m in list(sys.modules.items()) if getattr(m, "__file__", None) and outside_venv_in_repo(m.__file__)
)
assert not from_repo, f"modules loaded from the repository: {from_repo}"

if mode == "enable":
    addon_utils.disable(name, default_set=True, handle_error=raise_error)
    assert addon.__addon_enabled__ is False
    assert name not in bpy.context.preferences.addons, "still in the preferences' add-ons after disable"

print("OK")
"""


@pytest.fixture
def installed_addon(built_zip: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Unzip the extension where Blender installs it; return (add-on folder, user resources folder)."""
    resources = tmp_path / "blender-user"
    addon_dir = resources / "extensions" / "user_default" / "motionclone"
    with zipfile.ZipFile(built_zip) as archive:
        archive.extractall(addon_dir)
    return addon_dir, resources


def _run_child(mode: str, addon_dir: Path, resources: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    major_minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    wheel_site = resources / "extensions" / ".local" / "lib" / major_minor / "site-packages"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "BLENDER_"))}
    env["BLENDER_USER_RESOURCES"] = str(resources)
    command = [sys.executable, "-I", "-c", CHILD, mode, str(addon_dir), str(ROOT), str(wheel_site)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env, check=False)


def test_bundled_protocol_is_imported_with_the_repository_blocked(
    installed_addon: tuple[Path, Path], tmp_path: Path
) -> None:
    addon_dir, resources = installed_addon
    result = _run_child("import", addon_dir, resources, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "OK"


def test_addon_registers_and_unregisters_from_the_unzipped_folder(
    installed_addon: tuple[Path, Path], tmp_path: Path
) -> None:
    addon_dir, resources = installed_addon
    result = _run_child("enable", addon_dir, resources, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "OK"
