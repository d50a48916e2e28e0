#!/usr/bin/env bash
# The whole benchmark suite in one command: speed track, quality track, report.
#
#   bash benchmarks/suite/run_suite.sh benchmarks/results/suite            # GPU machine (see below)
#   bash benchmarks/suite/run_suite.sh /tmp/suite --small                  # CPU smoke size (minutes)
#
# Writes into the folder: speed.json, quality.jsonl, then the report's summary.md, CSVs and PNGs.
# On the lent GPU machines start with `source benchmarks/device/setup.sh`. The published results were made
# in three calls, because one call may last at most 10 minutes:
#   H100:     python3 benchmarks/suite/speed.py --out DIR/speed.json
#   4x H200:  python3 benchmarks/suite/quality.py --out DIR/quality.jsonl $QUALITY_ARGS --procs-per-gpu 5 --solo-gpu
#   H100:     python3 benchmarks/suite/quality.py --timing-only --replace-timing DIR/quality.jsonl --out DIR/quality.jsonl $QUALITY_ARGS
# and `python benchmarks/suite/report.py DIR` anywhere. QUALITY_ARGS below are the published settings.
set -euo pipefail
OUT=${1:?usage: run_suite.sh OUT_DIR [--small]}
SMALL=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
QUALITY_ARGS=(--priors world bundled --bundled-20 --bundled-methods gaussians-tpsds gaussians-uniform nerf-sds
              --seeds 0 1 2 --nerf-steps 1500 --gaussian-steps 300 --evals 10 --timing-prompts 2)
mkdir -p "$OUT"
if [ "$SMALL" = "--small" ]; then
  "$PY" "$HERE/speed.py" --small --out "$OUT/speed.json"
  "$PY" "$HERE/quality.py" --small --out "$OUT/quality.jsonl" --priors world --prompts "a red mug" --seeds 0 --workers 1
else
  "$PY" "$HERE/speed.py" --out "$OUT/speed.json"
  # One GPU: every run alone on it (real seconds). Several: add --procs-per-gpu K --solo-gpu.
  "$PY" "$HERE/quality.py" --out "$OUT/quality.jsonl" "${QUALITY_ARGS[@]}" ${QUALITY_EXTRA:-}
fi
"$PY" "$HERE/report.py" "$OUT"
echo "summary: $OUT/summary.md"
