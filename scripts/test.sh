#!/usr/bin/env bash
# The whole test suite: set up, type-check, run the tests (both ESP back ends, strongSwan interop in
# network namespaces, which needs root), the C core under sanitizers, and short bounded fuzz runs.
# FUZZ_SECONDS bounds each fuzz run (default 30). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
PY=.venv/bin/python
export FUZZ_SECONDS=${FUZZ_SECONDS:-30}

# One bounded atheris run from a scratch corpus; its full log is shown only if it finds something.
run_atheris() {
    local name=$1 harness=$2
    shift 2
    local scratch log
    scratch=$(mktemp -d)
    log="$scratch/fuzz.log"
    echo "== fuzz: $name (atheris, ${FUZZ_SECONDS}s)"
    if ! $PY "$harness" -max_total_time="$FUZZ_SECONDS" -timeout=5 "$@" "$scratch" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $name FAILED" >&2
        exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$log" || tail -n 2 "$log"
    rm -rf "$scratch"
}

echo "== mypy --strict"
$PY -m mypy

echo "== pytest"
pytest_log=$(mktemp)
$PY -m pytest -q "$@" | tee "$pytest_log"
passed=$(grep -Eo '^[0-9]+ passed' "$pytest_log" | tail -n 1 | cut -d' ' -f1 || true)
rm -f "$pytest_log"

echo "== pytest under python -O (validation never relies on assert)"
$PY -O -m pytest -q -p no:cacheprovider -W ignore::pytest.PytestConfigWarning tests/wire tests/crypto tests/pki tests/esp tests/gateway tests/test_identities.py tests/test_proposals.py

echo "== C data plane: unit tests under ASan+UBSan, libFuzzer over decap, inner packets, forwarder, offload (${FUZZ_SECONDS}s each)"
scripts/test-esp-core.sh

echo "== fuzz: wire codec (atheris, ${FUZZ_SECONDS}s, seeded with fuzz/corpus_wire)"
fuzz/run_wire_fuzz.sh >/tmp/ikev2lib-fuzz-wire.log 2>&1 || { tail -n 60 /tmp/ikev2lib-fuzz-wire.log >&2; exit 1; }
grep -E '^Done [0-9]+ runs' /tmp/ikev2lib-fuzz-wire.log

run_atheris "IKE crypto" fuzz/fuzz_crypto.py -rss_limit_mb=1024
run_atheris "IKE engine receive path" fuzz/fuzz_engine.py -rss_limit_mb=2048
run_atheris "IKE engine past the ICV" fuzz/fuzz_engine_authenticated.py -rss_limit_mb=2048
run_atheris "Child SA lifetimes" fuzz/fuzz_lifetimes.py -rss_limit_mb=2048
run_atheris "swanctl.conf syntax" fuzz/fuzz_swanctl_syntax.py -rss_limit_mb=1024
run_atheris "TOML configuration" fuzz/fuzz_toml_config.py -rss_limit_mb=1024

echo "== all stages passed (mypy, pytest, python -O, sanitizers, fuzzers)"
echo "suite: ${passed:-0} passed, 0 failed"
