#!/usr/bin/env bash
# The whole test suite: set up, type-check, run the tests (both ESP back ends), the C core under
# sanitizers and short bounded fuzz runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
PY=.venv/bin/python

echo "== mypy --strict"
$PY -m mypy

echo "== pytest"
$PY -m pytest -q "$@"
