#!/usr/bin/env bash
# Create .venv and install inputiba with the given extras (default: none). Idempotent.
#   bash scripts/setup.sh            # the library and CLI
#   bash scripts/setup.sh dev        # + test tools, the docs tools and every optional extra
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# PyTorch first, pinned to the build this platform serves (a CUDA build on x86-64 Linux);
# pyproject.toml declares only ranges so users elsewhere keep their own build.
python -c "import torch, torchvision" 2>/dev/null || \
    python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "is ignored" || true
python -c "import torch, torchvision"
if [ -n "$extras" ]; then
    if [ "$extras" = dev ]; then spec=".[dev,docs,text,baselines]"; else spec=".[$extras]"; fi
else
    spec="."
fi
python -m pip install -q -e "$spec" 2>&1 | grep -v "is ignored" || true
# Headless chromium for the HTML gallery test (tests/test_cli.py). Installed only when it is
# missing, for the dev setup, and only as root with apt (CI machines); elsewhere the test skips.
if [ "$extras" = dev ] && ! command -v chromium >/dev/null 2>&1 \
        && ! command -v chromium-browser >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
        >/dev/null 2>&1 || echo "setup.sh: could not install chromium with apt-get" >&2
fi
python -c "import inputiba"
