#!/usr/bin/env bash
# The single-view world prior, the base that the multi-view fine-tune (prior_training.multiview) starts from, written
# into DIR from git: splatgen/assets/prior was that prior until the multi-view prior replaced it after git 8d7c7c7.
#
#   bash benchmarks/prior/single_view_base.sh /tmp/prior_sv
#   python -m prior_training.train import --out RUN --from /tmp/prior_sv
#
# DIR may be splatgen/assets/prior itself (what the device machine's calls do, since the tree plus a second 32 MB UNet
# would not fit what a call carries): the package then holds the single-view prior until
# `git checkout splatgen/assets/prior` puts the multi-view one back.
set -euo pipefail
DIR=$(realpath -m "${1:?usage: single_view_base.sh DIR}")
COMMIT=8d7c7c7
cd "$(git rev-parse --show-toplevel)"
git cat-file -e "$COMMIT^{commit}" 2>/dev/null || { echo "single_view_base.sh: commit $COMMIT is not in this clone (a shallow clone? git fetch --unshallow)" >&2; exit 2; }
mkdir -p "$DIR"
git archive "$COMMIT" splatgen/assets/prior | tar -x --strip-components=3 -C "$DIR"
rm -f "$DIR/multiview.json"
echo "wrote the single-view prior of git $COMMIT into $DIR"
