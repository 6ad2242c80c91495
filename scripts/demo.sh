#!/usr/bin/env bash
# The main job: set up, then two `ikev2lib run` gateways in network namespaces carry TCP through their
# tunnel while they rekey, and print throughput, status and metrics (scripts/gateway_demo.py; needs
# root). The in-process library demo is `.venv/bin/python -m ikev2lib demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python scripts/gateway_demo.py "$@"
