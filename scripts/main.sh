#!/usr/bin/env bash
# The README's main job: set up ./.venv, train a small StyleGAN3-T on the embedded sample-photo dataset on this
# CPU for a few minutes, then write sample images and a SavedModel, and print where everything is.
#
#   bash scripts/main.sh                 # ~2 kimg with --preset=cpu-tiny (32x32)
#   KIMG=5 PRESET=cpu-small bash scripts/main.sh
#
# Environment: KIMG (default 2), PRESET (cpu-tiny), OUTDIR (training-runs), SEED (0), EXTRA (more train.py flags).
# Re-running continues nothing: every run gets a new numbered directory. To continue an interrupted run, run
# `python tools/train.py --outdir=<its run directory>`.
set -euo pipefail
cd "$(dirname "$0")/.."
KIMG=${KIMG:-2}
PRESET=${PRESET:-cpu-tiny}
OUTDIR=${OUTDIR:-training-runs}
SEED=${SEED:-0}
EXTRA=${EXTRA:-}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
PY=.venv/bin/python

echo "== 1/4 environment (scripts/setup_env.sh)"
bash scripts/setup_env.sh

echo "== 2/4 training: --preset=$PRESET --kimg=$KIMG on the embedded default dataset (CPU)"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# shellcheck disable=SC2086
$PY tools/train.py --preset="$PRESET" --outdir="$OUTDIR" --kimg="$KIMG" --tick=0.5 --snap=2 --seed="$SEED" \
    --desc=main $EXTRA 2>&1 | tee "$LOG"
RUN_DIR=$(sed -n 's/^Run directory: //p' "$LOG" | head -n 1)
if [ -z "$RUN_DIR" ] || [ ! -d "$RUN_DIR" ]; then
  echo "main.sh: could not find the run directory in the training output" >&2
  exit 1
fi
SNAP=$(ls "$RUN_DIR"/network-snapshot-*.npz 2>/dev/null | sort | tail -n 1 || true)
if [ -z "$SNAP" ]; then
  echo "main.sh: training wrote no network snapshot in $RUN_DIR" >&2
  exit 1
fi

echo "== 3/4 samples from $SNAP"
SAMPLES="$RUN_DIR/samples"
$PY tools/gen_images.py --network="$SNAP" --seeds=0-15 --outdir="$SAMPLES" --grid=8x2

echo "== 4/4 SavedModel export"
SAVED="$RUN_DIR/savedmodel"
if [ -f tools/export_savedmodel.py ]; then
  $PY tools/export_savedmodel.py --network="$SNAP" --outdir="$SAVED" --overwrite
else
  echo "tools/export_savedmodel.py does not exist yet: SavedModel export skipped"
  SAVED="(skipped)"
fi

LAST_CKPT=$(sed -n 's/^model_checkpoint_path: "\(.*\)"/\1/p' "$RUN_DIR/checkpoints/checkpoint" 2>/dev/null || true)
FAKES=$(ls "$RUN_DIR"/fakes[0-9]*.png 2>/dev/null | sort | tail -n 1 || true)
cat <<EOF

== done. Everything is in $RUN_DIR:
  training log          $RUN_DIR/log.txt
  options               $RUN_DIR/training_options.json
  per-tick statistics   $RUN_DIR/stats.jsonl   (TensorBoard: tensorboard --logdir $RUN_DIR)
  real images           $RUN_DIR/reals.png
  fakes at the start    $RUN_DIR/fakes_init.png
  fakes at the end      $FAKES
  network snapshot      $SNAP
  training checkpoint   $RUN_DIR/checkpoints/$LAST_CKPT   (continue: $PY tools/train.py --outdir=$RUN_DIR --kimg=<more>)
  samples               $SAMPLES/
  SavedModel            $SAVED
EOF
