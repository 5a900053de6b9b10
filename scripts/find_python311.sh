# Sourced by the bootstrap scripts: sets python_bin to a Python 3.11 ($PYTHON, else python3.11, else python3), or
# says what to do and exits. bpy's wheels (5.0.1 and 4.2) exist for CPython 3.11 only, Blender 4.2-5.0's own Python.
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
