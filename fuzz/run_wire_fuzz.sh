#!/usr/bin/env bash
# Bounded libFuzzer run of the wire codec harness for CI: FUZZ_SECONDS (default 60) of fuzzing from
# the seed corpus, new inputs kept in a scratch directory, 1 GiB RSS limit, 2 s per-input timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SECONDS_BUDGET=${FUZZ_SECONDS:-60}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" fuzz/fuzz_wire.py -max_total_time="$SECONDS_BUDGET" -rss_limit_mb=1024 -timeout=2 \
    -max_len=4096 -print_final_stats=1 "$work" fuzz/corpus_wire
