# One device call for the multi-GPU batch measurement (issue "Measure batch generation on several GPUs"): weak
# scaling of `splatgen batch` under torchrun over the machine's GPUs with the bundled prior and with
# SD-2.1-base-shaped guidance, and a worker killed mid-batch; results land in $OUT as they come.
#   bash benchmarks/device/batch_scaling_call.sh        (on a machine with 2+ GPUs, with .whl carried)
set -o pipefail
mkdir -p "$OUT"
source benchmarks/device/setup.sh > "$OUT/setup.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
N=$(nvidia-smi -L | wc -l)
NPROC="1 2"; [ "$N" -ge 4 ] && NPROC="1 2 4"; [ "$N" -ge 8 ] && NPROC="1 2 4 8"
run() { local limit=$1; shift; echo "== $* (limit ${limit}s)" | tee -a "$OUT/log.txt"; timeout "$limit" "$@" 2>&1 | tail -40 | tee -a "$OUT/log.txt"; }
run 200 python3 benchmarks/perf/batch_scaling.py --out "$OUT/scaling_bundled.json" --nproc $NPROC --prompts-per-proc 6 --kill-test 2
run 330 python3 benchmarks/perf/batch_scaling.py --out "$OUT/scaling_sd21_shaped.json" --nproc $NPROC --prompts-per-proc 2 --guidance sd21-shaped
echo done | tee -a "$OUT/log.txt"
