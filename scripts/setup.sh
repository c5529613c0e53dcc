#!/usr/bin/env bash
# Installs everything pos-refund needs on a fresh Debian + Python 3.11 machine:
# system packages for the PC/SC stack (when run as root), a virtualenv in .venv
# and the project in editable mode with its dev extras. Safe to run repeatedly;
# it only does work when something is missing or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libpcsclite-dev pcscd vsmartcard-vpcd gcc pkg-config swig)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "setup: installing system packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        # --no-install-recommends: the recommended extras of vsmartcard-vpcd pull
        # in a broken vicc; we only want the vpcd reader driver.
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: missing system packages: ${missing[*]}" >&2
        echo "setup: run as root, or: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
        echo "setup: without them pyscard cannot build and the PC/SC tests will skip." >&2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.pos-refund-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi

# Bytecode for the project's own packages: an editable install compiles nothing, and
# where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) no import writes it either,
# so every start of pos-emulator serve compiled ~11,000 lines again (~190 ms of CPU on the
# 2-core VM). compileall skips files whose bytecode is current; a file edited later is
# compiled in memory at import, as before.
.venv/bin/python -m compileall -q -j 0 drivers emulator iso8583 terminal
