#!/usr/bin/env bash
# Regenerates the two lock files from pyproject.toml with uv (installed by the dev extra):
#   requirements-dev.lock  [project.dependencies] + the dev extra: what make venv, tests and CI install
#   requirements.lock      [project.dependencies] only: what the Docker image installs
# Both pin every package, direct or not, with the sha256 of each of its published files, for
# CPython 3.11 on any platform (--universal writes platform markers), so that
# `pip install --require-hashes -r <lock>` installs the same set everywhere.
# The runtime lock is resolved under the dev lock's pins: the image ships the versions the tests ran.
#
# Usage: scripts/lock.sh          newest releases pyproject.toml allows (security releases included)
#        KEEP=1 scripts/lock.sh   keep the current pins where pyproject.toml still allows them
#                                 (smallest change after adding or editing a dependency)
# Needs the network (the package index); run it through `make lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
UV="$VENV/bin/uv"
if [ ! -x "$UV" ]; then
    echo "lock: $UV missing (make venv installs it with the dev extra)" >&2
    exit 1
fi

upgrade=(--upgrade)
if [ "${KEEP:-0}" = "1" ]; then
    upgrade=()
fi
common=(
    --quiet
    --universal
    --python-version 3.11
    --generate-hashes
    --custom-compile-command "make lock"
)

"$UV" pip compile pyproject.toml --extra dev "${common[@]}" "${upgrade[@]}" \
    --output-file requirements-dev.lock

# Constraints for the runtime resolution: each "name==version [; markers]" line of the dev lock.
pins="$(mktemp)"
trap 'rm -f "$pins"' EXIT
sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*==[^\\]*[^\\ ]\).*$/\1/p' requirements-dev.lock >"$pins"

"$UV" pip compile pyproject.toml "${common[@]}" "${upgrade[@]}" --constraint "$pins" \
    --output-file requirements.lock

# The constraint file is a temporary path: keep it out of the lock's "via" comments.
sed -i "\|^    #   -c $pins\$|d" requirements.lock

echo "lock: requirements-dev.lock $(grep -c '^[A-Za-z0-9]' requirements-dev.lock) packages," \
    "requirements.lock $(grep -c '^[A-Za-z0-9]' requirements.lock) packages"
