#!/usr/bin/env bash
# Rebuild the app's second bundled model (models/bccd/): blood cells (RBC, WBC, Platelets) from real microscope
# images, trained from scratch with detdemo's own pipeline:
#   detdemo train (BCCD train split) -> detdemo export (ONNX, pt2, ONNX INT8) -> check-export on the val
#   split (per-detection parity and AP of every file) -> copy, with a few val images as the model's examples
#   -> detdemo eval on the val split (evaluation.json and the evaluation pictures, evaluation/, whose gallery
#   shows val images: MIT licence, examples/LICENSE).
#
#   bash scripts/build_bccd_model.sh        # about 40 minutes on 2 CPU cores
#
# A small feature pyramid over MobileNetV2's stride-8 and stride-16 stages is what finds the 20-pixel platelets;
# width 0.75 and a 96-wide box head keep all files together under 10 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data/BCCD}
WORK=${WORK:-build/bccd_model}
TIME_LIMIT_MIN=${TIME_LIMIT_MIN:-50}
EPOCHS=${EPOCHS:-20}

rm -rf "$WORK"
"$PY" -m detdemo train --data "$DATA" --model fasterrcnn_light --out "$WORK/run" \
    --model-arg fpn_channels=48 --model-arg width_mult=0.75 --model-arg representation_size=96 \
    --min-size 480 --max-size 640 --epochs "$EPOCHS" --batch-size 4 --optimizer adamw --lr 0.003 \
    --weight-decay 0.0001 --schedule cosine --warmup-iters 100 --clip-grad 10 --workers 1 --seed 0 \
    --eval-every 5 --time-limit-min "$TIME_LIMIT_MIN" --quiet
"$PY" -m detdemo export --checkpoint "$WORK/run/best.pt" --format onnx pt2 onnx-int8 --out "$WORK/export" \
    --calibration "$DATA" --check --data "$DATA"
mkdir -p models/bccd/examples
rm -rf models/bccd/*.* models/bccd/examples/*.jpg models/bccd/evaluation
cp "$WORK"/export/{model.pt,model.onnx,model.pt2,model.int8.onnx,export.json,parity.json,parity.md,accuracy.json,accuracy.md} \
   models/bccd/
cp "$WORK/run/curves.png" models/bccd/training_curves.png
for name in BloodImage_00000 BloodImage_00014 BloodImage_00148; do  # val images, MIT licence (examples/LICENSE-BCCD)
    cp "$DATA/BCCD/JPEGImages/$name.jpg" models/bccd/examples/
done
"$PY" -m detdemo eval --model models/bccd --data "$DATA" --out models/bccd/evaluation.json
echo "bundled BCCD model updated: $(du -ch models/bccd/*.* | tail -1)"
