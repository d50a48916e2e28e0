#!/usr/bin/env bash
# Device calls of the losses issue: benchmarks/suite/quality.py with the loss methods on one H200/H100 (many worker
# processes: the bundled prior's runs are small, 64 px and 4 views, so one GPU serves a dozen at once), then
# benchmarks/suite/losses.py makes the table, the picture and the montage from what comes back.
#
#   bash benchmarks/device/losses_call.sh timing table     # solo seconds of each loss, then the table
#   bash benchmarks/device/losses_call.sh tests explore     # GPU tests; a sweep on the 16 tuning prompts
#   TABLE_METHODS="vsd pn03 pn05" bash benchmarks/device/losses_call.sh table   # rows still missing (see results/losses/README.md)
#
# Phases, each under its own time limit (seconds, from the environment), writing into $OUT as they go:
#   timing   solo runs of each method on one prompt (one process, after a warm-up): the seconds column     TIMING_S=100
#   table    bundled prior: 20 prompts x seeds (TABLE_SEEDS, default 0 1 2) x TABLE_METHODS, seed by seed, so a
#            time limit loses the last seed, not a method; world prior: 10 objects x the same            TABLE_S=400
#   explore  the 16 tuning prompts x 2 seeds x EXPLORE_METHODS (bundled)                                EXPLORE_S=300
#   tests    pytest -m gpu tests/gpu/test_losses_gpu.py                                                    TESTS_S=120
# Carry .whlxz (or .whl) and, after the first call, .gsplat_xz (the gsplat build comes back as gsplat_cuda.so.xz).
# PROCS sets the worker processes of the table and the sweep (default 13: 10 bundled + 3 world). EVALS sets the
# evaluations per run (default 10: the curves; 1 scores the last step only and leaves more of the GPU to the runs).
# SKIP_DONE names quality.jsonl files whose finished runs the table leaves out (a table carried over several calls).
set -o pipefail
: "${OUT:?OUT must name the output folder}"
PROCS=${PROCS:-13}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
T0=$(date +%s)
source benchmarks/device/setup.sh >> "$LOG" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$LOG" 2>&1
echo "[losses_call] setup done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s, at $(( $(date +%s) - T0 )) s)" | tee -a "$LOG"; timeout -s TERM "$limit" "$@" >> "$LOG" 2>&1; echo "   exit $? at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"; }
Q="python3 benchmarks/suite/quality.py --evals ${EVALS:-10}"
SKIP=()
if [ -n "${SKIP_DONE:-}" ]; then SKIP=(--skip-done $SKIP_DONE); fi
PREV=/tmp/previews
mkdir -p $PREV
VARIANTS=(--variant pn2 guidance.perp_neg=true guidance.perp_neg_weight=2
          --variant ism-k1 guidance.loss=ism guidance.ism_inversion_steps=1
          --variant ism-lucid guidance.loss=ism schedule.timestep=step schedule.step_t_max_end=0.5 schedule.step_at=0.3
          --variant vsd-renders guidance.loss=vsd guidance.vsd_estimator=renders
          --variant pn03 guidance.perp_neg=true guidance.perp_neg_weight=0.3
          --variant pn05 guidance.perp_neg=true guidance.perp_neg_weight=0.5
          # equal wall-clock: the heavier losses get the seconds of SDS's 300 steps (GPU solo ratios of the H100
          # timing: Perp-Neg 1.21x, ISM 2.75x; VSD's LoRA from the CPU's 3.16x until it is timed on the GPU)
          --variant pn-eq guidance.perp_neg=true run.steps=250
          --variant ism-eq guidance.loss=ism run.steps=110
          --variant vsd-eq guidance.loss=vsd run.steps=95
          # fewer prior rows per generation (the performance issue's CPU target): fewer steps, two views a step
          --variant s150 run.steps=150
          --variant s200 run.steps=200
          --variant s240 run.steps=240
          --variant v2 camera.batch_size=2)
TABLE_METHODS=${TABLE_METHODS:-sds csd nfsd ism vsd sds+perpneg}
WORLD_METHODS=${WORLD_METHODS:-$TABLE_METHODS}   # "none": the bundled prior's table only

for phase in "$@"; do
  case $phase in
    timing)
      step "${TIMING_S:-100}" $Q --out "$OUT/timing.jsonl" --timing-only --priors bundled --prompt-set 20 --seeds 0 \
          --timing-prompts 1 "${VARIANTS[@]}" --methods ${TIMING_METHODS:-$TABLE_METHODS} ;;
    table)
      step "${TABLE_S:-400}" $Q --out "$OUT/table_bundled.jsonl" --priors bundled --prompt-set 20 \
          --seeds ${TABLE_SEEDS:-0 1 2} --procs-per-gpu $((PROCS - 3)) --previews $PREV "${VARIANTS[@]}" \
          "${SKIP[@]}" --methods $TABLE_METHODS &
      if [ "$WORLD_METHODS" != none ]; then step "${TABLE_S:-400}" $Q --out "$OUT/table_world.jsonl" --priors world --prompt-set 10 \
          --seeds ${TABLE_SEEDS:-0 1 2} --procs-per-gpu 3 --previews $PREV "${VARIANTS[@]}" "${SKIP[@]}" \
          --methods $WORLD_METHODS & fi
      wait ;;
    explore)
      step "${EXPLORE_S:-300}" $Q --out "$OUT/explore_bundled.jsonl" --priors bundled --prompt-set other16 --seeds 0 1 \
          --procs-per-gpu "$PROCS" --previews $PREV "${VARIANTS[@]}" \
          --methods ${EXPLORE_METHODS:-sds sds+perpneg pn2 csd ism ism-lucid ism+perpneg vsd} ;;
    tests)
      step "${TESTS_S:-120}" python3 -m pytest -q -m gpu tests/gpu/test_losses_gpu.py -p no:cacheprovider ;;
    *) echo "unknown phase $phase" | tee -a "$LOG" ;;
  esac
done
tar -czf "$OUT/previews.tgz" -C /tmp previews
echo "[losses_call] done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
