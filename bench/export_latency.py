"""Benchmark: per-backend and per-precision CPU latency and peak memory of exported models, with parity and
accuracy checked.

    python -m bench.export_latency --models maskrcnn_resnet50_fpn maskrcnn_light --images 6 --repeats 2

For each model: build it (random init for Mask R-CNN R50-FPN, as in the baseline; the light model is the app's
bundled one, models/shapes), export it to every format (INT8 calibrated on 32 coco128 train photos), run
``check-export`` on the same photos — and, for the bundled model, ``--data`` on its own validation set (100
unseen shapes images, as scripts/build_default_model.sh makes them), so each file's dAP is measured — then time
every runtime (eager fp32 and bf16, TorchScript, ONNX Runtime fp32 and INT8, OpenVINO), each in its own process
(so peak memory is per runtime), alternating the order between rounds. Latency covers the whole ``predict`` call
(host pre/post-processing included), median and p90 after two warm-up calls, on real photos from
../shared/data/coco128/val2017. R50-FPN has no trained weights here, so its AP delta cannot be measured offline:
its numeric parity is reported instead.
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


RUNTIMES = {  # name -> (backend, precision)
    "eager": ("pytorch", "fp32"), "eager-bf16": ("pytorch", "bf16"), "torchscript": ("torchscript", None),
    "onnxruntime": ("onnxruntime", None), "onnxruntime-int8": ("onnxruntime", "int8"),
    "openvino": ("openvino", "fp32"), "openvino-bf16": ("openvino", "bf16"), "openvino-int8": ("openvino", "int8"),
}
FORMAT_OF_RUNTIME = {"torchscript": "torchscript", "onnxruntime": "onnx", "onnxruntime-int8": "onnx-int8",
                     "openvino": "openvino", "openvino-bf16": "openvino-bf16", "openvino-int8": "openvino-int8",
                     "eager-bf16": "eager-bf16"}


def worker(runtime: str, path: str, images: list[str], repeats: int) -> dict:
    import onnxruntime  # noqa: F401  (libraries resident before the baseline, so the peak is the model's)

    from detdemo.data.images import open_image
    from export.runtime import load_predictor

    reset_peak_rss()
    baseline = current_rss_mb()
    backend, precision = RUNTIMES[runtime]
    pred = load_predictor(path, backend, "cpu", precision=precision)
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
    return {"times": times, "detections": counts, "peak_rss_mb": peak, "model_rss_mb": peak - baseline,
            "precision": getattr(pred, "precision", "fp32")}


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
    from export.int8 import calibration_files

    calibration = calibration_files(SHARED / "coco128" / "train2017", 32)
    export_checkpoint(ckpt, ("torchscript", "onnx", "onnx-int8", "openvino", "openvino-int8"), out,
                      calibration=calibration)
    return out


def bundled_val_set(work: Path) -> Path:
    """The bundled model's validation images: 100 unseen shapes images, seed 0, as the build script makes them."""
    from detdemo.data.shapes import generate_shapes

    out = work / "bundled_val"
    if not (out / "annotations" / "instances_val.json").exists():
        generate_shapes(out, train=1, val=100, seed=0, progress=False)
    return out


def checks(arch: str, folder: Path, images: list[str], work: Path) -> dict:
    """check-export on the photos (numeric parity) and, for the trained bundled model, on its val set (dAP)."""
    cmd = [sys.executable, "-m", "detdemo", "check-export", str(folder), "--images", *images]
    if arch == "maskrcnn_light":
        cmd += ["--data", str(bundled_val_set(work))]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    out = {"exit_code": proc.returncode, "summary": proc.stdout.strip().splitlines()}
    parity = json.loads((folder / "parity.json").read_text())
    out["parity"] = {name: {"gated": b["gated"], "passed": b["passed"], **b["overall"]}
                     for name, b in parity["backends"].items()}
    if (folder / "accuracy.json").exists() and arch == "maskrcnn_light":
        acc = json.loads((folder / "accuracy.json").read_text())
        bf16 = work / "eager_bf16_eval.json"  # eager bf16 is a runtime mode, not a file: evaluated the same way
        subprocess.run([sys.executable, "-m", "detdemo", "eval", "--model", str(folder), "--precision", "bf16",
                        "--data", str(bundled_val_set(work)), "--out", str(bf16)], cwd=REPO, check=True,
                       capture_output=True)
        stats = json.loads(bf16.read_text())["stats"]
        ref = acc["files"]["eager"]["stats"]
        acc["files"]["eager-bf16"] = {"precision": "bf16", "stats": stats, "delta": {
            f"{t}_AP": stats[t]["AP"] - ref[t]["AP"] for t in acc["iou_types"]}}
        acc["files"]["eager-bf16"]["passed"] = max(abs(v) for v in acc["files"]["eager-bf16"]["delta"].values()) \
            <= acc["tolerances"]["reduced"]
        out["accuracy"] = {name: {"precision": f["precision"], "passed": f.get("passed", True),
                                  **{f"{t}_AP": f["stats"][t]["AP"] for t in acc["iou_types"]},
                                  **{f"d{t}_AP": f.get("delta", {}).get(f"{t}_AP", 0.0) for t in acc["iou_types"]}}
                           for name, f in acc["files"].items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["maskrcnn_resnet50_fpn", "maskrcnn_light"])
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", default=str(RESULTS / "export_latency_work"))
    p.add_argument("--worker", nargs=3, metavar=("RUNTIME", "PATH", "IMAGES_JSON"))
    args = p.parse_args()
    if args.worker:
        runtime, path, images = args.worker
        print(json.dumps(worker(runtime, path, json.loads(images), args.repeats)))
        return
    images = [str(p) for p in sorted(PHOTOS.iterdir())[: args.images]]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, verdicts = [], {}
    runtimes = args.runtimes
    for arch in args.models:
        folder = prepare(arch, work)
        verdicts[arch] = checks(arch, folder, images, work)
        print(f"{arch}: check-export exit {verdicts[arch]['exit_code']}\n  " +
              "\n  ".join(verdicts[arch]["summary"]), flush=True)
        samples = {r: [] for r in runtimes}
        peaks, extra, dets, precision = {r: 0.0 for r in runtimes}, {r: 0.0 for r in runtimes}, {}, {}
        for rnd in range(args.rounds):
            for runtime in runtimes if rnd % 2 == 0 else runtimes[::-1]:
                cmd = [sys.executable, "-m", "bench.export_latency", "--repeats", str(args.repeats), "--worker",
                       runtime, str(folder), json.dumps(images)]
                proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-3000:])
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                samples[runtime] += res["times"]
                peaks[runtime] = max(peaks[runtime], res["peak_rss_mb"])
                extra[runtime] = max(extra[runtime], res["model_rss_mb"])
                dets[runtime], precision[runtime] = statistics.mean(res["detections"]), res["precision"]
        eager = statistics.median(samples["eager"])
        accuracy = verdicts[arch].get("accuracy", {})
        for runtime in runtimes:
            t = samples[runtime]
            fmt = FORMAT_OF_RUNTIME.get(runtime)
            gate = accuracy.get(fmt, {}) if fmt else {}
            rows.append({"model": arch, "runtime": runtime, "precision": precision[runtime],
                         "median_s": statistics.median(t), "p90_s": float(np.percentile(t, 90)),
                         "speedup_vs_eager": eager / statistics.median(t), "peak_rss_mb": round(peaks[runtime]),
                         "model_rss_mb": round(extra[runtime]), "mean_detections": dets[runtime], "calls": len(t),
                         "dbbox_AP": gate.get("dbbox_AP"), "dsegm_AP": gate.get("dsegm_AP"),
                         "accuracy_gate": None if not gate else ("pass" if gate["passed"] else "FAIL")})
    print(table(rows, ["model", "runtime", "precision", "median_s", "p90_s", "speedup_vs_eager", "peak_rss_mb",
                       "model_rss_mb", "mean_detections", "dbbox_AP", "dsegm_AP", "accuracy_gate"]))
    print(f"wrote {write_json('export_latency', {'rows': rows, 'checks': verdicts, 'images': images})}")


if __name__ == "__main__":
    main()
