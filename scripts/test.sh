#!/usr/bin/env bash
# The whole test suite: set up, type-check, run the tests (both ESP back ends), the C core under
# sanitizers and short bounded fuzz runs. FUZZ_SECONDS bounds each fuzz run (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
PY=.venv/bin/python
export FUZZ_SECONDS=${FUZZ_SECONDS:-30}

echo "== mypy --strict"
$PY -m mypy

echo "== pytest"
$PY -m pytest -q "$@"

echo "== C ESP core: unit tests under ASan+UBSan, libFuzzer over decap (${FUZZ_SECONDS}s)"
scripts/test-esp-core.sh

echo "== fuzz: wire codec (atheris, ${FUZZ_SECONDS}s)"
fuzz/run_wire_fuzz.sh 2>&1 | tail -n 3

echo "== fuzz: IKE crypto (atheris, ${FUZZ_SECONDS}s)"
scratch=$(mktemp -d)
$PY fuzz/fuzz_crypto.py -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 -timeout=2 "$scratch" 2>&1 | tail -n 3
rm -rf "$scratch"
