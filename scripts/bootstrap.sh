#!/usr/bin/env bash
# Set up everything ikev2lib needs on a fresh Debian machine: system packages (when run as root),
# a virtualenv in .venv, and an editable install of ikev2lib with its test extras.
# Safe to run again: it only installs what is missing and rebuilds the C extension.
set -euo pipefail
cd "$(dirname "$0")/.."

# Release-qualified lines ("trixie: pkg") apply only on that release; see scripts/apt-packages.txt.
. /etc/os-release
RELEASE=${VERSION_CODENAME:-unknown}
mapfile -t APT_PACKAGES < <(scripts/apt-packages.sh "$RELEASE")
if ((${#APT_PACKAGES[@]} == 0)); then
    echo "bootstrap: no package list for Debian release '$RELEASE' (supported: bookworm, trixie)" >&2
    exit 1
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: missing Debian packages (run as root to install): ${missing[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
# pip's output goes to a log and is shown only when it fails (the build's warnings are noise otherwise).
log=.venv/bootstrap-pip.log
# The build requirements come from pyproject.toml (their floors are checked by scripts/check-floors.sh).
mapfile -t BUILD_REQUIRES < <(.venv/bin/python -c 'import tomllib
print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")')
if ! { .venv/bin/python -m pip install -q --upgrade pip "${BUILD_REQUIRES[@]}" &&
       .venv/bin/python -m pip install -q --no-build-isolation -e '.[test]'; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2
    echo "bootstrap: pip install failed (full log: $log)" >&2
    exit 1
fi
.venv/bin/python -c "import ikev2lib._esp_fast" && echo "bootstrap: .venv ready, C extension built"
