"""The compare view: PyTorch and an exported backend on the same image, matched by the parity checker.

What ``detdemo check-export`` proves on probe images, shown on the visitor's own image: detections both runtimes
agree on are drawn in their class colours, those only the exported backend found in red, those only PyTorch found
in magenta, with the matcher's per-image figures beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from detdemo.app.catalogue import BACKEND_LABELS, Catalogue
from detdemo.app.predict import Raw, View
from detdemo.engine.draw import draw_detections, image_to_tensor, to_pil
from detdemo.errors import DetDemoError
from export.formats import EAGER_CHOICE

CANDIDATE_ONLY = (255, 0, 0)
REFERENCE_ONLY = (255, 0, 255)
COMPARE_COLUMNS = ["figure", "value"]


@dataclass
class Comparison:
    image: Image.Image
    rows: list[list]
    summary: str
    passed: bool


def compare_backends(catalogue: Catalogue, raw: Raw, backend: str, view: View) -> Comparison:
    from export.parity import Tolerances, compare, match

    if backend == EAGER_CHOICE:
        raise DetDemoError("Choose an exported backend (ONNX Runtime, TorchScript, ...) to compare with PyTorch.")
    entry = catalogue.entry(raw.model)
    if EAGER_CHOICE not in entry.backends:
        raise DetDemoError(f"{raw.model} has no PyTorch model to compare against.")
    threshold = float(view.score_threshold)

    def detections(choice: str):
        """The session's raw result when it came from ``choice`` (no second run), else a run of ``choice``."""
        if raw.backend == choice:
            return raw.det.filter(threshold)
        catalogue.count_model_call()
        return catalogue.predictor(raw.model, choice).predict(raw.image, score_threshold=threshold)

    ref, cand = detections(EAGER_CHOICE), detections(backend)
    tol = Tolerances()
    report = compare("upload", ref, cand, tol, score_threshold=threshold)
    pairs = match(ref, cand, tol.match_iou)
    cand_matched = np.zeros(len(cand), dtype=bool)
    cand_matched[[c for _, c in pairs]] = True
    ref_only = np.ones(len(ref), dtype=bool)
    ref_only[[r for r, _ in pairs]] = False
    drawn = draw_detections(image_to_tensor(raw.image), cand, masks=view.masks, labels=view.labels,
                            matched=cand_matched, unmatched_colour=CANDIDATE_ONLY)
    only = ref.select(ref_only)
    drawn = draw_detections(drawn, only, masks=False, labels=view.labels, matched=np.zeros(len(only), dtype=bool),
                            unmatched_colour=REFERENCE_ONLY)
    label = BACKEND_LABELS[backend]

    def fmt(value, digits=4):
        return "—" if value is None else f"{value:.{digits}g}"

    rows = [["matched detections", report.matched],
            [f"only {label} (red)", int((~cand_matched).sum())],
            ["only PyTorch (magenta)", int(ref_only.sum())],
            ["max box difference (px)", fmt(report.max_box_diff_px)],
            ["max score difference", fmt(report.max_score_diff)],
            ["min mask IoU", fmt(report.mask_iou_min)],
            ["parity", "PASS" if report.passed else "FAIL: " + "; ".join(report.reasons)]]
    summary = (f"PyTorch vs {label} at score >= {threshold:.2f}: {report.matched} matched, "
               f"{int((~cand_matched).sum())} only in {label}, {int(ref_only.sum())} only in PyTorch — "
               f"**{'PASS' if report.passed else 'FAIL'}** under the checker's tolerances (box {tol.box_px} px, "
               f"score {tol.score}, mask IoU {tol.mask_iou_min}).")
    return Comparison(to_pil(drawn), rows, summary, report.passed)
