#!/usr/bin/env bash
# One command for the day a GPU is lent (under 8 minutes on one GPU): the ISP parity tests on CUDA,
# the static bank and the parametrized forward + backward timed at batch 32 x 256 x 256 and at full
# size, and one paper-size synthesis cell (ResNet18, 100 epochs, trainer=gpu); prints one table.
#
#   scripts/gpu_check.sh                   # on a CUDA machine; figures in outputs/gpu_check/
#   scripts/gpu_check.sh --cpu-dry-run     # every step tiny, on CPU (the test suite runs this)
#
# PYTHON selects the interpreter (default: the project's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/gpu_check.py "$@"
