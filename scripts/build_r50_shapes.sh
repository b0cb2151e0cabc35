#!/usr/bin/env bash
# A *trained* Mask R-CNN R50-FPN for verifying the R50 rows of bench/export_latency.py: reduced-precision files can
# only be judged by AP on a model whose scores are decisive (random weights give near-tied scores, and every
# reduced-precision detection list then diverges). No COCO weights can be downloaded here, so it is trained from
# scratch on generated shapes at a small size, which is enough for a held-out bbox AP well above 0.3.
#
#   bash scripts/build_r50_shapes.sh                  # DEVICE=auto: a GPU when there is one (minutes), else CPU (hours)
#   # what bench/export_latency.py's --r50-* defaults expect (128-144 px; about 55 min of 2 idle CPU cores, 13-14 min an
#   # epoch; built so on 2026-12-05: held-out bbox AP 0.314, segm AP 0.343 on 200 unseen images):
#   WORK=build/r50_small MIN_SIDE=112 MAX_SIDE=144 MIN_SIZE=128 MAX_SIZE=144 EPOCHS=4 BATCH=4 WORKERS=1 \
#       bash scripts/build_r50_shapes.sh
#
# Interrupted (a time limit, a kill), it goes on from the run's last finished epoch (last.pt) when run again.
#
# Cached, not committed: $WORK/run/best.pt is reused when it exists (delete $WORK to rebuild). The held-out shapes
# ($WORK/heldout, another seed than the training data) are what every R50 file is checked on. Fewer proposals and
# sampled RoIs per training image (600 / 128, torchvision's defaults are 2000 / 512) make a CPU step about 3x
# cheaper; they are training-only settings: inference keeps R50-FPN's standard 1000 proposals.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-build/r50_shapes}
DEVICE=${DEVICE:-auto}
TIME_LIMIT_MIN=${TIME_LIMIT_MIN:-240}
EPOCHS=${EPOCHS:-8}
WORKERS=${WORKERS:-2}
BATCH=${BATCH:-8}
MIN_SIDE=${MIN_SIDE:-160}   # generated images
MAX_SIDE=${MAX_SIDE:-256}
MIN_SIZE=${MIN_SIZE:-192}   # the model transform
MAX_SIZE=${MAX_SIZE:-256}

[ -d "$WORK/heldout" ] || "$PY" -m detdemo data shapes --out "$WORK/heldout" --train 0 --val 200 --seed 7 \
    --min-side "$MIN_SIDE" --max-side "$MAX_SIDE"
if [ -f "$WORK/heldout_eval.json" ]; then  # written last, once training has run its course
    echo "trained R50 cached: $WORK/run/best.pt (delete $WORK to rebuild)"
    exit 0
fi
if [ -f "$WORK/run/last.pt" ]; then  # an interrupted build: go on from its last finished epoch
    "$PY" -m detdemo train --resume "$WORK/run" --epochs "$EPOCHS"
else
rm -rf "$WORK/data" "$WORK/run"
"$PY" -m detdemo data shapes --out "$WORK/data" --train 1500 --val 100 --seed 1 --min-side "$MIN_SIDE" --max-side "$MAX_SIDE"
"$PY" -m detdemo train --data "$WORK/data" --model maskrcnn_resnet50_fpn --weights none --out "$WORK/run" \
    --model-arg rpn_post_nms_top_n_train=600 --model-arg box_batch_size_per_image=128 \
    --min-size "$MIN_SIZE" --max-size "$MAX_SIZE" --epochs "$EPOCHS" --batch-size "$BATCH" --optimizer adamw --lr 0.0003 \
    --weight-decay 0.0001 --schedule cosine --warmup-iters 200 --clip-grad 10 --workers "$WORKERS" --seed 0 \
    --eval-every 2 --device "$DEVICE" --time-limit-min "$TIME_LIMIT_MIN"
fi
"$PY" -m detdemo eval --model "$WORK/run/best.pt" --data "$WORK/heldout" --out "$WORK/heldout_eval.json" \
    --no-pictures
