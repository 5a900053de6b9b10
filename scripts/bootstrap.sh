#!/usr/bin/env bash
# Create .venv at the repository root and install the project with its dev tools and the ray extra into it.
# Runs again only when pyproject.toml or this script changed, so calling it before every command is cheap.
# TORCH_SPEC overrides the torch requirement (another version or build, a wheel file, or a requirement followed by pip
# options such as --index-url); a new value installs again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.motionclone-install-stamp"
# A TORCH_SPEC given once is kept for later runs, which call this without it (the demo, the tests): otherwise they
# would count it as a change and install the default torch over the user's choice.
torch_spec_file="$venv/.motionclone-torch-spec"
if [ -z "${TORCH_SPEC:-}" ] && [ -f "$torch_spec_file" ]; then
    TORCH_SPEC="$(cat "$torch_spec_file")"
fi
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
source "$root/scripts/venv_helpers.sh"
want="$(echo "$torch_spec" | setup_hash "$root" "$root/pyproject.toml" "$root/scripts/bootstrap.sh" \
    "$root/scripts/venv_helpers.sh" "$root/scripts/find_python311.sh")"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    exit 0
fi

# The backend alone runs on 3.11-3.13, but this environment also holds bpy 5.0.1 (CPython 3.11 only, numpy 1).
source "$root/scripts/find_python311.sh"

echo "Setting up $venv (first run only; a few minutes) ..." >&2
make_venv "$venv"
# Kept now, not only after a complete setup: a run stopped by a missing system library must not lose it.
if [ -n "${TORCH_SPEC:-}" ]; then echo "$TORCH_SPEC" > "$torch_spec_file"; fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch first and pinned. On Linux, PyPI's torch is the CUDA build (GBs of CUDA libraries); a CPU-only machine can
# take the CPU build with TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" (split into
# words on purpose, so that it can carry pip options).
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet $torch_spec
# The ray extra too, so the Ray worker pool's tests (tests/backend/server/test_ray_workers.py) run here and in CI.
if ! "$venv/bin/python" -m pip install --quiet -e "$root[dev,ray]"; then
    explain_bpy_platform
    exit 1
fi
check_bpy "$venv"
echo "$want" > "$stamp"
echo "Environment ready." >&2
