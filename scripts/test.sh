#!/usr/bin/env bash
# Run the whole test suite (installs into .venv on first use). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
export HF_HUB_OFFLINE=1
set +e
"$root/.venv/bin/python" -m pytest "$@"
status=$?
set -e
# Exit code 5 means pytest collected no test at all: that is a failure here, not a pass.
if [ "$status" -eq 5 ]; then echo "No tests were collected." >&2; exit 1; fi

# The whole suite (no arguments) also runs the add-on tests on Blender 4.2 LTS, the oldest Blender the add-on
# supports; the backend they start runs from .venv.
if [ "$#" -eq 0 ]; then
    "$root/scripts/bootstrap_blender42.sh"
    echo "Add-on tests on Blender 4.2 LTS:" >&2
    set +e
    MOTIONCLONE_BACKEND_PYTHON="$root/.venv/bin/python" "$root/.venv-blender42/bin/python" -m pytest \
        -p no:cacheprovider tests/blender_addon
    status42=$?
    set -e
    if [ "$status42" -eq 5 ]; then echo "No Blender 4.2 tests were collected." >&2; exit 1; fi
    if [ "$status" -eq 0 ]; then status=$status42; fi
fi
exit "$status"
