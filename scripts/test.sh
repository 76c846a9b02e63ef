#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: the README's second command.
#   lint, the documentation site (mkdocs build --strict: a warning or a broken reference fails),
#   the packaging test (sdist + wheel installed in a fresh environment, run outside the
#   checkout; scripts/package_test.sh), then pytest with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. .venv/bin/activate
ruff check src tests benchmarks examples
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet
bash scripts/package_test.sh
python -m pytest -q "$@"
# the GPU check, tiny and on the CPU, so that it never rots (seconds; writes to a temporary folder)
check_out="$(mktemp -d)"
bash benchmarks/gpu_check.sh --device cpu --dry-run --out "$check_out" >/dev/null
test -s "$check_out/gpu_check.json" && test -s "$check_out/gpu_check.md"
rm -rf "$check_out"
