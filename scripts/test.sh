#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: the README's second command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. .venv/bin/activate
ruff check src tests benchmarks examples
python -m pytest -q "$@"
