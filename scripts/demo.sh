#!/usr/bin/env bash
# The main job: set up, then run the ikev2lib demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m ikev2lib demo "$@"
