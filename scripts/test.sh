#!/usr/bin/env bash
# The one command that installs what is missing and runs every check:
# ruff, mypy --strict and the pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    # the ledger tests start a private cluster (tests/pgcluster.py); without it they skip
    if [[ $(id -u) -eq 0 ]]; then
        echo "== installing Debian's postgresql for the PostgreSQL ledger tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postgresql >/dev/null || echo "== postgresql did not install: those tests skip" >&2
        # Debian may start its own cluster on 127.0.0.1:5432; the tests need none of it
        for version in /etc/postgresql/*; do
            [ -d "$version/main" ] && pg_ctlcluster --force "$(basename "$version")" main stop \
                >/dev/null 2>&1 || true
        done
    else
        echo "== postgresql missing and not root: the PostgreSQL ledger tests will skip" >&2
    fi
fi
if [[ " $* " == *browser* ]] && ! dpkg -s chromium chromium-driver >/dev/null 2>&1; then
    # the browser check drives Debian's chromium; a browser build is never downloaded
    if [[ $(id -u) -eq 0 ]]; then
        echo "== installing Debian's chromium and chromium-driver for the browser check"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver >/dev/null
    else
        echo "== chromium/chromium-driver missing and not root: the browser check will skip" >&2
    fi
fi
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" && ruff check .
echo "== mypy --strict" && mypy
echo "== import-linter" && lint-imports
echo "== pytest" && python -m pytest "$@"
