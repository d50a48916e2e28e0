#!/usr/bin/env bash
# One device call of the quality track on the bundled prior, with an optional MVDream-shaped step timing after it.
#
#   QUALITY_S=420 bash benchmarks/device/quality_call.sh --seeds 0 1 2 --variant gs4 guidance.guidance_scale=4 \
#       --methods sds gs4
#
# Everything after the script's name goes to benchmarks/suite/quality.py (after --evals 1 --priors bundled
# --prompt-set 20 --procs-per-gpu ${PROCS:-12} --previews /tmp/previews). MVSTEP=1 also times
# benchmarks/perf/mvdream_step.py when at least MVSTEP_S (default 90) seconds of LIMIT_S (default 570) are left.
#
# Carry .whlxz (wheels without gsplat's CUDA sources) and .gsplat_xz (a gsplat build of an earlier call); a first
# call of a session that has no build carries .whlxz_full instead (the same wheels with gsplat's sources), and this
# script then builds gsplat (about 70 s) and returns the build, xz-compressed, as $OUT/gsplat_cuda.so.xz for the
# next call's .gsplat_xz/.
#
# Writes into $OUT: log.txt (everything printed, with the time of each step), quality.jsonl, previews.tgz,
# gsplat_cuda.so.xz (first call only) and mvdream_step.json (MVSTEP=1).
set -o pipefail
: "${OUT:?OUT must name the output folder}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
T0=$(date +%s)
LIMIT_S=${LIMIT_S:-570}
source benchmarks/device/setup.sh >> "$LOG" 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$LOG"
echo "[quality_call] setup done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
mkdir -p /tmp/previews
reserve=15; if [ -n "${MVSTEP:-}" ]; then reserve=$(( reserve + ${MVSTEP_S:-90} )); fi
left=$(( LIMIT_S - ($(date +%s) - T0) - reserve ))
echo "== quality.py $* (limit ${left}s)" | tee -a "$LOG"
timeout -s TERM "$left" python3 benchmarks/suite/quality.py --evals 1 --priors bundled --prompt-set 20 \
  --procs-per-gpu "${PROCS:-12}" --previews /tmp/previews --out "$OUT/quality.jsonl" "$@" >> "$LOG" 2>&1
echo "   exit $? at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
tar -czf "$OUT/previews.tgz" -C /tmp previews
grep -c '"error"' "$OUT/quality.jsonl" | sed 's/^/failed runs: /' | tee -a "$LOG"
if [ -n "${MVSTEP:-}" ]; then
  left=$(( LIMIT_S - ($(date +%s) - T0) - 5 ))
  if [ "$left" -ge "${MVSTEP_S:-90}" ]; then
    echo "== mvdream_step.py (limit ${left}s)" | tee -a "$LOG"
    timeout -s TERM "$left" python3 benchmarks/perf/mvdream_step.py --out "$OUT/mvdream_step.json" >> "$LOG" 2>&1
    echo "   exit $? at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
  else
    echo "== mvdream_step.py skipped: ${left}s left" | tee -a "$LOG"
  fi
fi
echo "[quality_call] done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
