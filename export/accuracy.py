"""Accuracy parity: the AP of eager and of every exported file on the user's own labelled data, and the deltas.

Per-detection parity (``export.parity``) is the right check for float32 exports, which should reproduce eager to
within float rounding; it cannot judge a reduced-precision file, whose detections all move a little. What a user
deploying a model needs is the number they care about — the AP of the file they ship, on their validation set —
so every file is evaluated with pycocotools exactly as ``detdemo eval`` does and gated by its AP delta to eager:

* float32 exports: |dAP| <= 0.002 (bbox, and segm for mask models). Float rounding moves boxes by 1e-4 px, which
  cannot move AP by more than a detection's worth on a small set; 0.002 is what float rounding honestly allows.
* reduced precision (INT8, bf16): |dAP| <= ``reduced`` (default 0.01, the 1 % MMDeploy's regression tests allow
  for mask AP; our own measurements are in docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
    return dataset


def accuracy_report(reference, candidates: list[tuple[str, object]], data: str, split: str = "val",
                    layout: str | None = None, val_fraction: float = 0.2, seed: int = 0,
                    tol: AccuracyTolerances = AccuracyTolerances(), progress: bool = False, dataset=None) -> dict:
    """``candidates``: (format name, predictor). Returns a JSON-ready report; ``passed`` per file and overall.
    ``dataset``: the split already opened by ``open_accuracy_data`` (else it is opened here)."""
    from detdemo.engine.evaluate import dataset_to_coco, evaluate_predictor

    if dataset is None:
        dataset = open_accuracy_data(data, reference.class_names, split, layout, val_fraction, seed)
    masks = bool(dataset.has_masks) and reference.predict(dataset[0][0]).has_masks
    gt = dataset_to_coco(dataset, with_masks=masks)
    iou_types = ("bbox", "segm") if masks else ("bbox",)

    def evaluate(predictor) -> dict:
        result = evaluate_predictor(predictor, dataset, gt=gt, masks=masks, progress=progress)
        return {"stats": result.stats, "per_class": result.per_class, "detections": result.num_detections}

    ref = evaluate(reference)
    files = {"eager": {"backend": reference.backend, "precision": getattr(reference, "precision", "fp32"),
                       "file": str(reference.path), **ref}}
    for name, predictor in candidates:
        precision = getattr(predictor, "precision", "fp32")
        got = evaluate(predictor)
        delta = {f"{t}_{k}": got["stats"][t][k] - ref["stats"][t][k] for t in iou_types for k in KEYS}
        limit = tol.for_precision(precision)
        worst = max(abs(delta[f"{t}_AP"]) for t in iou_types)
        files[name] = {"backend": predictor.backend, "precision": precision, "file": str(predictor.path), **got,
                       "delta": delta, "limit": limit, "passed": worst <= limit}
    return {"data": str(data), "split": split, "images": len(dataset), "iou_types": list(iou_types),
            "tolerances": asdict(tol), "files": files,
            "passed": all(f.get("passed", True) for f in files.values())}


def verified_figures(report: dict) -> dict:
    """What the manifest records for each exported file: AP, its delta to eager, the limit, the verdict."""
    out = {}
    for name, f in report["files"].items():
        if name == "eager":
            continue
        out[name] = {"data": report["data"], "split": report["split"], "images": report["images"],
                     "precision": f["precision"], "passed": f["passed"], "limit": f["limit"],
                     **{f"{t}_AP": f["stats"][t]["AP"] for t in report["iou_types"]},
                     **{f"d{t}_AP": f["delta"][f"{t}_AP"] for t in report["iou_types"]}}
    return out


def markdown(report: dict) -> str:
    from export.formats import backend_label

    types = report["iou_types"]
    head = " | ".join(f"{t} {k}" for t in types for k in KEYS)
    lines = [f"# Accuracy on {report['data']} ({report['split']}, {report['images']} images): "
             f"{'PASS' if report['passed'] else 'FAIL'}", "",
             f"Limits on |ΔAP| vs eager: float32 {report['tolerances']['fp32']}, reduced precision "
             f"{report['tolerances']['reduced']}.", "",
             f"| file | backend | precision | {head} | ΔAP ({', '.join(types)}) | result |",
             "|---" * (5 + len(types) * len(KEYS)) + "|"]
    for name, f in report["files"].items():
        cells = " | ".join(f"{f['stats'][t][k]:.4f}" for t in types for k in KEYS)
        delta = "—" if name == "eager" else ", ".join(f"{f['delta'][f'{t}_AP']:+.4f}" for t in types)
        verdict = "reference" if name == "eager" else ("ok" if f["passed"] else f"over {f['limit']}")
        lines.append(f"| {name} | {backend_label(f['backend'])} | {f['precision']} | {cells} | {delta} | {verdict} |")
    per_class = {n: f["per_class"] for n, f in report["files"].items()}
    classes = list(next(iter(per_class.values()))[types[0]])
    lines += ["", f"Per-class AP ({types[-1]}):", "", "| class | " + " | ".join(per_class) + " |",
              "|---" * (1 + len(per_class)) + "|"]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(f"{pc[types[-1]].get(c, float('nan')):.3f}"
                                             for pc in per_class.values()) + " |")
    return "\n".join(lines) + "\n"
