#!/usr/bin/env bash
# The first command: installs what is missing, then starts the cashier app in
# training mode against the bundled acquirer emulator, a virtual EMV card reader
# (through pcscd + vpcd when available, in-process otherwise) and a virtual PIN
# pad, signed on and with a few sales to refund. When standard output is not a
# terminal (CI, a pipe) it runs the scripted walkthrough instead and says so.
# Arguments go to `pos-terminal demo` (--script, --in-process, --training-dir D).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pos-terminal demo "$@"
