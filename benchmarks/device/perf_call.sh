# One device call for the performance issue: cold start, batch throughput and the SDS-step levers, each
# under its own time limit so a slow one cannot take the others down; results land in $OUT as they come.
#   bash benchmarks/device/perf_call.sh        (on the GPU machine, with .whl carried)
set -o pipefail
mkdir -p "$OUT"
source benchmarks/device/setup.sh > "$OUT/setup.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
run() { local limit=$1; shift; echo "== $* (limit ${limit}s)" | tee -a "$OUT/log.txt"; timeout "$limit" "$@" 2>&1 | tail -40 | tee -a "$OUT/log.txt"; }
run 90 python3 benchmarks/perf/cold_start.py --out "$OUT/cold_start.json" --cli-runs 1 --no-importtime
run 80 python3 benchmarks/perf/cold_start.py --out "$OUT/cold_start_lean.json" --cli-runs 1 --no-importtime run.cudnn_benchmark=false densify.backend=torch
run 70 python3 benchmarks/perf/batch_throughput.py --out "$OUT/batch_throughput.json" --prompts 6 --cli-runs 1
run 190 python3 benchmarks/perf/step_levers.py --out "$OUT/step_levers.json" --variants fp16 bf16 tiny compile-unet --warmup 10 --steps 20
echo done | tee -a "$OUT/log.txt"
