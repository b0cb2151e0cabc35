"""Benchmark (issue 4): per-backend CPU latency and peak memory of exported models, with parity checked.

    python -m bench.export_latency --models maskrcnn_resnet50_fpn maskrcnn_light --images 6 --repeats 2

For each model: build it (random init for Mask R-CNN R50-FPN, as in the baseline; the light model is the app's
bundled one, models/shapes), export it, run ``check-export`` on the same photos, then time eager,
TorchScript and ONNX Runtime, each in its own process (so peak memory is per backend), alternating the order
between rounds. Latency covers the whole ``predict`` call (host pre/post-processing included), median and p90
after two warm-up calls, on real photos from ../shared/data/coco128/val2017.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, RESULTS, SHARED, current_rss_mb, high_water_rss_mb, reset_peak_rss, table, write_json

PHOTOS = SHARED / "coco128" / "val2017"


def worker(backend: str, path: str, images: list[str], repeats: int) -> dict:
    import onnxruntime  # noqa: F401  (libraries resident before the baseline, so the peak is the model's)

    from detdemo.data.images import open_image
    from export.runtime import load_predictor

    reset_peak_rss()
    baseline = current_rss_mb()
    pred = load_predictor(path, backend)
    pics = [open_image(p) for p in images]
    for img in pics[:2]:
        pred.predict(img)
    times, counts = [], []
    for _ in range(repeats):
        for img in pics:
            t = time.perf_counter()
            det = pred.predict(img)
            times.append(time.perf_counter() - t)
            counts.append(len(det))
    peak = high_water_rss_mb()
    return {"times": times, "detections": counts, "peak_rss_mb": peak, "model_rss_mb": peak - baseline}


def prepare(arch: str, work: Path) -> Path:
    from detdemo import build_model, save_checkpoint
    from export.exporters import export_checkpoint

    out = work / arch
    if (out / "model.onnx").exists():
        return out
    trained = REPO / "models" / "shapes" / "model.pt"  # the app's bundled model
    if arch == "maskrcnn_light" and trained.exists():
        ckpt = trained
    else:
        import torch

        torch.manual_seed(0)
        model, cfg = build_model(arch, 91)  # random init, COCO-sized heads, torchvision defaults (800 px)
        ckpt = save_checkpoint(work / f"{arch}.pt", model, cfg)
    export_checkpoint(ckpt, ("torchscript", "onnx"), out)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["maskrcnn_resnet50_fpn", "maskrcnn_light"])
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", default=str(RESULTS / "export_latency_work"))
    p.add_argument("--worker", nargs=3, metavar=("BACKEND", "PATH", "IMAGES_JSON"))
    args = p.parse_args()
    if args.worker:
        backend, path, images = args.worker
        print(json.dumps(worker(backend, path, json.loads(images), args.repeats)))
        return
    images = [str(p) for p in sorted(PHOTOS.iterdir())[: args.images]]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, parity = [], {}
    from export.formats import BACKENDS

    files = {b: b for b in BACKENDS}  # each worker loads the export folder with its backend (load_predictor)
    for arch in args.models:
        folder = prepare(arch, work)
        check = subprocess.run([sys.executable, "-m", "detdemo", "check-export", str(folder), "--images", *images],
                               cwd=REPO, capture_output=True, text=True)
        parity[arch] = {"exit_code": check.returncode, "summary": check.stdout.strip().splitlines()[:2]}
        print(f"{arch}: parity exit {check.returncode}\n  " + "\n  ".join(parity[arch]["summary"]), flush=True)
        samples = {b: [] for b in files}
        peaks = {b: 0.0 for b in files}
        extra = {b: 0.0 for b in files}
        dets = {}
        for r in range(args.rounds):
            order = list(files) if r % 2 == 0 else list(files)[::-1]
            for backend in order:
                cmd = [sys.executable, "-m", "bench.export_latency", "--repeats", str(args.repeats), "--worker",
                       backend, str(folder), json.dumps(images)]
                proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-3000:])
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                samples[backend] += res["times"]
                peaks[backend] = max(peaks[backend], res["peak_rss_mb"])
                extra[backend] = max(extra[backend], res["model_rss_mb"])
                dets[backend] = statistics.mean(res["detections"])
        eager = statistics.median(samples["pytorch"])
        for backend in files:
            t = samples[backend]
            rows.append({"model": arch, "backend": backend, "median_s": statistics.median(t),
                         "p90_s": float(np.percentile(t, 90)), "speedup_vs_eager": eager / statistics.median(t),
                         "peak_rss_mb": round(peaks[backend]),
                         "model_rss_mb": round(extra[backend]), "mean_detections": dets[backend], "calls": len(t)})
    print(table(rows, ["model", "backend", "median_s", "p90_s", "speedup_vs_eager", "peak_rss_mb",
                       "model_rss_mb", "mean_detections", "calls"]))
    print(f"wrote {write_json('export_latency', {'rows': rows, 'parity': parity, 'images': images})}")


if __name__ == "__main__":
    main()
