#!/usr/bin/env bash
# Create .venv-blender42: Blender 4.2 LTS as a Python module (bpy 4.2 from PyPI), for running the add-on tests on the
# oldest Blender the add-on supports. Holds only what those tests import (no torch): the backend they talk to runs
# from .venv. Runs again only when this script changed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-blender42"
stamp="$venv/.motionclone-install-stamp"
# The wire protocol's libraries at the backend's versions (.venv, made first by scripts/bootstrap.sh), so that the
# extension built here bundles what the backend runs; without .venv, the newest.
source "$root/scripts/venv_helpers.sh"
wire="$(wire_requirements "$root/.venv")"
want="$(echo "$wire" | setup_hash "$root" "$root/scripts/bootstrap_blender42.sh" "$root/scripts/find_python311.sh" \
    "$root/scripts/venv_helpers.sh")"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    exit 0
fi

source "$root/scripts/find_python311.sh"
echo "Setting up $venv for the Blender 4.2 tests (first run only) ..." >&2
make_venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet "bpy==4.2.23" "numpy>=1.24,<2" "pytest>=8" $wire
# The project itself for `motionclone.protocol` and the test helpers, without its ML dependencies.
"$venv/bin/python" -m pip install --quiet --no-deps -e "$root"
check_bpy "$venv"
echo "$want" > "$stamp"
