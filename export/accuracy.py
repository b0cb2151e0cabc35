"""Accuracy parity: the AP of eager and of every exported file on the user's own labelled data, and the deltas.

Per-detection parity (``export.parity``) is the right check for float32 exports, which should reproduce eager to
within float rounding; it cannot judge a reduced-precision file, whose detections all move a little. What a user
deploying a model needs is the number they care about — the AP of the file they ship, on their validation set —
so every file is evaluated with pycocotools exactly as ``detdemo eval`` does, and gated by its AP delta to eager
with that delta's paired bootstrap interval over the images (``export.gate``: PASS, FAIL or INCONCLUSIVE):

* float32 exports: limit 0.002 (bbox, and segm for mask models). Float rounding moves boxes by 1e-4 px, which
  cannot move AP by more than a detection's worth on a small set; 0.002 is what float rounding honestly allows.
* reduced precision (INT8, bf16): limit ``reduced`` (default 0.01, the 1 % MMDeploy's regression tests allow
  for mask AP; our own measurements are in docs/benchmarks.md).

The bootstrap reuses pycocotools' per-image matches of each evaluation (``detdemo.engine.bootstrap``), so it adds
seconds to an evaluation of minutes; both times are recorded in the report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from export.gate import (
    FAIL,
    INCONCLUSIVE,
    LEVEL,
    PASS,
    RESAMPLES,
    combined,
    decide_text,
    gate,
    interval_known,
    interval_text,
    iou_types_of,
    verdict_of,
)

KEYS = ("AP", "AP50", "AP75")


@dataclass(frozen=True)
class AccuracyTolerances:
    fp32: float = 0.002
    reduced: float = 0.01

    def for_precision(self, precision: str) -> float:
        from export.formats import REDUCED

        return self.reduced if precision in REDUCED else self.fp32


def open_accuracy_data(data: str, class_names: list[str], split: str = "val", layout: str | None = None,
                       val_fraction: float = 0.2, seed: int = 0):
    """The labelled split an accuracy check evaluates on, opened (and its classes checked against the model's)
    before any model runs: a dataset that cannot be used is refused before minutes of checking, not after."""
    from detdemo.data import eval_transforms, open_dataset
    from detdemo.errors import DataError

    dataset = open_dataset(data, split, layout, eval_transforms(), classes=list(class_names),
                           val_fraction=val_fraction, seed=seed)
    if len(dataset) == 0:
        raise DataError(f"{data}: split {split!r} holds no images to evaluate on")
    if dataset.num_objects() == 0:  # pycocotools' AP is -1 (undefined) for every file: nothing could be judged
        raise DataError(f"{data}: split {split!r} holds {len(dataset)} images but no labelled objects; an AP "
                        "check needs annotated images")
    return dataset


def accuracy_report(reference, candidates: list[tuple[str, object]], data: str, split: str = "val",
                    layout: str | None = None, val_fraction: float = 0.2, seed: int = 0,
                    tol: AccuracyTolerances = AccuracyTolerances(), progress: bool = False, dataset=None,
                    resamples: int = RESAMPLES, bootstrap_seed: int = 0) -> dict:
    """``candidates``: (format name, predictor). Returns a JSON-ready report: per file its figures, ΔAP with the
    paired bootstrap interval (``resamples`` seeded resamples of the images, the same for every file), the
    verdict, and ``passed`` (PASS only). ``dataset``: the split already opened by ``open_accuracy_data``."""
    from detdemo.engine.bootstrap import PairedBootstrap, match_tables, tables_without_detections
    from detdemo.engine.evaluate import dataset_to_coco, evaluate_predictor

    if dataset is None:
        dataset = open_accuracy_data(data, reference.class_names, split, layout, val_fraction, seed)
    masks = bool(dataset.has_masks) and reference.predict(dataset[0][0]).has_masks
    gt = dataset_to_coco(dataset, with_masks=masks)
    iou_types = ("bbox", "segm") if masks else ("bbox",)
    seconds = {"evaluate": 0.0, "bootstrap": 0.0}

    def evaluate(predictor) -> tuple[dict, dict]:
        start = time.perf_counter()
        result = evaluate_predictor(predictor, dataset, gt=gt, masks=masks, progress=progress)
        seconds["evaluate"] += time.perf_counter() - start
        tables = {t: match_tables(result.coco_evals[t]) if t in result.coco_evals else tables_without_detections(gt)
                  for t in iou_types}  # no detections: pycocotools ran nothing, every category has AP 0
        return {"stats": result.stats, "per_class": result.per_class, "detections": result.num_detections}, tables

    ref, ref_tables = evaluate(reference)
    start = time.perf_counter()  # the eager AP over every resample, once: each file then re-accumulates only its own
    boots = {t: PairedBootstrap(ref_tables[t], resamples, bootstrap_seed, LEVEL) for t in iou_types}
    seconds["bootstrap"] += time.perf_counter() - start
    files = {"eager": {"backend": reference.backend, "precision": getattr(reference, "precision", "fp32"),
                       "file": str(reference.path), **ref}}
    for name, predictor in candidates:
        precision = getattr(predictor, "precision", "fp32")
        got, tables = evaluate(predictor)
        delta = {f"{t}_{k}": got["stats"][t][k] - ref["stats"][t][k] for t in iou_types for k in KEYS}
        limit = tol.for_precision(precision)
        start = time.perf_counter()
        intervals = {t: boots[t].interval(tables[t]) for t in iou_types}
        seconds["bootstrap"] += time.perf_counter() - start
        gates = {t: gate(delta[f"{t}_AP"], intervals[t].low, intervals[t].high, limit, len(dataset))
                 for t in iou_types}
        verdict, need = combined(list(gates.values()))
        known = {f"{t}_AP": [g.low, g.high] if interval_known((g.low, g.high)) else None for t, g in gates.items()}
        files[name] = {"backend": predictor.backend, "precision": precision, "file": str(predictor.path), **got,
                       "delta": delta, "interval": known,
                       "limit": limit, "verdict": verdict, "images_to_decide": need, "passed": verdict == PASS}
    verdicts = [f["verdict"] for n, f in files.items() if n != "eager"]
    overall = FAIL if FAIL in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else PASS
    return {"data": str(data), "split": split, "images": len(dataset), "iou_types": list(iou_types),
            "tolerances": asdict(tol), "files": files, "verdict": overall, "passed": overall == PASS,
            "bootstrap": {"method": "paired percentile bootstrap over images", "resamples": resamples,
                          "seed": bootstrap_seed, "level": LEVEL},
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def figures_of(report: dict, name: str) -> dict:
    """One file's figures as the manifest records them: AP, ΔAP and its interval per IoU type, the limit, the
    verdict (and for an inconclusive one, about how many images would decide it). Reads reports written before
    intervals too (no interval; the verdict from ``passed``)."""
    f = report["files"][name]
    types = report["iou_types"]
    out = {"data": report["data"], "split": report["split"], "images": report["images"],
           "precision": f["precision"], "verdict": verdict_of(f), "passed": f["passed"], "limit": f["limit"],
           **{f"{t}_AP": f["stats"][t]["AP"] for t in types},
           **{f"d{t}_AP": f["delta"][f"{t}_AP"] for t in types}}
    for t in types:
        if (f.get("interval") or {}).get(f"{t}_AP"):
            out[f"d{t}_AP_interval"] = f["interval"][f"{t}_AP"]
    if out["verdict"] == INCONCLUSIVE:
        out["images_to_decide"] = f.get("images_to_decide")
    return out


def verified_figures(report: dict) -> dict:
    """What the manifest records for each exported file (``figures_of``)."""
    return {name: figures_of(report, name) for name in report["files"] if name != "eager"}


def verdict_line(figures: dict) -> str:
    """'bbox ΔAP +0.0012 (95 % interval ...), segm ...; limit ±0.01: PASS' (and why, when inconclusive)."""
    deltas = ", ".join(f"{t} {interval_text(figures, t)}" for t in iou_types_of(figures))
    verdict = verdict_of(figures)
    why = f" ({decide_text(figures)})" if verdict == INCONCLUSIVE else ""
    return f"{deltas}; limit ±{figures.get('limit')}: {verdict}{why}"


def markdown(report: dict) -> str:
    from export.formats import backend_label

    types = report["iou_types"]
    head = " | ".join(f"{t} {k}" for t in types for k in KEYS)
    boot = report.get("bootstrap")
    verdict = report.get("verdict") or ("PASS" if report["passed"] else "FAIL")
    lines = [f"# Accuracy on {report['data']} ({report['split']}, {report['images']} images): {verdict}", "",
             f"Limits on ΔAP vs eager: ±{report['tolerances']['fp32']} float32, ±{report['tolerances']['reduced']} "
             "reduced precision."]
    if boot:
        lines += ["", f"Each ΔAP carries its {boot['level']:.0%} interval from a {boot['method']} "
                  f"({boot['resamples']} resamples, seed {boot['seed']}; the same image sets for eager and every "
                  "file). PASS: the interval lies within ±limit; FAIL: it lies entirely beyond a limit; "
                  "INCONCLUSIVE: it straddles a limit — too few images to tell, never a pass. Time: evaluation "
                  f"{report['seconds']['evaluate']:.1f} s, bootstrap {report['seconds']['bootstrap']:.1f} s."]
    lines += ["", f"| file | backend | precision | {head} | "
              + " | ".join(f"{t} ΔAP [{boot['level']:.0%} interval]" if boot else f"{t} ΔAP" for t in types)
              + " | limit | verdict |", "|---" * (5 + len(types) * (len(KEYS) + 1)) + "|"]
    for name, f in report["files"].items():
        cells = " | ".join(f"{f['stats'][t][k]:.4f}" for t in types for k in KEYS)
        if name == "eager":
            lines.append(f"| {name} | {backend_label(f['backend'])} | {f['precision']} | {cells} | "
                         + " | ".join("—" for _ in types) + " | — | reference |")
            continue
        deltas = []
        for t in types:
            interval = (f.get("interval") or {}).get(f"{t}_AP")
            deltas.append(f"{f['delta'][f'{t}_AP']:+.4f}" +
                          (f" [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else " [unknown]" if boot else ""))
        figures = figures_of(report, name)
        shown = figures["verdict"]
        if shown == INCONCLUSIVE:
            shown += f" ({decide_text(figures)})"
        lines.append(f"| {name} | {backend_label(f['backend'])} | {f['precision']} | {cells} | {' | '.join(deltas)} "
                     f"| ±{f['limit']} | {shown} |")
    per_class = {n: f["per_class"] for n, f in report["files"].items()}
    classes = list(next(iter(per_class.values()))[types[0]])
    lines += ["", f"Per-class AP ({types[-1]}):", "", "| class | " + " | ".join(per_class) + " |",
              "|---" * (1 + len(per_class)) + "|"]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(f"{pc[types[-1]].get(c, float('nan')):.3f}"
                                             for pc in per_class.values()) + " |")
    return "\n".join(lines) + "\n"
