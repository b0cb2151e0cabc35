"""Benchmark: the AP gate's paired bootstrap on the bundled shapes model — what it costs next to the evaluation it
reuses, how stable its 95 % interval endpoints are across seeds for each resample count, and the verdicts it gives
on 12 images and on the full validation set.

    python -m bench.gate_intervals [--images 100] [--small 12] [--resamples 200 500 1000 2000 4000] [--seeds 10]

The bundled model (models/shapes) is exported to ONNX, ONNX INT8 (calibrated on 32 of its own training images) and
OpenVINO (bf16 where the CPU has it, else fp32); eager and every file are evaluated once on the first ``--images``
validation images of its build (``detdemo data shapes --seed 0``, as scripts/build_default_model.sh makes them);
the bootstrap then re-accumulates pycocotools' per-image matches (``detdemo.engine.bootstrap``). The ``--small``
set is the first images of the same set (per-image matches do not depend on the other images). Times are CPU
seconds of this process (``time.process_time``) and wall seconds; ratios compare the two in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, RESULTS, table, write_json

WORK = RESULTS / "gate_work"
BUNDLED = REPO / "models" / "shapes"
FILES = {"onnx": ("onnxruntime", None), "onnx-int8": ("onnxruntime", "int8"), "openvino": ("openvino", None)}


def subset(tables, keep: int):
    """The match tables of the first ``keep`` images alone."""
    from detdemo.engine.bootstrap import CategoryTable, MatchTables

    cats = []
    for c in tables.categories:
        m = c.det_image < keep
        cats.append(CategoryTable(c.det_image[m], c.tps[:, m], c.fps[:, m], c.gt_per_image[:keep]))
    return MatchTables(tables.image_ids[:keep], cats, tables.rec_thrs)


def prepare(n_images: int) -> tuple[Path, Path]:
    from detdemo.cli import main
    from detdemo.data.shapes import generate_shapes

    data = WORK / "data"
    if not (data / "annotations" / "instances_val.json").is_file():
        generate_shapes(data, train=32, val=n_images, seed=0, progress=False)  # the build's first images
    folder = WORK / "export"
    if not (folder / "export.json").is_file():
        assert main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(folder), "--format",
                     *FILES, "--calibration", str(data / "train"), "--calibration-images", "32"]) == 0
    return data, folder


def evaluate_all(data: Path, folder: Path) -> tuple[dict, dict]:
    from detdemo.data import eval_transforms, open_dataset
    from detdemo.engine.bootstrap import match_tables
    from detdemo.engine.evaluate import dataset_to_coco, evaluate_predictor
    from export.runtime import load_predictor

    predictors = {"eager": load_predictor(folder / "model.pt", "pytorch", "cpu")}
    for fmt, (backend, precision) in FILES.items():
        predictors[fmt] = load_predictor(folder, backend, "cpu", precision=precision)
    ds = open_dataset(data, "val", None, eval_transforms(), classes=predictors["eager"].class_names)
    gt = dataset_to_coco(ds, with_masks=True)
    tables, rows = {}, {}
    for name, p in predictors.items():
        cpu, wall = time.process_time(), time.perf_counter()
        result = evaluate_predictor(p, ds, gt=gt, masks=True, progress=False)
        rows[name] = {"file": name, "precision": getattr(p, "precision", "fp32"),
                      "eval_cpu_s": time.process_time() - cpu, "eval_wall_s": time.perf_counter() - wall,
                      **{f"{t}_AP": result.stats[t]["AP"] for t in result.coco_evals}}
        tables[name] = {t: match_tables(ev) for t, ev in result.coco_evals.items()}
    return tables, rows


def main() -> None:
    from detdemo.engine.bootstrap import PairedBootstrap
    from export.accuracy import AccuracyTolerances
    from export.gate import RESAMPLES, combined, gate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--small", type=int, default=12)
    ap.add_argument("--resamples", type=int, nargs="+", default=[200, 500, 1000, 2000, 4000])
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()

    data, folder = prepare(args.images)
    tables, rows = evaluate_all(data, folder)
    types = list(tables["eager"])
    limits = AccuracyTolerances()

    cpu, wall = time.process_time(), time.perf_counter()  # the gate's own work: eager once, each file once
    boots = {t: PairedBootstrap(tables["eager"][t], RESAMPLES, 0) for t in types}
    intervals = {f: {t: boots[t].interval(tables[f][t]) for t in types} for f in FILES}
    cost = {"bootstrap_cpu_s": time.process_time() - cpu, "bootstrap_wall_s": time.perf_counter() - wall,
            "eval_cpu_s": sum(r["eval_cpu_s"] for r in rows.values()),
            "eval_wall_s": sum(r["eval_wall_s"] for r in rows.values()), "resamples": RESAMPLES,
            "files": len(FILES), "iou_types": types, "images": args.images}
    cost["bootstrap_share_of_eval_cpu"] = cost["bootstrap_cpu_s"] / cost["eval_cpu_s"]

    verdicts = []
    for n in (args.small, args.images):
        for f in FILES:
            limit = limits.for_precision(rows[f]["precision"])
            gates = []
            for t in types:
                iv = intervals[f][t] if n == args.images else \
                    PairedBootstrap(subset(tables["eager"][t], n), RESAMPLES, 0).interval(subset(tables[f][t], n))
                gates.append(gate(iv.delta, iv.low, iv.high, limit, n))
            verdict, need = combined(gates)
            verdicts.append({"images": n, "file": f, "precision": rows[f]["precision"], "limit": limit,
                             **{f"d{t}_AP": g.delta for t, g in zip(types, gates)},
                             **{f"d{t}_AP_interval": [g.low, g.high] for t, g in zip(types, gates)},
                             "verdict": verdict, "images_to_decide": need})

    stability = []
    for n in (args.small, args.images):
        for f in ("onnx-int8", "openvino"):
            for t in types:
                ref, cand = subset(tables["eager"][t], n), subset(tables[f][t], n)
                for b in args.resamples:
                    lows, highs, secs = [], [], []
                    for seed in range(args.seeds):
                        cpu = time.process_time()
                        iv = PairedBootstrap(ref, b, seed).interval(cand)
                        secs.append(time.process_time() - cpu)
                        lows.append(iv.low)
                        highs.append(iv.high)
                    stability.append({"images": n, "file": f, "iou": t, "resamples": b,
                                      "low_mean": float(np.mean(lows)), "low_sd": float(np.std(lows)),
                                      "high_mean": float(np.mean(highs)), "high_sd": float(np.std(highs)),
                                      "cpu_s_per_interval": float(np.mean(secs))})

    print(table(list(rows.values()), ["file", "precision", "bbox_AP", "segm_AP", "eval_cpu_s", "eval_wall_s"]))
    print(f"\nbootstrap ({RESAMPLES} resamples, eager once + {len(FILES)} files, {', '.join(types)}): "
          f"{cost['bootstrap_cpu_s']:.1f} s CPU vs evaluation {cost['eval_cpu_s']:.1f} s CPU "
          f"({cost['bootstrap_share_of_eval_cpu']:.1%})\n")
    shown = [{**v, **{f"{t} interval": "[{:+.4f}, {:+.4f}]".format(*v[f"d{t}_AP_interval"]) for t in types}}
             for v in verdicts]
    print(table(shown, ["images", "file", "precision", "limit", *(f"{t} interval" for t in types), "verdict",
                        "images_to_decide"]))
    print()
    print(table(stability, ["images", "file", "iou", "resamples", "low_mean", "low_sd", "high_mean", "high_sd",
                            "cpu_s_per_interval"]))
    written = write_json("gate_intervals", {"versions": versions(), "evaluation": rows, "cost": cost,
                                            "verdicts": verdicts, "stability": stability})
    print(f"\nwritten: {written}")


def versions() -> dict:
    import numpy
    import onnxruntime
    import openvino
    import pycocotools
    import torchvision

    return {"torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__, "numpy": numpy.__version__,
            "pycocotools": getattr(pycocotools, "__version__", "unknown")}


if __name__ == "__main__":
    main()
