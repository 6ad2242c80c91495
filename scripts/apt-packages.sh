#!/usr/bin/env bash
# Print the Debian packages of scripts/apt-packages.txt for one release (bookworm, trixie), one per
# line: the unqualified lines plus the lines qualified with that release. Prints nothing (and fails)
# for a release the list does not know, so a new release is a visible decision, not a guess.
set -euo pipefail
cd "$(dirname "$0")"
release=${1:?usage: apt-packages.sh RELEASE}
grep -qE "^${release}:" apt-packages.txt || exit 1
sed -e 's/#.*//' -e 's/[[:space:]]*$//' apt-packages.txt | awk -v rel="$release" '
    NF == 0 { next }
    $1 ~ /:$/ { if ($1 == rel ":") print $2; next }
    { print $1 }'
