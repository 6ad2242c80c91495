#!/usr/bin/env bash
# The C parts of the data plane on their own, under AddressSanitizer + UndefinedBehaviorSanitizer: the
# unit tests of the ESP core (esp_core.c), the gateway forwarder (esp_fwd.c, esp_inner.c: driven
# through socketpairs and loopback UDP), the TUN offload helpers (esp_offload.c) and the Ethernet frames of
# the AF_XDP path (esp_frame.c), then a bounded libFuzzer run (FUZZ_SECONDS each, default 30) over decap,
# inner packets, the forwarder's worker loop, offload split/coalesce and frame parse/build. Needs clang
# and libssl-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="-g -O1 -Wall -Wextra -Werror -I_esp_fast $(pkg-config --cflags libcrypto)"
LIBS="$(pkg-config --libs libcrypto) -lpthread"
CORE="_esp_fast/esp_core.c"
FORWARDER="_esp_fast/esp_fwd.c _esp_fast/esp_inner.c _esp_fast/esp_offload.c _esp_fast/esp_frame.c $CORE"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
mkdir -p fuzz/artifacts

unit() {  # unit NAME SOURCES...
    local name=$1
    shift
    echo "== $name: unit tests (ASan + UBSan)"
    # shellcheck disable=SC2086
    $CC $CFLAGS $SAN "$@" $LIBS -o "$build/$name"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$build/$name"
}

fuzz() {  # fuzz NAME SEED_DIR MAX_LEN SOURCES...: new inputs go to a scratch copy of the seeds
    local name=$1 seeds=$2 max_len=$3
    shift 3
    echo "== $name: libFuzzer (${FUZZ_SECONDS}s)"
    # shellcheck disable=SC2086
    $CC $CFLAGS -fsanitize=fuzzer $SAN "$@" $LIBS -o "$build/$name"
    mkdir -p "$build/corpus-$name"
    if [ -n "$seeds" ]; then cp "$seeds"/* "$build/corpus-$name/"; fi
    "$build/$name" -max_total_time="$FUZZ_SECONDS" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$name-" -print_final_stats=1 "$build/corpus-$name" 2>"$build/$name.log" || {
        tail -40 "$build/$name.log" >&2
        echo "$name: the fuzzer found a crash (input saved under fuzz/artifacts/$name-*)" >&2
        exit 1
    }
    grep -E "stat::number_of_executed_units|Done" "$build/$name.log" | tr '\n' ' '
    echo
}

# shellcheck disable=SC2086
{
    unit test_esp_core _esp_fast/test_esp_core.c $CORE
    unit test_esp_fwd _esp_fast/test_esp_fwd.c $FORWARDER
    unit test_esp_offload _esp_fast/test_esp_offload.c _esp_fast/esp_offload.c
    unit test_esp_frame _esp_fast/test_esp_frame.c _esp_fast/esp_frame.c $CORE
    fuzz fuzz_decap fuzz/esp/corpus 4096 fuzz/esp/fuzz_decap.c $CORE
    fuzz fuzz_inner fuzz/esp/corpus_inner 4096 fuzz/esp/fuzz_inner.c _esp_fast/esp_inner.c
    fuzz fuzz_fwd "" 4096 fuzz/esp/fuzz_fwd.c $FORWARDER
    # seeds: `test_esp_offload --write-corpus fuzz/esp/corpus_offload`; 8 KiB: several MSS-sized segments
    fuzz fuzz_offload fuzz/esp/corpus_offload 8192 fuzz/esp/fuzz_offload.c _esp_fast/esp_offload.c
    # seeds: frames of every kind and build parameters, written by the unit test into the scratch directory
    "$build/test_esp_frame" --write-corpus "$build/seeds-frame"
    fuzz fuzz_frame "$build/seeds-frame" 4096 fuzz/esp/fuzz_frame.c _esp_fast/esp_frame.c $CORE
}
echo "esp core: OK"
