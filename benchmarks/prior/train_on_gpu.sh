#!/usr/bin/env bash
# Train splatgen's bundled prior on the GPU machine within one device call, evaluate it and pack it.
#
#   bash benchmarks/prior/train_on_gpu.sh                         # from scratch (seed $SEED)
#   bash benchmarks/prior/train_on_gpu.sh splatgen/assets/prior   # continue the UNet of an exported prior
#
# Needs, in .whl/ (carry it): the project's wheels (diffusers, omegaconf, antlr4-python3-runtime, plyfile,
# gsplat) and the CLIPs' (open_clip_torch, ftfy, wcwidth). torch, torchvision, regex, safetensors,
# huggingface_hub and tqdm are already on the machine.
#
# Time: the whole script stays within MINUTES (default 9.3) of wall time: pip install, the text-encoder
# CLIP (CLIP_MINUTES, 1.5), the evaluator CLIP (EVALUATOR_MINUTES, 1.0), the UNet (what is left), export,
# evaluation (EVAL_RESERVE_S seconds are kept for it and the packing). A continued run skips both CLIPs
# and gives the UNet everything but the evaluation.
#
# Writes to $OUT (at most 8 files, each under 16 MiB, as the device tool returns them):
#   train_log.txt                 everything printed
#   prior_eval.json               R-precision numbers (benchmarks/prior/evaluate_prior.py)
#   samples_seen.png, samples_held_out.png
#   prior.tgz.part00, 01, ...     the exported prior and the phases' log.jsonl, tar.gz split in 15 MiB parts
# Unpack here:  cat prior.tgz.part* | tar -xz -C /tmp/x   ->  /tmp/x/prior (the folder), /tmp/x/logs/
#
# CPU smoke test of this script (seconds, test-size models):
#   PATH=$PWD/.venv/bin:$PATH OUT=/tmp/out SKIP_PIP=1 MINUTES=1 CLIP_MINUTES=0.1 EVALUATOR_MINUTES=0.1 \
#     EVAL_RESERVE_S=20 TRAIN_ARGS="--tiny --workers 1" EVAL_ARGS="--steps 4 --pairs 10 --per-caption 1" \
#     bash benchmarks/prior/train_on_gpu.sh
set -uo pipefail
T0=$(date +%s)
: "${OUT:?OUT must name the output folder (the device tool sets it)}"
MINUTES=${MINUTES:-9.3}
CLIP_MINUTES=${CLIP_MINUTES:-1.5}
EVALUATOR_MINUTES=${EVALUATOR_MINUTES:-1.0}
EVAL_RESERVE_S=${EVAL_RESERVE_S:-75}
SEED=${SEED:-0}
EVAL_CFG=${EVAL_CFG:-"3 5 7.5"}
RUN=${RUN:-/tmp/prior_run}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/train_log.txt") 2>&1

if [ -z "${SKIP_PIP:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
python3 -c "import os, torch, diffusers, open_clip; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'open_clip', open_clip.__version__, 'cpus', os.cpu_count(), 'shm', os.statvfs('/dev/shm').f_blocks * os.statvfs('/dev/shm').f_frsize >> 20, 'MiB')" || exit 1

rm -rf "$RUN"
if [ -n "${1:-}" ]; then
  python3 -m prior_training.train import --out "$RUN" --from "$1" || exit 1
fi
DEADLINE=$(python3 -c "print($T0 + $MINUTES * 60 - $EVAL_RESERVE_S)")
echo "[train_on_gpu] setup took $(( $(date +%s) - T0 )) s; training until $(date -d @"${DEADLINE%.*}" +%T)"
python3 -m prior_training.train all --out "$RUN" --to "$RUN/prior" --minutes "$MINUTES" --deadline "$DEADLINE" \
  --clip-minutes "$CLIP_MINUTES" --evaluator-minutes "$EVALUATOR_MINUTES" --reserve-minutes 0.25 \
  --seed "$SEED" --log-every 200 --checkpoint-minutes 100 ${TRAIN_ARGS:-} || exit 1

echo "[train_on_gpu] evaluating at $(( $(date +%s) - T0 )) s"
# shellcheck disable=SC2086  # (word splitting of EVAL_CFG and EVAL_ARGS is meant)
python3 benchmarks/prior/evaluate_prior.py "$RUN/prior" --out "$OUT" --cfg $EVAL_CFG --update-card ${EVAL_ARGS:-}

mkdir -p "$RUN/logs"
for phase in clip evaluator unet; do cp "$RUN/$phase/log.jsonl" "$RUN/logs/$phase.jsonl"; done
tar -C "$RUN" -czf - prior logs | split -b 15M -d -a 2 - "$OUT/prior.tgz.part"
du -sh "$RUN/prior"/* | sed 's/^/[train_on_gpu] /'
ls -la "$OUT"
echo "[train_on_gpu] done in $(( $(date +%s) - T0 )) s"
