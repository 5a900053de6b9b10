#!/usr/bin/env bash
# Create .venv at the repository root and install the project with its dev tools and the ray extra into it.
# Runs again only when pyproject.toml or this script changed, so calling it before every command is cheap.
# TORCH_SPEC overrides the torch requirement (another version or build, or a wheel file); a new value installs again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.motionclone-install-stamp"
want="$( (cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh"; echo "${TORCH_SPEC:-}") | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    exit 0
fi

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
    done
fi
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    # The backend alone runs on 3.11-3.13, but this environment also holds bpy 5.0.1 (CPython 3.11 only, numpy 1).
    echo "The MotionClone test environment needs Python 3.11 (the Python of Blender 4.2-5.0 and of the bpy wheel);" \
        "set PYTHON=/path/to/python3.11." >&2
    exit 1
fi

echo "Setting up $venv (first run only; a few minutes) ..." >&2
[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
"$venv/bin/python" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
# The ray extra too, so the Ray worker pool's tests (tests/backend/server/test_ray_workers.py) run here and in CI.
"$venv/bin/python" -m pip install --quiet -e "$root[dev,ray]"
echo "$want" > "$stamp"
echo "Environment ready." >&2
