# Sourced by the bootstrap scripts: make_venv DIR creates a Python 3.11 virtual environment in DIR with a working
# pip, or makes it again when DIR holds one that is not (another Python's, or one a failed setup left half-made).
# Needs python_bin (scripts/find_python311.sh).
make_venv() {
    local dir="$1"
    if [ -x "$dir/bin/python" ] \
        && "$dir/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
        && "$dir/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    if [ -e "$dir" ]; then
        echo "$dir is not a usable Python 3.11 environment (another Python's, or an unfinished setup): making it again." >&2
    fi
    "$python_bin" -m venv --clear "$dir"
}

# check_bpy DIR: bpy (real Blender) loads in DIR's Python, or say which system libraries it needs and exit.
check_bpy() {
    local dir="$1"
    if ! "$dir/bin/python" -c 'import bpy' >/dev/null 2>&1; then
        "$dir/bin/python" -c 'import bpy' 2>&1 | tail -n 3 >&2 || true
        echo "Blender (bpy) needs X11 and OpenGL libraries that this system lacks; on Debian or Ubuntu run" \
            "'sudo apt install libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libgl1 libegl1" \
            "libegl-mesa0 libgl1-mesa-dri', then run this again." >&2
        exit 1
    fi
}

# wire_requirements DIR: the pip requirements of the wire protocol's libraries at the versions installed in DIR's
# Python (the backend's .venv), so that another environment bundles the same ones; the newest without DIR.
wire_requirements() {
    local dir="$1"
    if [ ! -x "$dir/bin/python" ]; then
        echo "pyzmq>=26 msgpack>=1.0"
        return 0
    fi
    "$dir/bin/python" -c 'from importlib.metadata import version
print(" ".join(name + "==" + version(name) for name in ("pyzmq", "msgpack")))'
}
