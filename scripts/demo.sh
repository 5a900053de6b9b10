#!/usr/bin/env bash
# The main job in one command: make a reference clip and clone its motion onto a new prompt with the built-in
# tiny model on the CPU (installs into .venv on first use). Output goes to demo-output/ (or the folder given).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
out="${1:-$root/demo-output}"
# The demo folder is the demo's own: replace what an earlier demo run left there.
rm -rf "$out/frames" "$out/result.mp4" "$out/result.json"
mkdir -p "$out"
export HF_HUB_OFFLINE=1
"$root/.venv/bin/python" "$root/scripts/make_sample_reference.py" "$out/reference.mp4"
"$root/.venv/bin/motionclone" generate \
    --preset tiny --device cpu \
    --reference "$out/reference.mp4" \
    --prompt "a golden cube sliding across a blue studio" \
    --frames 16 --width 128 --height 128 --steps 20 --guidance-steps 10 \
    --out "$out"
