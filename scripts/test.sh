#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests need
# (redis-server, chromium and promtool from Debian's prometheus package, the package and its
# test extras in .venv), then runs pytest. Extra arguments go to pytest, e.g.
# `./scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# promtool (Debian's prometheus package) checks deploy/prometheus/alerts.yml
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing from Debian: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# constraints.txt pins what the tests ran with, so a fresh machine gets the same versions.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' -c constraints.txt
# the example third-party notifier: the plug-in test loads it through its entry point
.venv/bin/python -m pip install -q --disable-pip-version-check -e examples/notifier-email

exec .venv/bin/python -m pytest "$@"
