#!/usr/bin/env bash
# The default fine-tune of two checkouts side by side in one run: the same command, the same data,
# the same machine state, old then new (each with its own converted checkpoint, converted before
# the clock starts). Prints each run's wall time and its validation / test line (for an
# experiment, --num_splits / --kfold: its test mean ± std and total time).
#
#   bench/compare_checkouts.sh OLD_REV [DATASET_DIR] [EXTRA FLAGS...]
#   bench/compare_checkouts.sh a14d57b ../shared/data/clothing-small
set -euo pipefail
old_rev=${1:?usage: compare_checkouts.sh OLD_REV [DATASET_DIR] [FLAGS...]}
dataset=$(realpath "${2:-../shared/data/clothing-small}")
shift $(( $# >= 2 ? 2 : 1 ))
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/compare_checkouts.XXXX)
git -C "$repo" worktree add --detach "$work/old" "$old_rev" >/dev/null
trap 'git -C "$repo" worktree remove --force "$work/old"' EXIT
for side in old new; do
  src=$([ "$side" = old ] && echo "$work/old" || echo "$repo")
  (cd "$src" && RUNWAY_CNN_CHECKPOINTS="$work/ckpt_$side" PYTHONPATH="$src" \
     python -m runway_cnn.checkpoints convert efficientnet_lite0 --output "$work/ckpt_$side" \
     >/dev/null 2>&1)
done
for side in old new; do
  src=$([ "$side" = old ] && echo "$work/old" || echo "$repo")
  start=$(date +%s.%N)
  (cd "$work" && RUNWAY_CNN_CHECKPOINTS="$work/ckpt_$side" PYTHONPATH="$src" \
     python -m runway_cnn.finetune --dataset_dir "$dataset" --train_dir "$work/run_$side" \
     --verbose 0 "$@" 2>/dev/null | { grep -E "^(validation|test):|^  (top1|macro_f1) |total" || true; } \
     | sed "s/^/$side /")
  end=$(date +%s.%N)
  printf '%s wall %.1f s\n' "$side" "$(echo "$end - $start" | bc)"
done
