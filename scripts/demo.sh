#!/usr/bin/env bash
# The main job, with no hardware: installs what is missing, then runs an
# original-route refund end to end against the bundled acquirer emulator,
# a virtual EMV card (through pcscd + vpcd when available) and a virtual PIN pad.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m terminal.demo "$@"
