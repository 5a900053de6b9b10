#!/usr/bin/env bash
# Run the whole test suite (installs into .venv on first use). Arguments, if any, go to one pytest run instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
export HF_HUB_OFFLINE=1

# Exit code 5 means pytest collected no test at all: that is a failure here, not a pass.
no_tests() { echo "No tests were collected ($1)." >&2; exit 1; }

if [ "$#" -gt 0 ]; then
    set +e
    "$root/.venv/bin/python" -m pytest "$@"
    status=$?
    set -e
    if [ "$status" -eq 5 ]; then no_tests "pytest $*"; fi
    exit "$status"
fi

# The add-on tests run on Blender 5.0 (bpy from .venv) and on Blender 4.2 LTS, the oldest Blender the add-on
# supports (.venv-blender42); the backend they start runs from .venv. Blender has died with a segfault (exit 139)
# during a reference render now and then, on both versions; lately on 4.2, mostly during the 60 renders of
# test_long_shots.py's shot with a real backend, a file that then passes when run again. Each test file therefore
# runs in a Blender process of its own, so that a crash repeats one file, not the whole suite; a file whose Blender
# crashes is run once more, and a crash that repeats fails. The add-on also keeps the protocol client's thread quiet
# (`Client.quiet`) during each render: test_addon.py alone on 4.2 crashed in 2 of 33 runs without that and in none of
# 60 with it, which points that way without proving it, so the retry stays.
# Call with `set +e`.
addon_tests() {
    local name="$1" python="$2" status=0 result file
    echo "Add-on tests on $name:" >&2
    for file in tests/blender_addon/test_*.py; do
        MOTIONCLONE_BACKEND_PYTHON="$root/.venv/bin/python" "$python" -m pytest -p no:cacheprovider -q "$file"
        result=$?
        if [ "$result" -eq 139 ]; then
            echo "$name crashed (segfault) in $file; running that file once more." >&2
            MOTIONCLONE_BACKEND_PYTHON="$root/.venv/bin/python" "$python" -m pytest -p no:cacheprovider -q "$file"
            result=$?
        fi
        if [ "$result" -eq 5 ]; then no_tests "$file on $name"; fi
        if [ "$status" -eq 0 ]; then status=$result; fi
    done
    return "$status"
}

set +e
"$root/.venv/bin/python" -m pytest --ignore=tests/blender_addon
status=$?
set -e
if [ "$status" -eq 5 ]; then no_tests "backend and protocol tests"; fi

set +e
addon_tests "Blender 5.0" "$root/.venv/bin/python"
status50=$?
set -e
"$root/scripts/bootstrap_blender42.sh"
set +e
addon_tests "Blender 4.2 LTS" "$root/.venv-blender42/bin/python"
status42=$?
set -e
for result in "$status50" "$status42"; do
    if [ "$status" -eq 0 ]; then status=$result; fi
done
exit "$status"
