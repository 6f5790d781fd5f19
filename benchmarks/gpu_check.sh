#!/usr/bin/env bash
# The GPU path's first run: one prepared script, under 8 minutes, one JSON (issues 13, 17).
#
#   benchmarks/gpu_check.sh [--out gpu-check.json] [--work DIR]   on a machine with NVIDIA GPUs
#   benchmarks/gpu_check.sh --dry-run [--out FILE]                the same parts on CPUs, tiny
#
# Needs the trainer's Python environment (make install, or torch + `pip install -e .[trainer]`);
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3). What each
# part does and what the JSON holds: benchmarks/gpu_check.py. Exit 0 when every part ran clean,
# 1 when a part failed (its error is in the JSON), 124 if the 8-minute limit struck.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# The driver budgets its parts to 450 s; this is the hard stop (SIGTERM stops the gangs it started).
exec timeout --signal=TERM --kill-after=15 470 "$PYTHON" benchmarks/gpu_check.py "$@"
