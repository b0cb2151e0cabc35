"""Benchmark: ONNX Runtime INT8 against ONNX Runtime fp32 on the same model, in the same process.

    python -m bench.int8_speed --models maskrcnn_light maskrcnn_resnet50_fpn --images 6 --rounds 5

For each model: export ``model.onnx`` and ``model.int8.onnx`` (``export.int8``: quant_pre_process, trunk ops
quantised so convolutions fuse into QLinearConv) and, with ``--legacy``, the previous settings (Conv/Gemm only, no
pre-processing) as a third file; then time every file's whole ``predict`` call (host pipeline included) on the
same images, 2 threads each, sessions created side by side and run in alternating order for ``--rounds`` rounds.
Reported per file: the median call (wall), the median of its graph part alone (``predict``'s "model" phase: what
the quantisation changes; the host pre-processing is the same for both), the sum over images of each image's
fastest call (robust to other jobs on a shared machine), the process CPU time per call, and the ratios to fp32;
onnxruntime's fused-op counts (QLinearConv, QLinearAdd, float Conv left); with ``--profile``, the share of graph
time per op type.

Models: the bundled ``maskrcnn_light`` (models/shapes), calibrated on generated shapes (its own kind of images) and
timed on unseen ones; Mask R-CNN R50-FPN with random weights at a small size (``--r50-size``, default 384/512),
calibrated on coco128 train photos and timed on coco128 val photos: its INT8 *speed* is measurable without
trained weights (its accuracy is not: see bench/export_latency.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

from bench.common import REPO, RESULTS, SHARED, table, write_json


def legacy_int8(fp32: Path, out: Path, calibration: list[Path], transform, keep_float: tuple[str, ...]) -> None:
    """The quantisation before this benchmark's change: Conv/Gemm only on the raw export, no pre-processing."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from export.int8 import _quiet_root_logger, _Reader, float_nodes

    proto = onnx.load(str(fp32), load_external_data=False)
    with _quiet_root_logger():
        quantize_static(str(fp32), str(out), _Reader(calibration, transform, proto.graph.input[0].name),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, op_types_to_quantize=["Conv", "Gemm"],
                        nodes_to_exclude=float_nodes(proto.graph, keep_float),
                        calibrate_method=CalibrationMethod.MinMax)
    from export.metadata import stamp_onnx

    meta = json.loads(onnx.load(str(fp32), load_external_data=False).metadata_props[0].value)
    q = onnx.load(str(out))
    stamp_onnx(q, {**meta, "format": "onnx-int8"})
    onnx.save(q, str(out))


def prepare(arch: str, work: Path, r50_size: tuple[int, int], legacy: bool) -> tuple[Path, list[Path]]:
    """(export folder, images to time on)."""
    from detdemo import build_model, save_checkpoint
    from detdemo.models import get_spec
    from export.exporters import export_checkpoint
    from export.int8 import calibration_files

    out = work / arch
    if arch == "maskrcnn_light":
        from detdemo.data.shapes import generate_shapes

        shapes = work / "shapes"
        if not (shapes / "val").is_dir():
            generate_shapes(shapes, train=16, val=8, seed=3, progress=False)
        ckpt, calibration = REPO / "models" / "shapes" / "model.pt", calibration_files(shapes / "train", 16)
        images = sorted((shapes / "val").iterdir())
    else:
        import torch

        ckpt = work / f"{arch}.pt"
        if not ckpt.exists():
            torch.manual_seed(0)
            model, cfg = build_model(arch, 4, min_size=r50_size[0], max_size=r50_size[1])
            save_checkpoint(ckpt, model, cfg)
        calibration = calibration_files(SHARED / "coco128" / "train2017", 16)
        images = sorted((SHARED / "coco128" / "val2017").iterdir())
    if not (out / "export.json").exists():
        export_checkpoint(ckpt, ("onnx", "onnx-int8"), out, calibration=calibration)
    if legacy and not (out / "legacy.int8.onnx").exists():
        from export.runtime import load_predictor

        transform = load_predictor(out / "model.onnx").transform
        legacy_int8(out / "model.onnx", out / "legacy.int8.onnx", calibration, transform,
                    get_spec(arch).family_info.keep_float)
    return out, images


def profile_shares(path: Path, images: list, threads: int) -> list[tuple[str, float]]:
    """Share of graph time per op type (onnxruntime's profiler), over ``images``."""
    import onnxruntime as ort

    from export.int8 import calibration_inputs
    from export.runtime import load_predictor

    pred = load_predictor(path, "onnxruntime", "cpu", threads=threads)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.enable_profiling = threads, True
    opts.profile_file_prefix = str(RESULTS / "int8_profile")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for x in calibration_inputs(images, pred.transform):
        session.run(None, {session.get_inputs()[0].name: x})
    trace = Path(session.end_profiling())
    spent: collections.Counter = collections.Counter()
    for e in json.loads(trace.read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            spent[e["args"]["op_name"]] += e["dur"]
    trace.unlink()
    total = sum(spent.values()) or 1
    return [(op, round(100 * t / total, 1)) for op, t in spent.most_common(10)]


def measure(files: dict[str, Path], images: list[Path], rounds: int, threads: int) -> dict[str, dict]:
    from detdemo.data.images import open_image
    from export.runtime import load_predictor

    predictors = {k: load_predictor(p, "onnxruntime", "cpu", threads=threads) for k, p in files.items()}
    pics = [open_image(p) for p in images]
    for pred in predictors.values():  # warm-up
        for img in pics[:2]:
            pred.predict(img)
    wall = {k: [] for k in files}
    graph = {k: [] for k in files}
    best = {k: [float("inf")] * len(pics) for k in files}
    cpu = {k: [] for k in files}
    dets = {k: [] for k in files}
    for r in range(rounds):
        for k in (list(files) if r % 2 == 0 else list(files)[::-1]):
            for i, img in enumerate(pics):
                t, c, phases = time.perf_counter(), time.process_time(), {}
                det = predictors[k].predict(img, timings=phases)
                dt = time.perf_counter() - t
                wall[k].append(dt)
                graph[k].append(phases["model"])
                cpu[k].append(time.process_time() - c)
                best[k][i] = min(best[k][i], dt)
                dets[k].append(len(det))
    out = {}
    for k in files:
        out[k] = {"median_s": statistics.median(wall[k]), "graph_median_s": statistics.median(graph[k]),
                  "best_sum_s": sum(best[k]), "cpu_s": statistics.median(cpu[k]),
                  "detections": statistics.mean(dets[k]), "calls": len(wall[k])}
    base = out["onnxruntime"]
    for row in out.values():
        row.update(speedup=base["median_s"] / row["median_s"], speedup_graph=base["graph_median_s"] / row[
            "graph_median_s"], speedup_best=base["best_sum_s"] / row["best_sum_s"],
                   speedup_cpu=base["cpu_s"] / row["cpu_s"])
    return out


def main() -> None:
    import onnxruntime
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["maskrcnn_light", "maskrcnn_resnet50_fpn"])
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--r50-size", type=int, nargs=2, default=(384, 512), metavar=("MIN", "MAX"))
    p.add_argument("--legacy", action="store_true", help="also time the previous quantisation settings")
    p.add_argument("--profile", action="store_true", help="onnxruntime's op-type shares of the INT8 graph")
    p.add_argument("--work", default=str(RESULTS / "int8_speed_work"))
    args = p.parse_args()
    work = Path(args.work)
    rows, details = [], {}
    for arch in args.models:
        folder, images = prepare(arch, work, tuple(args.r50_size), args.legacy)
        images = images[: args.images]
        files = {"onnxruntime": folder / "model.onnx", "onnxruntime-int8": folder / "model.int8.onnx"}
        if args.legacy:
            files["onnxruntime-int8 (before)"] = folder / "legacy.int8.onnx"
        from export.int8 import fused_op_counts

        fused = {k: fused_op_counts(p) for k, p in files.items()}
        results = measure(files, images, args.rounds, args.threads)
        for k, r in results.items():
            rows.append({"model": arch, "runtime": k, **r, "QLinearConv": fused[k].get("QLinearConv", 0),
                         "QLinearAdd": fused[k].get("QLinearAdd", 0), "float_conv": fused[k]["float_conv"]})
        details[arch] = {"fused": fused, "results": results, "images": [p.name for p in images]}
        if args.profile:
            details[arch]["profile_int8"] = profile_shares(files["onnxruntime-int8"], images, args.threads)
            details[arch]["profile_fp32"] = profile_shares(files["onnxruntime"], images, args.threads)
        print(table([r for r in rows if r["model"] == arch],
                    ["model", "runtime", "median_s", "speedup", "graph_median_s", "speedup_graph", "best_sum_s",
                     "speedup_best", "cpu_s", "speedup_cpu", "detections", "QLinearConv", "QLinearAdd", "float_conv"]),
              flush=True)
        if args.profile:
            print("INT8 graph time by op:", details[arch]["profile_int8"])
    versions = {"onnxruntime": onnxruntime.__version__, "torch": str(torch.__version__)}
    path = write_json("int8_speed", {"args": vars(args), "versions": versions, "rows": rows, "details": details})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
