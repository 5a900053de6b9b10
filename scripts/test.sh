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
exit "$status"
