"""The project installs under the `motionclone` namespace and lists every package it ships."""

import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_backend_and_protocol_package_is_listed_for_the_wheel():
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for installed, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            assert ".".join((installed, *relative)) in listed, f"{init.parent} is missing from [tool.setuptools]"


def test_import_names_are_namespaced():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert all(name.startswith("motionclone.") for name in setuptools["packages"])
    assert importlib.import_module("motionclone.backend").__file__.startswith(str(ROOT / "backend"))
    assert importlib.import_module("motionclone.protocol").__file__.startswith(str(ROOT / "protocol"))


def test_protocol_declares_only_blender_safe_dependencies():
    # protocol/ runs inside Blender's Python: standard library, msgpack, pyzmq and numpy only.
    allowed = {"msgpack", "zmq", "numpy"}
    import ast
    import sys

    for source in (ROOT / "protocol").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "level", 0) == 0:
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    top = name.split(".")[0]
                    assert top in allowed or top in sys.stdlib_module_names, f"{source.name} imports {name}"


@pytest.mark.parametrize("model", ["blocks_model", "subject_mask"])
def test_the_built_in_models_ship_as_package_data(model):
    """Every file of the model folder is package data of a listed package (its folders are listed as packages, or
    setuptools warns on every install that it ships them only by accident)."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    model_dir = ROOT / "backend" / "models" / model
    files = {p for p in model_dir.rglob("*") if p.is_file()}
    covered = set()
    for package, patterns in setuptools["package-data"].items():
        assert package in setuptools["packages"], package
        folder = ROOT / "backend" / Path(*package.split(".")[2:])  # motionclone.backend.X.Y -> backend/X/Y
        covered |= {p for pattern in patterns for p in folder.glob(pattern) if p.is_file()}
    assert files and files <= covered
    folders = [model_dir, *(p for p in model_dir.rglob("*") if p.is_dir())]
    for folder in folders:
        package = ".".join(("motionclone.backend", *folder.relative_to(ROOT / "backend").parts))
        assert package in setuptools["packages"], f"{folder} is missing from [tool.setuptools] packages"


def test_backend_version_matches_the_package_version():
    from motionclone.backend import __version__

    assert __version__ == PYPROJECT["project"]["version"]


def test_the_package_allows_python_3_11_to_3_13():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.14"


def test_numpy_2_is_allowed_except_where_the_bpy_test_extra_installs_bpy():
    from packaging.requirements import Requirement

    def numpy_requirements(lines: list[str]) -> list[Requirement]:
        return [req for req in map(Requirement, lines) if req.name == "numpy"]

    (package_numpy,) = numpy_requirements(PYPROJECT["project"]["dependencies"])
    assert package_numpy.specifier.contains("2.2.0") and package_numpy.specifier.contains("1.26.4")
    for extra, lines in PYPROJECT["project"]["optional-dependencies"].items():
        requirements = list(map(Requirement, lines))
        bpy = [req for req in requirements if req.name == "bpy"]
        for numpy in numpy_requirements(lines):
            assert bpy, f"extra {extra!r} pins numpy without installing bpy"
            # numpy 1 exactly where bpy goes: the same environment marker (Python 3.11, bpy's only CPython).
            assert numpy.marker == bpy[0].marker
            assert not numpy.specifier.contains("2.0.0")
        for req in bpy:
            assert numpy_requirements(lines), f"extra {extra!r} installs bpy without holding numpy below 2"
            assert req.marker is not None and req.marker.evaluate({"python_version": "3.11"})
            assert not req.marker.evaluate({"python_version": "3.12"})
