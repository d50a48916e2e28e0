#!/usr/bin/env bash
# Kernel benchmarks on the GPU machine (H100): about 2-3 minutes in all.
#   bash benchmarks/kernels/run_all.sh [OUT_DIR]          (default benchmarks/results/kernels)
# Writes sds.{json,csv,png} and densify.{json,csv,png} into OUT_DIR. gsplat columns need gsplat installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-benchmarks/results/kernels}"
PY="${PYTHON:-python}"
unset TRITON_INTERPRET
"$PY" benchmarks/kernels/bench_sds.py --out "$OUT"
"$PY" benchmarks/kernels/bench_densify.py --out "$OUT"
