#!/usr/bin/env bash
# The main job in one command: animate a Blender blockout, send it through the add-on to a backend with the built-in
# trained blocks model on the CPU, and write demo.blend, reference.mp4, result.mp4 and comparison.png into demo-output/
# (installs into .venv on first use). Arguments go to scripts/demo.py: --scene camera, --out DIR, --small, --server,
# --preset/--device, --prompt; see `scripts/demo.sh --help`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
export HF_HUB_OFFLINE=1
exec "$root/.venv/bin/python" "$root/scripts/demo.py" "$@"
