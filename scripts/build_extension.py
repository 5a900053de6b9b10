#!/usr/bin/env python3
"""Build the MotionClone Blender extension: one zip per platform, with protocol/ and the pyzmq and msgpack wheels.

    python scripts/build_extension.py                          # dist/motionclone-<version>-<platform>.zip, all three
    python scripts/build_extension.py --platforms linux-x64 --wheel-cache .wheel-cache

Steps:
1. Stage: copy blender_addon/ (without caches and tests) into a temporary folder and the repository's protocol/
   package into it as protocol/, where the add-on's _protocol.py finds it.
2. Wheels: for every platform and for CPython 3.11 (Blender 4.2 to 5.0) and 3.13 (Blender 5.1+), fetch unmodified
   PyPI wheels of pyzmq and msgpack with `pip download --no-deps --only-binary=:all:`, pinned to the versions this
   Python has installed so that the add-on and the backend speak with the same libraries. A wheel cache folder
   (--wheel-cache) is searched first, so a second build downloads nothing.
3. Write `wheels = ["./wheels/<file>", ...]` into the staged manifest (the committed one lists none).
4. Run Blender's own builder (`blender_ext.py build --split-platforms`, from the installed bpy package), then its
   validator on every zip, with Blender's list of valid tags, as `blender --command extension ...` would.

Run it with the project's virtual environment (`.venv/bin/python`): it needs pip, pyzmq, msgpack and bpy installed.
It uses only the standard library; wheels are never committed (dist/ and .wheel-cache/ are git-ignored).
"""

import argparse
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDON_DIR = ROOT / "blender_addon"
PROTOCOL_DIR = ROOT / "protocol"
PYPROJECT = ROOT / "pyproject.toml"
MANIFEST_NAME = "blender_manifest.toml"
EXTENSION_ID = "motionclone"

# Distributions bundled as wheels (import names zmq and msgpack); protocol/ needs nothing else outside the standard
# library except numpy, which Blender ships.
BUNDLED_DISTRIBUTIONS = ("pyzmq", "msgpack")
# CPython minor versions: 3.11 for Blender 4.2 to 5.0, 3.13 for Blender 5.1 and later.
PYTHON_MINORS = (11, 13)

STAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "wheels", ".*", "*.zip")


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


@dataclass(frozen=True)
class Platform:
    """A Blender platform and the wheel platform tags that run on it."""

    name: str  # Blender's name, as in the manifest's `platforms`
    # Every tag passed to `pip download --platform`, newest first: pip adds no older manylinux_2_x tags to a
    # manylinux_2_x one, so a wheel tagged only with an older one is found only when its tag is listed here.
    pip_platforms: tuple[str, ...]
    wheel_tag: re.Pattern[str]  # which wheel platform tags Blender on this platform can load

    def accepts(self, wheel_platform_tag: str) -> bool:
        return self.wheel_tag.fullmatch(wheel_platform_tag) is not None


def manylinux_tags(arch: str, glibc_minor: int) -> tuple[str, ...]:
    """The manylinux platform tags of glibc 2.<glibc_minor> down to 2.5, newest first, with the legacy aliases.

    manylinux2014, manylinux2010 and manylinux1 are the older names of glibc 2.17, 2.12 and 2.5; wheels may carry
    either name, so both are listed.
    """
    tags = tuple(f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 4, -1))
    return (*tags, *(f"manylinux{legacy}_{arch}" for legacy in ("2014", "2010", "1")))


# Blender 4.2+ needs glibc 2.28 on Linux and macOS 11.2 on Apple Silicon: wheels must not ask for more.
PLATFORMS: dict[str, Platform] = {
    platform.name: platform
    for platform in (
        Platform(
            "linux-x64",
            manylinux_tags("x86_64", 28),
            re.compile(r"manylinux(?:1|2010|2014|_2_(?:[5-9]|1\d|2[0-8]))_x86_64"),
        ),
        Platform("windows-x64", ("win_amd64",), re.compile(r"win_amd64")),
        # pip itself adds the older macOS tags a macosx_11_0_arm64 machine loads (macosx_10_*_universal2).
        Platform("macos-arm64", ("macosx_11_0_arm64",), re.compile(r"macosx_(?:10_\d+|11_0)_(?:arm64|universal2)")),
    )
}


@dataclass(frozen=True)
class Wheel:
    """A wheel file name split into the parts that decide where it installs."""

    path: Path
    distribution: str  # normalised: lower case, runs of -_. as _
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, path: Path) -> "Wheel | None":
        parts = path.name.removesuffix(".whl").split("-")
        if not path.name.endswith(".whl") or len(parts) not in (5, 6):
            return None
        return cls(
            path=path,
            distribution=normalise(parts[0]),
            version=parts[1],
            python_tags=tuple(parts[-3].split(".")),
            abi_tags=tuple(parts[-2].split(".")),
            platform_tags=tuple(parts[-1].split(".")),
        )

    def python_score(self, minor: int) -> int:
        """2 for a wheel built for CPython 3.<minor>, 1 for a stable-ABI wheel it can load, 0 for neither."""
        exact = f"cp3{minor}"
        if exact in self.python_tags and exact in self.abi_tags:
            return 2
        if "abi3" in self.abi_tags:
            for tag in self.python_tags:
                if re.fullmatch(r"cp3\d+", tag) and int(tag[3:]) <= minor:
                    return 1
        return 0

    def runs_on(self, platform: Platform) -> bool:
        return any(platform.accepts(tag) for tag in self.platform_tags)


@dataclass(frozen=True)
class Requirement:
    """One wheel the extension needs: a pinned distribution for one Python and one platform."""

    distribution: str
    version: str
    python_minor: int
    platform: Platform

    def __str__(self) -> str:
        return f"{self.distribution}=={self.version} for CPython 3.{self.python_minor} on {self.platform.name}"

    def best_in(self, folder: Path) -> Path | None:
        """The best matching wheel already in `folder`: built for this Python before stable-ABI, then by name."""
        candidates: list[tuple[int, str, Path]] = []
        for path in folder.glob("*.whl"):
            wheel = Wheel.parse(path)
            if (
                wheel is None
                or wheel.distribution != normalise(self.distribution)
                or wheel.version != self.version
                or not wheel.runs_on(self.platform)
            ):
                continue
            if score := wheel.python_score(self.python_minor):
                candidates.append((-score, path.name, path))
        return min(candidates)[2] if candidates else None


def normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()


def log(message: str) -> None:
    print(f"[build_extension] {message}", flush=True)


# --- versions -------------------------------------------------------------------------------------------------------


def project_version() -> str:
    return str(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"])


def read_manifest(addon_dir: Path) -> tuple[str, dict[str, object]]:
    path = addon_dir / MANIFEST_NAME
    if not path.is_file():
        raise BuildError(f"{path} is missing")
    text = path.read_text(encoding="utf-8")
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BuildError(f"{path} is not valid TOML: {error}") from error


def check_manifest(manifest: dict[str, object], version: str) -> None:
    if manifest.get("id") != EXTENSION_ID:
        raise BuildError(f"{MANIFEST_NAME}: id is {manifest.get('id')!r}, expected {EXTENSION_ID!r}")
    if manifest.get("version") != version:
        raise BuildError(
            f"{MANIFEST_NAME}: version {manifest.get('version')!r} differs from pyproject.toml's {version!r}; "
            "keep them equal"
        )
    if "wheels" in manifest:
        raise BuildError(f"{MANIFEST_NAME}: remove the `wheels` line; the build writes it into the staged copy")
    declared = manifest.get("platforms")
    if not isinstance(declared, list) or sorted(declared) != sorted(PLATFORMS):
        raise BuildError(
            f"{MANIFEST_NAME}: platforms {declared!r} differ from the ones this script builds, {sorted(PLATFORMS)}"
        )


def pinned_versions() -> dict[str, str]:
    versions = {}
    for distribution in BUNDLED_DISTRIBUTIONS:
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError as error:
            raise BuildError(
                f"{distribution} is not installed in {sys.executable}; run this script with the project's "
                "environment (.venv/bin/python) so the bundled wheels match the backend's versions"
            ) from error
    return versions


# --- Blender's extension tool ---------------------------------------------------------------------------------------


def blender_scripts_dir() -> Path:
    """`<site-packages>/bpy/<X.Y>/scripts` of the installed bpy package, found without importing bpy."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"bpy is not installed in {sys.executable}; install the dev extras (bpy==5.0.1)")
    for location in spec.submodule_search_locations:
        # <location>/<X.Y>/scripts/addons_core/bl_pkg/cli/blender_ext.py: parents[3] is scripts, [4] is X.Y
        scripts_dirs = [
            path.parents[3]
            for path in Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")
            if re.fullmatch(r"\d+\.\d+", path.parents[4].name)
        ]
        if scripts_dirs:
            return max(scripts_dirs, key=lambda path: tuple(int(part) for part in path.parent.name.split(".")))
    raise BuildError(
        f"no <version>/scripts/addons_core/bl_pkg/cli/blender_ext.py under {spec.submodule_search_locations}"
    )


def blender_ext_path() -> Path:
    return blender_scripts_dir() / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def valid_tags_path() -> Path | None:
    """The tag list `blender --command extension build/validate` checks against (Blender passes it by default)."""
    path = blender_scripts_dir() / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    return path if path.is_file() else None


def run_blender_ext(arguments: Sequence[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(blender_ext_path()), *arguments]
    if (tags := valid_tags_path()) is not None:
        command.append(f"--valid-tags={tags}")
    return subprocess.run(command, capture_output=True, text=True, check=False)


def validate(zip_path: Path) -> str:
    """Run Blender's validator on a built zip; return its output, raise BuildError when it rejects the zip."""
    result = run_blender_ext(["validate", str(zip_path)])
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise BuildError(f"Blender's validator rejected {zip_path.name} (exit {result.returncode}):\n{output}")
    return output


# --- steps ----------------------------------------------------------------------------------------------------------


def stage(staging: Path) -> None:
    """Copy the add-on and the protocol package into `staging`, the folder Blender's builder zips."""
    shutil.copytree(ADDON_DIR, staging, ignore=STAGE_IGNORE)
    if (staging / "protocol").exists():
        raise BuildError(f"{ADDON_DIR / 'protocol'} exists: the build bundles the repository's protocol/ there")
    shutil.copytree(PROTOCOL_DIR, staging / "protocol", ignore=STAGE_IGNORE)
    if not (staging / "__init__.py").is_file():
        raise BuildError(f"{ADDON_DIR / '__init__.py'} is missing: the add-on has nothing to register")


def pip_download_command(requirements: Sequence[Requirement], dest: Path) -> list[str]:
    """The `pip download` command for requirements that share one Python version and platform."""
    first = requirements[0]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar=off",
        "--dest",
        str(dest),
        "--python-version",
        f"3.{first.python_minor}",
        *(option for tag in first.platform.pip_platforms for option in ("--platform", tag)),
        *(f"{requirement.distribution}=={requirement.version}" for requirement in requirements),
    ]


def pip_download(requirements: Sequence[Requirement], dest: Path) -> None:
    """Download the wheels for requirements that share one Python version and platform."""
    command = pip_download_command(requirements, dest)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        details = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        wanted = "; ".join(str(requirement) for requirement in requirements)
        raise BuildError(
            f"pip could not download the wheel(s) {wanted} (exit {result.returncode}). Check network access to PyPI "
            f"(https://pypi.org), or pass --wheel-cache with a folder that already holds them.\n"
            f"command: {' '.join(command)}\n{details}"
        )


def fetch_wheels(platforms: Sequence[Platform], versions: dict[str, str], cache: Path, wheels_dir: Path) -> list[Path]:
    """Put every needed wheel into `wheels_dir`, taking it from `cache` or downloading it there first."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, Path] = {}
    for platform in platforms:
        for minor in PYTHON_MINORS:
            requirements = [Requirement(name, versions[name], minor, platform) for name in BUNDLED_DISTRIBUTIONS]
            missing = [requirement for requirement in requirements if requirement.best_in(cache) is None]
            if missing:
                log(f"downloading {', '.join(str(requirement) for requirement in missing)}")
                pip_download(missing, cache)
            for requirement in requirements:
                found = requirement.best_in(cache)
                if found is None:
                    tags = requirement.platform.pip_platforms
                    older = f" or {len(tags) - 1} older tags" if len(tags) > 1 else ""
                    raise BuildError(
                        f"pip finished but no wheel for {requirement} is in {cache}; PyPI may not publish one "
                        f"(platform tag {tags[0]}{older})"
                    )
                chosen.setdefault(found.name, found)
    for name, path in sorted(chosen.items()):
        shutil.copy2(path, wheels_dir / name)
    return [wheels_dir / name for name in sorted(chosen)]


def write_staged_manifest(
    staging: Path, manifest_text: str, platforms: Sequence[Platform], wheels: Sequence[Path]
) -> None:
    """Declare the platforms being built and list the wheels, before the first table of the staged manifest."""
    lines = manifest_text.splitlines()
    platforms_line = "platforms = [" + ", ".join(f'"{platform.name}"' for platform in platforms) + "]"
    platform_lines = [index for index, line in enumerate(lines) if re.match(r"platforms\s*=", line)]
    if len(platform_lines) != 1 or not lines[platform_lines[0]].rstrip().endswith("]"):
        raise BuildError(f"{MANIFEST_NAME}: keep `platforms = [...]` on one line so the build can narrow it")
    lines[platform_lines[0]] = platforms_line
    first_table = next((index for index, line in enumerate(lines) if line.startswith("[")), len(lines))
    wheel_lines = [
        "# Written by scripts/build_extension.py.",
        "wheels = [",
        *(f'    "./wheels/{wheel.name}",' for wheel in wheels),
        "]",
        "",
    ]
    lines[first_table:first_table] = wheel_lines
    text = "\n".join(lines) + "\n"
    # The edit must still be valid TOML, with the wheels at the top level.
    if tomllib.loads(text).get("wheels") != [f"./wheels/{wheel.name}" for wheel in wheels]:
        raise BuildError(f"could not write the wheels list into the staged {MANIFEST_NAME}")
    (staging / MANIFEST_NAME).write_text(text, encoding="utf-8")


def blender_build(staging: Path, out_dir: Path) -> str:
    result = run_blender_ext(
        ["build", "--source-dir", str(staging), "--output-dir", str(out_dir), "--split-platforms"],
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise BuildError(f"Blender's extension builder failed (exit {result.returncode}):\n{output}")
    return output


def build(platform_names: Sequence[str], output_dir: Path, wheel_cache: Path | None, skip_validate: bool) -> list[Path]:
    version = project_version()
    manifest_text, manifest = read_manifest(ADDON_DIR)
    check_manifest(manifest, version)
    versions = pinned_versions()
    platforms = [PLATFORMS[name] for name in platform_names]
    log(f"MotionClone {version}; bundling " + ", ".join(f"{name}=={ver}" for name, ver in versions.items()))
    log(f"Blender extension tool: {blender_ext_path()}")

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="motionclone-extension-") as temporary:
        work = Path(temporary)
        staging = work / EXTENSION_ID
        stage(staging)
        log(f"staged {ADDON_DIR.relative_to(ROOT)}/ and {PROTOCOL_DIR.relative_to(ROOT)}/ in {staging}")

        cache = wheel_cache if wheel_cache is not None else work / "wheel-cache"
        wheels = fetch_wheels(platforms, versions, cache, staging / "wheels")
        for wheel in wheels:
            log(f"wheel {wheel.name} ({wheel.stat().st_size:,} bytes)")
        write_staged_manifest(staging, manifest_text, platforms, wheels)

        built_dir = work / "built"
        built_dir.mkdir()
        for line in blender_build(staging, built_dir).splitlines():
            log(f"blender_ext build: {line}")

        produced: list[Path] = []
        for platform in platforms:
            built = built_dir / f"{EXTENSION_ID}-{version}-{platform.name.replace('-', '_')}.zip"
            if not built.is_file():
                found = sorted(path.name for path in built_dir.iterdir())
                raise BuildError(f"Blender's builder did not write {built.name}; it wrote {found}")
            target = output_dir / f"{EXTENSION_ID}-{version}-{platform.name}.zip"
            target.unlink(missing_ok=True)
            shutil.move(built, target)
            produced.append(target)

    for target in produced:
        if skip_validate:
            log(f"validation skipped for {target.name}")
        else:
            for line in validate(target).splitlines():
                log(f"blender_ext validate: {line}")
    return produced


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--platforms",
        nargs="+",
        choices=sorted(PLATFORMS),
        default=list(PLATFORMS),
        metavar="PLATFORM",
        help=f"Blender platforms to build, any of {', '.join(PLATFORMS)} (default: all)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=ROOT / "dist", help="where the zips go (default: dist/ in the repository)"
    )
    parser.add_argument(
        "--wheel-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep downloaded wheels here and reuse them on the next build, e.g. .wheel-cache (git-ignored); "
        "default: a temporary folder",
    )
    parser.add_argument("--skip-validate", action="store_true", help="do not run Blender's validator on the zips")
    arguments = parser.parse_args(argv)
    arguments.platforms = list(dict.fromkeys(arguments.platforms))  # drop repeats, keep the order
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        produced = build(
            arguments.platforms,
            arguments.output_dir.resolve(),
            arguments.wheel_cache.resolve() if arguments.wheel_cache is not None else None,
            arguments.skip_validate,
        )
    except BuildError as error:
        print(f"build_extension: error: {error}", file=sys.stderr)
        return 1
    for path in produced:
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
