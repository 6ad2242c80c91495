#!/usr/bin/env bash
# The C ESP core on its own: its unit tests under AddressSanitizer + UndefinedBehaviorSanitizer, then a
# short bounded libFuzzer run over decap (FUZZ_SECONDS, default 30). Needs clang and libssl-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
OPENSSL_CFLAGS=$(pkg-config --cflags libcrypto)
OPENSSL_LIBS=$(pkg-config --libs libcrypto)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

echo "== esp core: unit tests (ASan + UBSan)"
# shellcheck disable=SC2086
$CC -g -O1 -Wall -Wextra -Werror $SAN -I_esp_fast $OPENSSL_CFLAGS \
    _esp_fast/test_esp_core.c _esp_fast/esp_core.c $OPENSSL_LIBS -lpthread -o "$build/test_esp_core"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$build/test_esp_core"

echo "== esp core: libFuzzer over decap (${FUZZ_SECONDS}s)"
# shellcheck disable=SC2086
$CC -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer $SAN -I_esp_fast $OPENSSL_CFLAGS \
    fuzz/esp/fuzz_decap.c _esp_fast/esp_core.c $OPENSSL_LIBS -lpthread -o "$build/fuzz_decap"
mkdir -p "$build/corpus" fuzz/artifacts
cp fuzz/esp/corpus/* "$build/corpus/"
# New inputs go to a scratch copy: the committed seed corpus stays as it is.
"$build/fuzz_decap" -max_total_time="$FUZZ_SECONDS" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=fuzz/artifacts/ -print_final_stats=1 "$build/corpus" 2>"$build/fuzz.log" || {
    tail -40 "$build/fuzz.log" >&2
    echo "esp core: the fuzzer found a crash (input saved under fuzz/artifacts/)" >&2
    exit 1
}
grep -E "stat::number_of_executed_units|Done" "$build/fuzz.log" | tr '\n' ' '
echo
echo "esp core: OK"
