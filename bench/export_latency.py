"""Benchmark: every runtime of an exported model on CPU — export time, load time, latency, peak memory — with each
file's gate verdict, and the speed ratios the export issues set targets for, all from one run.

    python -m bench.export_latency                       # both models, every runtime: the full measurement
    python -m bench.export_latency --models maskrcnn_light --images 3 --repeats 1 --rounds 1   # a quick try

Models (each calibrated and judged on its own kind of images, never on coco128 photos):

* ``maskrcnn_light``: the app's bundled model (models/shapes/model.pt). INT8 is calibrated on 32 generated shapes
  training images (seed 0: the first 32 of the images scripts/build_default_model.sh trains on); the AP gate runs
  on the 300 unseen images that script gates the bundled files on (seed 11): on 100 the reduced-precision OpenVINO
  files were INCONCLUSIVE.
* ``maskrcnn_resnet50_fpn``: the trained R50-FPN of scripts/build_r50_shapes.sh (``--r50-checkpoint``), calibrated
  on 32 images of its training data (``--r50-calibration``) and gated on its held-out shapes (``--r50-data``, split
  val). Without that checkpoint: random weights at a small size (``--r50-size``), every row marked "unverified
  (random weights)" and no AP gate (near-tied random scores make every reduced-precision detection list diverge,
  so AP could not judge it); parity is still checked.

Steps per model: ``detdemo export`` into one folder with every format the chosen runtimes need (the ONNX file by
the default exporter, dynamo), and into a second folder a legacy-exporter ONNX file (``--onnx-exporter legacy``);
``detdemo check-export`` on each folder, probes = the timing images, ``--data`` = the gate data (accuracy.json:
ΔAP with its 95 % paired-bootstrap interval and PASS / FAIL / INCONCLUSIVE); eager bf16 (a runtime mode, not a
file) is evaluated by the same AP gate (``export.accuracy.accuracy_report``, same resamples and seed); then every
runtime is timed in its own process (so peak memory and load time are its own), rounds in alternating order.

One row per runtime (``RUNTIMES``):

* ``export_s``: the format's export time from the folder's manifest (``export_seconds``; openvino-bf16 runs the
  openvino file: the same figure; eager has none). ``load_s``: ``load_predictor`` in the worker (file read, session
  creation, AOTInductor's load); ``first_s``: the first ``predict`` after it (lazy initialisation, JIT warm-up);
  ``first_pass_s``: the median of the other warm-up calls (one per timing image: each input size's first call, which
  runtimes that prepare kernels per shape pay once per size).
* ``median_s``/``p90_s``: the whole ``predict`` call (host pre/post-processing included) after that warm-up pass,
  on the gate data's first ``--images`` validation images, ``--repeats`` times each per round; ``best_s``: the mean
  over images of each image's fastest call (robust to other jobs on a shared machine, where torch's OpenMP
  runtimes — eager, pt2, inductor — slow down far more than ONNX Runtime); ``speedup``: eager fp32's median / this
  runtime's.
* ``peak_rss_mb``: the worker's peak RSS after its libraries were imported (VmHWM reset), ``model_rss_mb`` the part
  above that baseline. ``mean_detections``: per image. ``precision``: what the runtime actually ran at.
* ``gate``: fp32 files — check-export's detection-by-detection parity verdict (their AP delta is listed too);
  reduced-precision runtimes (eager bf16, INT8, OpenVINO bf16) — the AP verdict with dbbox_AP/dsegm_AP and their
  95 % intervals, as accuracy.json records them.

Ratios (``RATIOS``, same run, speed = time of the baseline / time of the runtime): dynamo ONNX vs legacy ONNX in
ONNX Runtime (target >= 0.95), AOTInductor fp32 vs ONNX Runtime fp32 (>= 1.2 on the light model), ONNX Runtime
INT8 vs ONNX Runtime fp32 (>= 1.5), the fastest runtime that passes its gate vs eager fp32 (>= 3 light, >= 5 R50),
and the fastest fp32 verified runtime. Table on stdout; JSON (rows, ratios, checks, versions, machine) in
bench/results/export_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import (
    REPO,
    RESULTS,
    current_rss_mb,
    high_water_rss_mb,
    reset_peak_rss,
    table,
    timed_calls,
    write_json,
)
from export.formats import FORMATS, REDUCED, exported_format, format_backend, format_precision

LIGHT, R50 = "maskrcnn_light", "maskrcnn_resnet50_fpn"
MODELS = (LIGHT, R50)
CALIBRATION_IMAGES = 32
RANDOM_WEIGHTS = "unverified (random weights)"


@dataclass(frozen=True)
class Runtime:
    """One row: the format whose file it runs ("eager": the checkpoint), the precision eager runs at (files run at
    their format's), and the ONNX exporter of the folder it comes from."""

    format: str
    eager_precision: str = "fp32"
    onnx_exporter: str = "auto"

    @property
    def backend(self) -> str:
        return format_backend(self.format)

    @property
    def precision(self) -> str:
        return self.eager_precision if self.format == "eager" else format_precision(self.format)

    @property
    def reduced(self) -> bool:
        return self.precision in REDUCED


RUNTIMES: dict[str, Runtime] = {
    "eager": Runtime("eager"),
    "eager-bf16": Runtime("eager", "bf16"),
    "torchscript": Runtime("torchscript"),
    "onnxruntime-legacy": Runtime("onnx", onnx_exporter="legacy"),
    "onnxruntime": Runtime("onnx"),  # the default exporter: dynamo (the folder's recorded exporter is reported)
    "pt2": Runtime("pt2"),
    "inductor": Runtime("aoti"),
    "onnxruntime-int8": Runtime("onnx-int8"),
    "openvino": Runtime("openvino"),
    "openvino-bf16": Runtime("openvino-bf16"),
    "openvino-int8": Runtime("openvino-int8"),
}
# AOTInductor with freezing and bf16 (issue 18): its format is added on another branch; the row appears with it.
if "aoti-bf16" in FORMATS:
    RUNTIMES["inductor-bf16"] = Runtime("aoti-bf16")

# (key, baseline runtime, runtime, target per model): speed ratio = median(baseline) / median(runtime)
RATIOS = (
    ("dynamo_onnx_vs_legacy_onnx", "onnxruntime-legacy", "onnxruntime", {LIGHT: 0.95, R50: 0.95}),
    ("inductor_vs_onnxruntime", "onnxruntime", "inductor", {LIGHT: 1.2}),
    ("onnxruntime_int8_vs_fp32", "onnxruntime", "onnxruntime-int8", {LIGHT: 1.5, R50: 1.5}),
)
FASTEST_PASSING_TARGET = {LIGHT: 3.0, R50: 5.0}


# ---------------------------------------------------------------------------------------------------- the worker

def worker(runtime: str, path: str, images: list[str], repeats: int) -> dict:
    """Load one runtime and time it (this process runs nothing else, so its peak memory is the runtime's)."""
    import onnxruntime  # noqa: F401  (libraries resident before the baseline, so the peak above it is the model's)

    from detdemo.data.images import open_image
    from export.runtime import load_predictor

    rt = RUNTIMES[runtime]
    if rt.backend == "openvino":
        import openvino  # noqa: F401
    pics = [open_image(p) for p in images]
    reset_peak_rss()
    baseline = current_rss_mb()
    t = time.perf_counter()
    pred = load_predictor(path, rt.backend, "cpu", precision=rt.precision)
    load_s = time.perf_counter() - t
    # warm-up: every image once, so each input size has been seen before it is timed
    first_pass, _ = timed_calls(pred, pics if len(pics) > 1 else pics * 2)
    times, counts = timed_calls(pred, pics, repeats)
    peak = high_water_rss_mb()
    return {"times": times, "detections": counts, "peak_rss_mb": peak, "model_rss_mb": peak - baseline,
            "load_s": load_s, "first_s": first_pass[0], "first_pass_s": first_pass[1:] or first_pass,
            "precision": getattr(pred, "precision", "fp32")}


# ------------------------------------------------------------------------------------------------ models and data

@dataclass
class Setup:
    """What one model is exported from, calibrated on, gated on and timed on."""

    arch: str
    checkpoint: Path
    calibration: Path  # a folder of images or a dataset (its train split): `detdemo export --calibration`
    data: Path | None  # labelled gate data (split val); None: no AP gate
    timing: list[Path]
    note: str = ""


def _val_images(data: Path, count: int) -> list[Path]:
    from detdemo.fileio import list_images

    return list_images(data / "val")[:count]


def light_setup(work: Path, count: int) -> Setup:
    """Calibration: the first 32 of the bundled model's own training images (seed 0); gate and timing: the 300
    unseen images scripts/build_default_model.sh gates the bundled files on (seed 11, no training split)."""
    from detdemo.data.shapes import generate_shapes

    own = work / "shapes_seed0"
    if not (own / "annotations" / "instances_train.json").exists():
        generate_shapes(own, train=CALIBRATION_IMAGES, val=0, seed=0, progress=False)
    gate = work / "shapes_gate_seed11"
    if not (gate / "annotations" / "instances_val.json").exists():
        generate_shapes(gate, train=0, val=300, seed=11, progress=False)
    return Setup(LIGHT, REPO / "models" / "shapes" / "model.pt", own / "train", gate, _val_images(gate, count))


def r50_setup(args, work: Path, count: int) -> Setup:
    from detdemo.errors import DetDemoError

    ckpt, calibration, data = (Path(p).resolve() for p in (args.r50_checkpoint, args.r50_calibration, args.r50_data))
    if ckpt.is_file():
        for what, p in (("--r50-calibration", calibration), ("--r50-data", data)):
            if not p.exists():
                raise DetDemoError(f"{what} {p}: not found (scripts/build_r50_shapes.sh makes it beside the "
                                   "checkpoint)")
        return Setup(R50, ckpt, calibration, data, _val_images(data, count))
    import torch

    from detdemo import build_model, save_checkpoint

    print(f"{ckpt} not found: Mask R-CNN R50-FPN with random weights at {args.r50_size[0]}/{args.r50_size[1]} px, "
          "no AP gate", flush=True)
    random = work / f"{R50}_random_{args.r50_size[0]}x{args.r50_size[1]}.pt"
    if not random.exists():
        torch.manual_seed(0)
        model, cfg = build_model(R50, 4, ["circle", "square", "triangle"], min_size=args.r50_size[0],
                                 max_size=args.r50_size[1])
        save_checkpoint(random, model, cfg)
    light = light_setup(work, count)  # shapes images of the same kind the trained R50 would see
    return Setup(R50, random, calibration if calibration.exists() else light.calibration, None,
                 _val_images(data, count) if data.exists() else light.timing, RANDOM_WEIGHTS)


# ----------------------------------------------------------------------------------------- export and check

def _detdemo(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detdemo", *argv], cwd=REPO, capture_output=True, text=True)


def folder_name(exporter: str) -> str:
    return "export" if exporter == "auto" else f"export-{exporter}"


def export_folders(setup: Setup, runtimes: list[str], work: Path, reuse: bool) -> dict[str, Path]:
    """One export folder per ONNX exporter the runtimes need, each made by ``detdemo export`` in its own process
    (so each pays its own imports, as a user's export does)."""
    from export.runtime import read_manifest

    groups: dict[str, list[str]] = {}
    for name in runtimes:
        rt = RUNTIMES[name]
        if rt.format != "eager":
            groups.setdefault(rt.onnx_exporter, [])
            fmt = exported_format(rt.format)
            if fmt not in groups[rt.onnx_exporter]:
                groups[rt.onnx_exporter].append(fmt)
    folders = {}
    for exporter, formats in groups.items():
        out = work / setup.arch / folder_name(exporter)
        manifest = read_manifest(out) if out.is_dir() else None
        if not (reuse and manifest and manifest.get("source") == str(setup.checkpoint)
                and set(formats) <= set(manifest.get("files", {}))):
            needs_calibration = any(FORMATS[f].precision == "int8" for f in formats)
            proc = _detdemo("export", "--checkpoint", str(setup.checkpoint), "--out", str(out), "--format", *formats,
                            "--onnx-exporter", exporter,
                            *(("--calibration", str(setup.calibration), "--calibration-images",
                               str(CALIBRATION_IMAGES)) if needs_calibration else ()))
            if proc.returncode:
                raise RuntimeError(f"detdemo export ({setup.arch}, {exporter}) failed:\n{proc.stderr[-3000:]}")
        folders[exporter] = out
    return folders


def onnx_exporter_of(folder: Path) -> str | None:
    """The exporter recorded in a folder's model.onnx (None: no such file)."""
    path = folder / FORMATS["onnx"].file
    if not path.exists():
        return None
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = next((json.loads(p.value) for p in proto.metadata_props if p.key == "detdemo"), {})
    return meta.get("exporter")


def check(folder: Path, setup: Setup) -> dict:
    """``detdemo check-export`` on a folder: its exit code, summary, parity.json and accuracy.json."""
    proc = _detdemo("check-export", str(folder), "--images", *map(str, setup.timing),
                    *(("--data", str(setup.data)) if setup.data else ()))
    if proc.returncode not in (0, 1, 3):  # 2: refused, anything else: crashed
        raise RuntimeError(f"check-export {folder} failed:\n{proc.stderr[-3000:]}")
    out = {"exit_code": proc.returncode, "summary": proc.stdout.strip().splitlines(),
           "parity": json.loads((folder / "parity.json").read_text())}
    if setup.data:
        out["accuracy"] = json.loads((folder / "accuracy.json").read_text())
    return out


def eager_bf16_gate(setup: Setup) -> dict:
    """Eager bf16 autocast judged as check-export judges a reduced-precision file: its accuracy.json entry (ΔAP,
    the paired bootstrap interval with check-export's resamples and seed, the verdict)."""
    from export.accuracy import accuracy_report
    from export.runtime import load_predictor

    reference = load_predictor(setup.checkpoint, "pytorch", "cpu")
    bf16 = load_predictor(setup.checkpoint, "pytorch", "cpu", precision="bf16")
    report = accuracy_report(reference, [("eager-bf16", bf16)], str(setup.data))
    return {**report["files"]["eager-bf16"], "images": report["images"]}


# ------------------------------------------------------------------------------------------------------- gates

def gate_of(name: str, setup: Setup, checks: dict[str, dict], bf16: dict | None) -> dict:
    """A row's gate: fp32 files by parity (with their ΔAP where measured), reduced precision by the AP verdict."""
    rt = RUNTIMES[name]
    if rt.format == "eager" and not rt.reduced:
        return {"gate": "reference", "passed": True}
    if rt.reduced and setup.data is None:
        return {"gate": setup.note or "no AP gate (no labelled data)", "passed": False}
    checked = checks.get(rt.onnx_exporter, {})
    acc = bf16 if rt.format == "eager" else (checked.get("accuracy") or {}).get("files", {}).get(rt.format)
    out: dict = {}
    if acc:
        out.update(ap_verdict=acc["verdict"], limit=acc["limit"], images=acc.get("images"),
                   **{f"d{t}": d for t, d in acc["delta"].items() if t.endswith("_AP")},
                   **{f"d{t}_interval": iv for t, iv in (acc.get("interval") or {}).items()})
    if rt.reduced:
        if not acc:
            return {"gate": "not checked", "passed": False}
        return {**out, "gate": f"AP {acc['verdict']}", "passed": acc["verdict"] == "PASS"}
    parity = checked.get("parity", {}).get("backends", {}).get(rt.format)
    if parity is None:
        return {**out, "gate": "not checked", "passed": False}
    verdict = "PASS" if parity["passed"] else "FAIL"
    return {**out, "gate": f"parity {verdict}", "passed": parity["passed"], "parity": parity["overall"]}


def delta_cell(gate: dict, key: str) -> str:
    """'+0.0012 [-0.0010, +0.0031]' for the table."""
    if key not in gate:
        return ""
    iv = gate.get(f"{key}_interval")
    return f"{gate[key]:+.4f}" + (f" [{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv else "")


# ------------------------------------------------------------------------------------------------------ timing

def time_runtimes(runtimes: list[str], paths: dict[str, Path], images: list[Path], repeats: int,
                  rounds: int) -> dict[str, dict]:
    samples: dict[str, dict] = {r: {"times": [], "load_s": [], "first_s": [], "first_pass_s": [], "peak": 0.0,
                                    "extra": 0.0, "best": [float("inf")] * len(images)} for r in runtimes}
    for rnd in range(rounds):
        for name in runtimes if rnd % 2 == 0 else runtimes[::-1]:
            cmd = [sys.executable, "-m", "bench.export_latency", "--repeats", str(repeats), "--worker", name,
                   str(paths[name]), json.dumps([str(p) for p in images])]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"worker {name} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            s = samples[name]
            s["times"] += res["times"]
            for i in range(len(images)):  # each image's fastest call over repeats and rounds (repeat-major order)
                s["best"][i] = min(s["best"][i], *res["times"][i::len(images)])
            s["load_s"].append(res["load_s"])
            s["first_s"].append(res["first_s"])
            s["first_pass_s"] += res["first_pass_s"]
            s["peak"], s["extra"] = max(s["peak"], res["peak_rss_mb"]), max(s["extra"], res["model_rss_mb"])
            s["detections"], s["precision"] = statistics.mean(res["detections"]), res["precision"]
    return samples


def ratios_of(arch: str, rows: dict[str, dict], verified: bool) -> dict:
    def speed(base: str, other: str) -> float | None:
        if base in rows and other in rows:
            return rows[base]["median_s"] / rows[other]["median_s"]
        return None

    out = {}
    for key, base, other, targets in RATIOS:
        value, target = speed(base, other), targets.get(arch)
        out[key] = {"baseline": base, "runtime": other, "value": value, "target": target,
                    "met": None if value is None or target is None else value >= target}
    passing = [r for r in rows.values() if r["passed"] and r["runtime"] != "eager"]
    fp32 = [r for r in passing if r["precision_expected"] == "fp32"]
    for key, pool, targets in (("fastest_passing_vs_eager", passing, FASTEST_PASSING_TARGET),
                               ("fastest_fp32_verified_vs_eager", fp32, {})):
        best = min(pool, key=lambda r: r["median_s"], default=None)
        value = speed("eager", best["runtime"]) if best else None
        target = targets.get(arch)
        out[key] = {"baseline": "eager", "runtime": best["runtime"] if best else None, "value": value,
                    "target": target, "met": None if value is None or target is None else value >= target,
                    **({} if verified else {"note": RANDOM_WEIGHTS})}
    return out


# -------------------------------------------------------------------------------------------------------- main

def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # a build under another distribution name (onnxruntime-gpu, ...)
            import importlib

            out[pkg] = getattr(importlib.import_module(pkg), "__version__", None)
    return out


def run_model(setup: Setup, runtimes: list[str], args, work: Path) -> tuple[list[dict], dict]:
    from export.runtime import folder_files

    t0 = time.perf_counter()
    folders = export_folders(setup, runtimes, work, args.reuse_exports)
    checks = {exporter: check(folder, setup) for exporter, folder in folders.items()}
    for exporter, c in checks.items():
        print(f"{setup.arch} ({folder_name(exporter)}): check-export exit {c['exit_code']}\n  " +
              "\n  ".join(c["summary"]), flush=True)
    bf16 = eager_bf16_gate(setup) if "eager-bf16" in runtimes and setup.data else None
    setup_s = time.perf_counter() - t0
    files = {exporter: folder_files(folder) for exporter, folder in folders.items()}
    manifests = {exporter: json.loads((folder / "export.json").read_text()) for exporter, folder in folders.items()}
    paths, skipped = {}, {}
    for name in list(runtimes):
        rt = RUNTIMES[name]
        if rt.format == "eager":
            paths[name] = setup.checkpoint
        elif rt.format in files[rt.onnx_exporter]:
            paths[name] = files[rt.onnx_exporter][rt.format]
        else:  # `detdemo export` skipped it for a stated reason (torch.jit gone, torch.export blocked)
            reason = manifests[rt.onnx_exporter].get("skipped", {}).get(exported_format(rt.format), "not exported")
            skipped[name] = reason
            print(f"{setup.arch}: {name} not timed: {reason}", flush=True)
    runtimes = [r for r in runtimes if r not in skipped]
    samples = time_runtimes(runtimes, paths, setup.timing, args.repeats, args.rounds)
    eager = statistics.median(samples["eager"]["times"]) if "eager" in samples else None
    rows = {}
    for name in runtimes:
        rt, s = RUNTIMES[name], samples[name]
        t = s["times"]
        median = statistics.median(t)
        export_s = None if rt.format == "eager" else \
            manifests[rt.onnx_exporter]["export_seconds"].get(exported_format(rt.format))
        gate = gate_of(name, setup, checks, bf16)
        rows[name] = {"model": setup.arch, "runtime": name, "backend": rt.backend, "format": rt.format,
                      "precision_expected": rt.precision, "precision": s["precision"], "export_s": export_s,
                      "load_s": statistics.median(s["load_s"]), "first_s": statistics.median(s["first_s"]),
                      "first_pass_s": statistics.median(s["first_pass_s"]),
                      "median_s": median, "p90_s": float(np.percentile(t, 90)),
                      "best_s": statistics.mean(s["best"]),
                      "speedup": eager / median if eager else None, "peak_rss_mb": round(s["peak"]),
                      "model_rss_mb": round(s["extra"]), "mean_detections": s["detections"], "calls": len(t),
                      **gate, "note": setup.note}
    detail = {"checkpoint": str(setup.checkpoint), "calibration": str(setup.calibration),
              "calibration_images": CALIBRATION_IMAGES, "gate_data": str(setup.data) if setup.data else None,
              "timing_images": [str(p) for p in setup.timing], "note": setup.note,
              "onnx_exporters": {folder_name(e): onnx_exporter_of(f) for e, f in folders.items()},
              "export_seconds": {folder_name(e): m["export_seconds"] for e, m in manifests.items()},
              "export_and_check_s": round(setup_s, 1),
              "checks": {folder_name(e): {"exit_code": c["exit_code"], "summary": c["summary"],
                                          "accuracy": c.get("accuracy")} for e, c in checks.items()},
              "eager_bf16_accuracy": bf16, "skipped": skipped,
              "ratios": ratios_of(setup.arch, rows, verified=not setup.note)}
    return list(rows.values()), detail


COLUMNS = ["model", "runtime", "precision", "export_s", "load_s", "first_s", "first_pass_s", "median_s", "p90_s",
           "best_s", "speedup", "peak_rss_mb", "model_rss_mb", "mean_detections", "gate", "dbbox_AP", "dsegm_AP"]


def print_ratios(arch: str, ratios: dict) -> None:
    for key, r in ratios.items():
        value = "n/a" if r["value"] is None else f"{r['value']:.2f}x"
        target = "" if r["target"] is None else f" (target >= {r['target']}: {'met' if r['met'] else 'NOT met'})"
        which = f" [{r['runtime']} vs {r['baseline']}]" if r["runtime"] else ""
        print(f"  {arch} {key}: {value}{which}{target}{' — ' + r['note'] if r.get('note') else ''}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES),
                   help="eager is always timed (the baseline of every speedup)")
    p.add_argument("--images", type=int, default=6, help="timing (and parity probe) images per model")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per image per round")
    p.add_argument("--rounds", type=int, default=2, help="worker processes per runtime, in alternating order")
    p.add_argument("--r50-checkpoint", default=str(REPO / "build" / "r50_small" / "run" / "best.pt"))
    p.add_argument("--r50-calibration", default=str(REPO / "build" / "r50_small" / "data"))
    p.add_argument("--r50-data", default=str(REPO / "build" / "r50_small" / "heldout"))
    p.add_argument("--r50-size", type=int, nargs=2, default=(192, 256), metavar=("MIN", "MAX"),
                   help="the random-weights fallback's transform size (scripts/build_r50_shapes.sh's default)")
    p.add_argument("--work", default=str(RESULTS / "export_latency_work"))
    p.add_argument("--reuse-exports", action="store_true",
                   help="keep export folders made from the same checkpoint with every needed format (their "
                        "manifests' export times are then an earlier run's)")
    p.add_argument("--out", default="export_latency", help="results file name in bench/results (no .json)")
    p.add_argument("--worker", nargs=3, metavar=("RUNTIME", "PATH", "IMAGES_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        runtime, path, images = args.worker
        print(json.dumps(worker(runtime, path, json.loads(images), args.repeats)))
        return
    runtimes = ["eager", *(r for r in RUNTIMES if r in args.runtimes and r != "eager")]  # table order
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, details = [], {}
    started = time.perf_counter()
    for arch in args.models:
        setup = light_setup(work, args.images) if arch == LIGHT else r50_setup(args, work, args.images)
        model_rows, details[arch] = run_model(setup, runtimes, args, work)
        rows += model_rows
    shown = [{**r, "dbbox_AP": delta_cell(r, "dbbox_AP"), "dsegm_AP": delta_cell(r, "dsegm_AP"),
              "gate": r["gate"] + (f"; {r['note']}" if r["note"] and r["gate"] != r["note"] else "")}
             for r in rows]
    print(table(shown, COLUMNS))
    print("ratios (speed = baseline median / runtime median):")
    for arch, d in details.items():
        print_ratios(arch, d["ratios"])
    payload = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "versions": versions(),
               "total_s": round(time.perf_counter() - started, 1), "rows": rows,
               "ratios": {arch: d["ratios"] for arch, d in details.items()}, "models": details}
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
