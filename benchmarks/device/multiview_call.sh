#!/usr/bin/env bash
# Device call of the multi-view issue: fine-tune the bundled prior into the camera-aware multi-view prior
# (prior_training.multiview), export it, and put it on the quality track beside the single-view prior.
#
#   MV_MINUTES=4 QUALITY_S=150 bash benchmarks/device/multiview_call.sh
#   MV_ARGS="--gated --view-words" MV_NAME=mvg ... bash benchmarks/device/multiview_call.sh   # the gated recipe
#
# MV_ARGS go to the mvunet phase; MV_NAME names the prior's method on the quality track (default mv); METHODS
# lists the methods run (default "$MV_NAME sds"; "$MV_NAME-s250" and "$MV_NAME-s200" are the prior at 250 and 200
# steps), SEEDS the seeds (default 0).
#
# Writes into $OUT: log.txt, mvunet_log.jsonl, the prior's unet weights in parts of 15 MB (unet.part-aa ...; join
# with `cat unet.part-* > diffusion_pytorch_model.safetensors`; what comes back is limited to 16 MB a file),
# multiview.json, the quality rows (quality_mv.jsonl) and previews.tgz; log.txt ends with multiview.json and the card's multiview part.
# SMALL=1 runs every step at smoke size on the CPU (a check of this script, not a measurement).
#
# BASE (default splatgen/assets/prior) must be a single-view prior, and the package's is multi-view now: before the
# call, `bash benchmarks/prior/single_view_base.sh splatgen/assets/prior` on this machine puts the single-view base
# in its place (the tree plus a second UNet would not fit what a call carries; the quality track's sds rows are then
# the single-view prior's), and `git checkout splatgen/assets/prior` after it puts the shipped prior back.
set -o pipefail
: "${OUT:?OUT must name the output folder}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
T0=$(date +%s)
if [ -z "${SMALL:-}" ]; then source benchmarks/device/setup.sh >> "$LOG" 2>&1; fi
RUN=/tmp/mvrun; PRIOR_MV=/tmp/prior_mv; rm -rf $RUN $PRIOR_MV
BASE=${BASE:-splatgen/assets/prior}
if [ -e "$BASE/multiview.json" ]; then
  echo "[multiview_call] $BASE is a multi-view prior; run benchmarks/prior/single_view_base.sh $BASE first (see the top of this script)" | tee -a "$LOG"; exit 2
fi
echo "[multiview_call] setup done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s, at $(( $(date +%s) - T0 )) s)" | tee -a "$LOG"; timeout -s TERM "$limit" "$@" >> "$LOG" 2>&1; local rc=$?; echo "   exit $rc at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"; return $rc; }
MV_NAME=${MV_NAME:-mv}
TRAIN_ARGS=(--minutes "${MV_MINUTES:-4}" --views "${VIEWS:-4}" ${MV_ARGS:-})
if [ -n "${SMALL:-}" ]; then TRAIN_ARGS=(--steps 2 --batch 8 --workers 0 --views "${VIEWS:-4}" ${MV_ARGS:-}); fi
step 60 python3 -m prior_training.train import --out $RUN --from "$BASE" &&
step "$(python3 -c "print(int(${MV_MINUTES:-4} * 60 + 120))")" python3 -m prior_training.train mvunet --out $RUN "${TRAIN_ARGS[@]}" &&
step 60 python3 -m prior_training.train export-mv --out $RUN --from "$BASE" --to $PRIOR_MV || exit 1
cp $RUN/mvunet/log.jsonl "$OUT/mvunet_log.jsonl"
python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['multiview']))" $PRIOR_MV/prior_card.json >> "$LOG"
cp $PRIOR_MV/multiview.json "$OUT/multiview.json"
split -b 15M $PRIOR_MV/unet/diffusion_pytorch_model.safetensors "$OUT/unet.part-"
mkdir -p /tmp/previews
Q=(python3 benchmarks/suite/quality.py --evals 1 --priors bundled --prompt-set 20 --previews /tmp/previews
   --variant "$MV_NAME" guidance.model=$PRIOR_MV
   --variant "$MV_NAME-s250" guidance.model=$PRIOR_MV run.steps=250
   --variant "$MV_NAME-s200" guidance.model=$PRIOR_MV run.steps=200)
if [ -n "${SMALL:-}" ]; then
  step 600 "${Q[@]}" --small --out "$OUT/quality_mv.jsonl" --prompts "a red mug" --seeds 0 --methods "$MV_NAME" -- camera.batch_size=4
else
  step "${QUALITY_S:-150}" "${Q[@]}" --out "$OUT/quality_mv.jsonl" --seeds ${SEEDS:-0} --procs-per-gpu 10 --methods ${METHODS:-$MV_NAME sds}
fi
tar -czf "$OUT/previews.tgz" -C /tmp previews
grep -c '"error"' "$OUT/quality_mv.jsonl" | sed 's/^/failed runs: /' | tee -a "$LOG"
echo "[multiview_call] done at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
