# Sourced by the bootstrap scripts: sets python_bin to a Python 3.11 ($PYTHON, else python3.11, else python3) that
# can make virtual environments, or says what to do and exits. bpy's wheels (5.0.1 and 4.2) exist for CPython 3.11
# only, Blender 4.2-5.0's own Python.
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
    done
fi
if [ -z "$python_bin" ] || ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "The MotionClone test environment needs Python 3.11 (the Python of Blender 4.2-5.0 and of the bpy wheels);" \
        "set PYTHON=/path/to/python3.11." >&2
    exit 1
fi
# Debian and Ubuntu ship venv's pip installer separately; without it `python -m venv` fails half-way.
if ! "$python_bin" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "$python_bin cannot make virtual environments (no ensurepip): on Debian or Ubuntu run" \
        "'sudo apt install python3.11-venv', then run this again." >&2
    exit 1
fi
