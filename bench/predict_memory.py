"""Benchmark: peak memory of `detdemo predict` on one 6000x4000 photo, above the model's own footprint.

    python -m bench.predict_memory

A phone photo scaled to 6000x4000 (coco128's first val photo, resized). Each model runs in its own process: load
the predictor, read the resident memory (libraries + model), reset the peak, then do exactly what `detdemo
predict` does for one image (decode, predict with its default 0.5 threshold, draw boxes and masks, write the PNG
and the COCO results) and read the peak again. Also at threshold 0.05 (the models' own floor: every detection
kept), the worst case. Target: under 2 GB above the model's footprint. Before masks were pasted lazily, the same
command went past 14 GB (adversarial review).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, RESULTS, SHARED, current_rss_mb, high_water_rss_mb, reset_peak_rss, table, write_json


def worker(model: str, image: str, threshold: float) -> dict:
    import onnxruntime  # noqa: F401  (resident before the baseline)

    from detdemo.data.images import open_image
    from detdemo.engine.draw import draw_detections, image_to_tensor, to_pil
    from detdemo.engine.evaluate import detections_to_coco
    from detdemo.fileio import atomic_path
    from detdemo.fileio import write_json as write
    from export.runtime import load_predictor

    predictor = load_predictor(model, "pytorch", "cpu")
    footprint = current_rss_mb()
    reset_peak_rss()
    pil = open_image(image)
    det = predictor.predict(pil, score_threshold=threshold)
    drawn = to_pil(draw_detections(image_to_tensor(pil), det))
    with tempfile.TemporaryDirectory() as out:
        with atomic_path(Path(out) / "p.png") as tmp:
            drawn.save(tmp, format="PNG")
        write(Path(out) / "predictions.json", detections_to_coco(det, 1, {}))
    peak = high_water_rss_mb()
    return {"detections": len(det), "footprint_mb": footprint, "peak_mb": peak, "above_model_mb": peak - footprint}


def prepare(work: Path) -> tuple[Path, dict[str, Path]]:
    from PIL import Image

    work.mkdir(parents=True, exist_ok=True)
    photo = work / "photo_6000x4000.jpg"
    if not photo.exists():
        first = sorted((SHARED / "coco128" / "val2017").iterdir())[0]
        Image.open(first).convert("RGB").resize((6000, 4000), Image.BILINEAR).save(photo, quality=92)
    r50 = work / "maskrcnn_resnet50_fpn.pt"
    if not r50.exists():
        import torch

        from detdemo import build_model, save_checkpoint

        torch.manual_seed(0)
        model, cfg = build_model("maskrcnn_resnet50_fpn", 91)
        save_checkpoint(r50, model.eval(), cfg)
    return photo, {"maskrcnn_light (bundled)": REPO / "models" / "shapes" / "model.pt",
                   "maskrcnn_resnet50_fpn (random init)": r50}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", default=str(RESULTS / "predict_memory_work"))
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "IMAGE", "THRESHOLD"))
    args = p.parse_args()
    if args.worker:
        model, image, threshold = args.worker
        print(json.dumps(worker(model, image, float(threshold))))
        return
    photo, models = prepare(Path(args.work))
    rows = []
    for name, path in models.items():
        for threshold in (0.5, 0.05):
            proc = subprocess.run([sys.executable, "-m", "bench.predict_memory", "--worker", str(path), str(photo),
                                   str(threshold)], cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"model": name, "threshold": threshold, **{k: round(v) if isinstance(v, float) else v
                                                                   for k, v in res.items()},
                         "target_mb": 2048, "within": res["above_model_mb"] < 2048})
    print(table(rows, ["model", "threshold", "detections", "footprint_mb", "peak_mb", "above_model_mb", "within"]))
    print(f"wrote {write_json('predict_memory', {'image': '6000x4000', 'rows': rows})}")


if __name__ == "__main__":
    main()
