#!/usr/bin/env bash
# Check that the minimum versions pyproject.toml declares are true: build a separate virtualenv
# (.venv-floors, made anew each run) holding exactly those minimums (every `name>=X` of
# [build-system].requires, [project].dependencies and the `test` extra, installed as `name==X`), build
# the C extension against them, then run what the suite runs with them: mypy --strict, the unit tests
# (tests/wire tests/crypto tests/esp tests/engine tests/test_*.py; not tests/interop, which needs
# root and strongSwan), the same subset under python -O, and a short atheris run of each fuzz harness.
# Packages the declared ones pull in (cffi, pluggy, ...) are whatever pip resolves for them.
#
# The Python is the one running this script (PYTHON, default python3); it must satisfy
# requires-python, and the summary says whether it is the requires-python floor itself.
# Usage: scripts/check-floors.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=$(realpath -m "${FLOORS_VENV:-.venv-floors}")
FUZZ_RUNS=${FUZZ_RUNS:-300}  # inputs per atheris harness: a smoke run, not a fuzzing campaign

# One `name==version` line per declared requirement; a requirement without a `>=` floor is an error
# (an unpinned requirement is a floor nobody checked).
pins=$("$PYTHON" - <<'EOF'
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
declared = {
    "build": project["build-system"]["requires"],
    "runtime": project["project"].get("dependencies", []),
    "test": project["project"].get("optional-dependencies", {}).get("test", []),
}
floor = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(;.*)?$")
bad = []
for group, reqs in declared.items():
    for req in reqs:
        m = floor.match(req)
        if m is None:
            bad.append(f"{group}: {req!r}")
            continue
        name, version, marker = m.groups()
        print(f"{group}\t{name}=={version}{marker or ''}")
if bad:
    sys.exit("check-floors: requirements without a plain `>=` floor: " + ", ".join(bad))
requires = project["project"]["requires-python"]
m = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
if m is None:
    sys.exit(f"check-floors: requires-python {requires!r} is not of the form >=X.Y")
want = (int(m[1]), int(m[2]))
if sys.version_info[:2] < want:
    sys.exit(f"check-floors: {sys.version.split()[0]} does not satisfy requires-python {requires}")
print(f"python\t{requires} {'(the floor itself)' if sys.version_info[:2] == want else '(above the floor)'}")
EOF
)
python_line=$(awk -F'\t' '$1 == "python" {print $2}' <<<"$pins")
mapfile -t build_pins < <(awk -F'\t' '$1 == "build" {print $2}' <<<"$pins")
mapfile -t all_pins < <(awk -F'\t' '$1 != "python" {print $2}' <<<"$pins")

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PY=$VENV/bin/python
# Build and test a copy of the work tree (tracked and new files, not ignored ones), so that neither the
# generated _esp_fast.c nor the built extension is shared with .venv.
src=$VENV/src
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do if [[ -e $f ]]; then printf '%s\0' "$f"; fi; done |
    tar --null -T - -cf - | tar -xf - -C "$src"
constraints=$VENV/floors-constraints.txt
printf '%s\n' "${all_pins[@]}" >"$constraints"
log=$VENV/pip.log
echo "== installing the declared floors into $VENV"
# The build requirements first, then ikev2lib built against exactly them (no build isolation), with
# its runtime and test requirements held to their floors by the constraints file.
if ! { "$PY" -m pip install -q -c "$constraints" "${build_pins[@]}" &&
       "$PY" -m pip install -q --no-build-isolation -c "$constraints" -e "$src[test]"; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2
    echo "check-floors: pip install failed (full log: $log)" >&2
    exit 1
fi
# pip honours constraints, but say so from what is installed, not from what was asked.
"$PY" - "${all_pins[@]}" <<'EOF'
import sys
from importlib.metadata import version

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.version import Version

wrong = []
for pin in sys.argv[1:]:
    req = Requirement(pin)
    if req.marker is not None and not req.marker.evaluate():
        continue  # a floor for another Python
    want = next(iter(req.specifier)).version
    have = version(req.name)
    if Version(have) != Version(want):
        wrong.append(f"{req.name}: {have} installed, {want} declared")
if wrong:
    sys.exit("check-floors: " + "; ".join(wrong))
EOF
cd "$src"
"$PY" -c "import ikev2lib._esp_fast" || { echo "check-floors: the C extension did not build" >&2; exit 1; }

echo "== mypy --strict (mypy at its floor)"
"$PY" -m mypy

UNIT=(tests/wire tests/crypto tests/esp tests/engine tests/test_*.py)
echo "== pytest: unit tests (not tests/interop)"
"$PY" -m pytest -q -p no:cacheprovider "${UNIT[@]}" "$@"
echo "== pytest under python -O"
"$PY" -O -m pytest -q -p no:cacheprovider -W ignore::pytest.PytestConfigWarning tests/wire tests/crypto tests/esp \
    tests/test_proposals.py

for harness in fuzz/fuzz_wire.py fuzz/fuzz_crypto.py fuzz/fuzz_engine.py fuzz/fuzz_lifetimes.py; do
    scratch=$(mktemp -d)
    echo "== atheris: $harness ($FUZZ_RUNS inputs)"
    if ! "$PY" "$harness" -runs="$FUZZ_RUNS" -timeout=5 -rss_limit_mb=2048 "$scratch" >"$scratch.log" 2>&1; then
        tail -n 40 "$scratch.log" >&2
        echo "check-floors: $harness failed" >&2
        exit 1
    fi
    rm -rf "$scratch" "$scratch.log"
done

echo "== floors checked on Python $("$PY" -c 'import platform; print(platform.python_version())'), requires-python $python_line:"
for pin in "${all_pins[@]}"; do
    group=$(awk -F'\t' -v p="$pin" '$2 == p {print $1; exit}' <<<"$pins")
    if "$PY" -c 'import sys; from pip._vendor.packaging.requirements import Requirement as R
m = R(sys.argv[1]).marker; sys.exit(0 if m is None or m.evaluate() else 1)' "$pin"; then
        printf '  %-8s %s\n' "$group" "$pin"
    else
        printf '  %-8s %s  (not checked: not for this Python)\n' "$group" "$pin"
    fi
done
echo "check-floors: every declared minimum passed"
