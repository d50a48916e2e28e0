#!/usr/bin/env bash
# One device call for the performance issues: the phases named on the command line, in that order, each under its
# own time limit so a slow one cannot take the others down; results land in $OUT as they come.
#
#   bash benchmarks/device/perf_call.sh mvstep cold speed          (on the GPU machine)
#
# Phases (limits in seconds from the environment; a phase starts only when its limit still fits in CALL_S, the
# whole call's budget, default 580):
#   cold      benchmarks/perf/cold_start.py, today's default (one CLI run)           -> cold_start.json      COLD_S=90
#   eager     the same with guidance.cuda_graph=false (the UNet run eagerly)          -> cold_start_eager.json EAGER_S=90
#   lean      the same with run.cudnn_benchmark=false densify.backend=torch           -> cold_start_lean.json LEAN_S=80
#   gputests  pytest tests/gpu -m gpu (CUDA graphs, every loss, gsplat against ours)  -> gpu_tests.txt        GPUTESTS_S=240
#   mvstep    benchmarks/perf/mvdream_step.py (MVDream-shaped 4-view step, 256 px)    -> mvdream_step.json    MVSTEP_S=90
#   speed     benchmarks/suite/speed.py, the suite's speed track with today's defaults -> speed.json          SPEED_S=300
#   levers    benchmarks/perf/step_levers.py (fp16 bf16 tiny compile-unet)            -> step_levers.json     LEVERS_S=190
#   gn        benchmarks/perf/group_norm.py --profile (fused GroupNorm+SiLU)           -> group_norm.json      GN_S=120
#   cva       benchmarks/perf/cross_view_attention.py (one-pass vs two-pass layer)   -> cross_view_attention.json CVA_S=60
# Carry .whlxz and .gsplat_xz (a gsplat build of an earlier call), or .whlxz_full on a session's first call: the
# build then comes back as $OUT/gsplat_cuda.so.xz for the next call's .gsplat_xz/.
set -o pipefail
: "${OUT:?OUT must name the output folder}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
T0=$(date +%s)
CALL_S=${CALL_S:-580}
source benchmarks/device/setup.sh >> "$LOG" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" >> "$LOG"
echo "[perf_call] setup done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
step() {
  local limit=$1; shift
  local left=$(( CALL_S - ($(date +%s) - T0) ))
  if [ "$left" -lt "$limit" ]; then
    if [ "$left" -lt 30 ]; then echo "== skipped (${left}s left): $*" | tee -a "$LOG"; return; fi
    limit=$left
  fi
  echo "== $* (limit ${limit}s, at $(( $(date +%s) - T0 )) s)" | tee -a "$LOG"
  timeout -s TERM "$limit" "$@" >> "$LOG" 2>&1
  echo "   exit $? at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
}
for phase in "$@"; do
  case $phase in
    cold)   step "${COLD_S:-90}" python3 benchmarks/perf/cold_start.py --out "$OUT/cold_start.json" --cli-runs 1 --no-importtime ;;
    eager)  step "${EAGER_S:-90}" python3 benchmarks/perf/cold_start.py --out "$OUT/cold_start_eager.json" --cli-runs 1 \
                --no-importtime guidance.cuda_graph=false ;;
    gputests) step "${GPUTESTS_S:-240}" bash -c "python3 -m pytest tests/gpu -m gpu -q -p no:cacheprovider -x 2>&1 | tee '$OUT/gpu_tests.txt'" ;;
    lean)   step "${LEAN_S:-80}" python3 benchmarks/perf/cold_start.py --out "$OUT/cold_start_lean.json" --cli-runs 1 \
                --no-importtime run.cudnn_benchmark=false densify.backend=torch ;;
    mvstep) step "${MVSTEP_S:-90}" python3 benchmarks/perf/mvdream_step.py --out "$OUT/mvdream_step.json" ;;
    speed)  step "${SPEED_S:-300}" python3 benchmarks/suite/speed.py --out "$OUT/speed.json" ;;
    levers) step "${LEVERS_S:-190}" python3 benchmarks/perf/step_levers.py --out "$OUT/step_levers.json" \
                --variants fp16 bf16 tiny compile-unet --warmup 10 --steps 20 ;;
    gn)     step "${GN_S:-120}" python3 benchmarks/perf/group_norm.py --out "$OUT/group_norm.json" --profile ;;
    cva)    step "${CVA_S:-60}" python3 benchmarks/perf/cross_view_attention.py --out "$OUT/cross_view_attention.json" ;;
    *) echo "perf_call.sh: unknown phase '$phase' (allowed: cold eager lean gputests mvstep speed levers gn cva)" | tee -a "$LOG" ;;
  esac
done
echo "[perf_call] done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
