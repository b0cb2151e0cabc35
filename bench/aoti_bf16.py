"""Benchmark: the bf16 AOTInductor package (``aoti-bf16``: bf16 autocast, freezing) against the fp32 package and
ONNX Runtime fp32, on the bundled model (models/shapes, maskrcnn_light).

    python -m bench.aoti_bf16 --images 10 --repeats 3 --rounds 2

Exports the bundled checkpoint to onnx, aoti and aoti-bf16 in one folder (the manifest's ``export_seconds`` are
the compile times; skipped if the folder is there), plus an fp32 package compiled with freezing (``aoti-frozen``,
not a format: it tells how much of aoti-bf16's speed is freezing's), then times each runtime in its own process,
alternating the order between rounds: load time (``load_predictor``, after the imports) and the whole ``predict``
call (host pre- and post-processing included): the first call on each image (each the first at its size), then
median and p90 over the repeats, on generated shapes val images (seed 0, as ``detdemo data shapes --train 0
--val 20 --seed 0`` makes them). Ratios are against ONNX Runtime fp32 and the fp32 package in the same run. The AP
gate is ``detdemo check-export FOLDER --data VAL`` (docs/export.md).
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

from bench.common import REPO, RESULTS, table, timed_calls, write_json

RUNTIMES = {"onnxruntime": ("onnx", "onnxruntime"), "aoti": ("aoti", "inductor"),
            "aoti-bf16": ("aoti-bf16", "inductor"), "aoti-frozen": (None, "inductor")}  # name -> (format, backend)
FROZEN_FP32 = "model.aoti-frozen.pt2"  # fp32 with freezing: not a format, measured to tell freezing's share


def worker(runtime: str, folder: str, images: list[str], repeats: int) -> dict:
    import onnxruntime  # noqa: F401  (libraries imported before the clock starts: load time is the model's)
    import torch  # noqa: F401

    from detdemo.data.images import open_image
    from export.formats import FORMATS
    from export.runtime import load_predictor

    fmt, backend = RUNTIMES[runtime]
    start = time.perf_counter()
    pred = load_predictor(Path(folder) / (FORMATS[fmt].file if fmt else FROZEN_FP32), backend, "cpu")
    load = time.perf_counter() - start
    pics = [open_image(p) for p in images]
    first, _ = timed_calls(pred, pics)  # each image once: the first call at each image size
    times, counts = timed_calls(pred, pics, repeats)
    return {"load_s": load, "first": first, "times": times, "detections": counts, "precision": pred.precision}


def prepare(work: Path) -> Path:
    from detdemo.checkpoint import load_checkpoint
    from detdemo.models import model_from_checkpoint
    from export.aoti import export_aoti
    from export.exporters import export_checkpoint

    out = work / "export"
    source = REPO / "models" / "shapes" / "model.pt"
    if not (out / "export.json").exists():
        export_checkpoint(source, ("onnx", "aoti", "aoti-bf16"), out)
    if not (out / FROZEN_FP32).exists():
        model, cfg = model_from_checkpoint(load_checkpoint(source))
        start = time.perf_counter()
        export_aoti(model, cfg, out / FROZEN_FP32, json.loads((out / "export.json").read_text())["export_id"],
                    freezing=True)
        (work / "frozen_export_s.txt").write_text(f"{time.perf_counter() - start:.2f}")
    return out


def val_images(work: Path, count: int) -> list[str]:
    from detdemo.data.shapes import generate_shapes

    data = work / "val"
    if not (data / "annotations" / "instances_val.json").exists():
        generate_shapes(data, train=0, val=20, seed=0, progress=False)
    return [str(p) for p in sorted((data / "val").iterdir())[:count]]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", default=str(RESULTS / "aoti_bf16_work"))
    p.add_argument("--worker", nargs=3, metavar=("RUNTIME", "FOLDER", "IMAGES_JSON"))
    args = p.parse_args()
    if args.worker:
        runtime, folder, images = args.worker
        print(json.dumps(worker(runtime, folder, json.loads(images), args.repeats)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder = prepare(work)
    images = val_images(work, args.images)
    runtimes = list(RUNTIMES)
    samples = {r: [] for r in runtimes}
    firsts = {r: [] for r in runtimes}
    loads = {r: [] for r in runtimes}
    dets, precision = {}, {}
    for rnd in range(args.rounds):
        for runtime in runtimes if rnd % 2 == 0 else runtimes[::-1]:
            cmd = [sys.executable, "-m", "bench.aoti_bf16", "--repeats", str(args.repeats), "--worker", runtime,
                   str(folder), json.dumps(images)]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            samples[runtime] += res["times"]
            firsts[runtime] += res["first"]
            loads[runtime].append(res["load_s"])
            dets[runtime], precision[runtime] = statistics.mean(res["detections"]), res["precision"]
    manifest = json.loads((folder / "export.json").read_text())
    median = {r: statistics.median(samples[r]) for r in runtimes}
    seconds = {**manifest["export_seconds"], None: float((work / "frozen_export_s.txt").read_text())}
    rows = [{"runtime": r, "precision": precision[r], "export_s": seconds.get(RUNTIMES[r][0]),
             "load_s": statistics.median(loads[r]), "first_call_median_s": statistics.median(firsts[r]),
             "median_s": median[r],
             "p90_s": float(np.percentile(samples[r], 90)), "speedup_vs_ort": median["onnxruntime"] / median[r],
             "speedup_vs_aoti": median["aoti"] / median[r], "mean_detections": dets[r], "calls": len(samples[r])}
            for r in runtimes]
    print(table(rows, ["runtime", "precision", "export_s", "load_s", "first_call_median_s", "median_s", "p90_s",
                       "speedup_vs_ort", "speedup_vs_aoti", "mean_detections", "calls"]))
    import onnxruntime
    import torchvision

    versions = {"torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__}
    print(f"wrote {write_json('aoti_bf16', {'rows': rows, 'images': images, 'versions': versions})}")


if __name__ == "__main__":
    main()
