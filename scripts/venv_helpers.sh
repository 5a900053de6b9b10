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

# setup_hash ROOT FILE...: a SHA-256 (hex) of the files, what stdin adds, and ROOT itself, for a setup stamp. The
# editable install records the checkout's absolute path, so a moved or copied checkout must count as a change.
# sha256sum where there is one (Linux), otherwise macOS's shasum.
setup_hash() {
    local root="$1"
    shift
    local digest=(sha256sum)
    if ! command -v sha256sum >/dev/null 2>&1; then digest=(shasum -a 256); fi
    (cat "$@" -; echo "$root") | "${digest[@]}" | cut -d' ' -f1
}

# explain_bpy_platform: after a failed install, say so when this machine is one PyPI has no bpy 5.0.1 wheel for.
explain_bpy_platform() {
    local machine
    machine="$(uname -s) $(uname -m)"
    case "$machine" in
        "Linux x86_64" | "Darwin arm64" | MINGW* | MSYS* | CYGWIN*) ;;
        *)
            echo "The setup needs bpy 5.0.1 (Blender as a Python module, for the demo and the add-on tests), which" \
                "PyPI has for Linux x86_64, macOS on Apple silicon and Windows x64 only; this machine is $machine." \
                "The backend alone runs without it: pip install -e . in a Python 3.11-3.13 environment." >&2
            ;;
    esac
}
