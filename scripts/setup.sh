#!/usr/bin/env bash
# Create .venv and install fedenergy with its test tools.
# torch is installed first, pinned by TORCH_SPEC (default: torch==2.13.0). On a machine without
# CUDA that resolves to a CPU build; to choose another build (CUDA, ROCm, a newer release), set
# TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126".
# fedenergy itself accepts any torch>=2.3, so pip keeps whatever build this step installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# shellcheck disable=SC2086
quiet() { grep -v "^WARNING: Location" || true; }  # keeps pip's exit status (pipefail)
.venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.13.0} 2>&1 | quiet
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | quiet
.venv/bin/python -c "import torch, flwr, fedenergy; print('fedenergy', fedenergy.__version__, \
'| flwr', flwr.__version__, '| torch', torch.__version__)"
