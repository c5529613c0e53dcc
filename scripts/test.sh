#!/usr/bin/env bash
# The one command that installs what is missing and runs every check:
# ruff, mypy --strict and the pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" && ruff check .
echo "== mypy --strict" && mypy
echo "== import-linter" && lint-imports
echo "== pytest" && python -m pytest "$@"
