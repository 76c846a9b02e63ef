#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): CUDA vs CPU maps, images per second at batch 1 and at
# the largest batch that fits, fp32 vs bf16, peak memory; writes gpu_check.json and gpu_check.md.
# At most 8 minutes (the Python script stops doubling batches within --budget-s, 420 s by default).
#   bash benchmarks/gpu_check.sh                                   # on a CUDA machine
#   bash benchmarks/gpu_check.sh --device cpu --dry-run --out DIR  # tiny, on the CPU (the test command)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
# this checkout's sources, also where the environment's editable install points elsewhere
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=INT --kill-after=20 480 "$PY" benchmarks/gpu_check.py "$@"
