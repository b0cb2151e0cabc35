"""Parity between the eager model and its exported files, on images that break exports in practice.

Detections are paired by label and box IoU with the Hungarian algorithm, never index by index: two detections
with near-equal scores legitimately swap order between runtimes. A detection left unmatched fails the check
unless it sits at a cut-off, i.e. its score is within ``score_tol`` of the lowest score the other runtime kept
when that runtime hit its detection cap, or of the score threshold, or it belongs to a tie group (another
detection of its label has the same score within ``score_tol``, and the other runtime has that score too): NMS
and top-k keep an arbitrary member of a tie group, so each runtime may keep a different one. None of these is a
broken export; a real break moves scores beyond the tolerance and is still caught.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from detdemo.inference.detections import Detections


@dataclass(frozen=True)
class Tolerances:
    """Defaults from measurements (docs/export.md): ONNX Runtime's float32 kernels move boxes by <= 3e-4 px and
    scores by <= 4e-7 against eager; TorchScript is bit-exact. A 5 % change of the box-regression weights moves
    boxes by 0.26 px and drops mask IoU to 0.96, so the limits sit between the two: 100x above runtime noise,
    5x below a small real change. Mask IoU allows a pixel flipping at exactly 0.5 on a small mask.

    Masks are compared only where the box is at least ``mask_min_box_px`` on its shorter side. torchvision pastes
    the 28x28 mask into ``int(width + 1)`` columns, so on a box 0.1-3 px wide a 0.01-px box difference changes the
    paste width and flips pixels (random-init Mask R-CNN R50-FPN: boxes 0.09-1.5 px wide, box difference
    <= 0.016 px, mask IoU 0.0-0.86). Such boxes and their scores are still checked at full tolerance."""

    box_px: float = 0.05
    score: float = 1e-4
    mask_iou_min: float = 0.98
    mask_min_box_px: float = 4.0
    match_iou: float = 0.5
    mask_threshold: float = 0.5


@dataclass
class ImageParity:
    probe: str
    size: tuple[int, int]
    n_reference: int
    n_candidate: int
    matched: int
    unmatched: int  # failures
    boundary: int  # unmatched at a cut-off (not failures)
    max_box_diff_px: float = 0.0
    max_score_diff: float = 0.0
    mask_iou_min: float | None = None
    mask_iou_mean: float | None = None
    masks_not_compared: int = 0  # matched detections with boxes thinner than Tolerances.mask_min_box_px
    passed: bool = True
    reasons: list[str] = field(default_factory=list)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / np.maximum(union, 1e-9)
    # Zero-area boxes (clipped at the image border) have no IoU; identical ones are still the same detection.
    same = np.abs(a[:, None, :] - b[None, :, :]).max(-1) <= 1e-6
    return np.where(union > 0, iou, same.astype(float))


def match(ref: Detections, cand: Detections, min_iou: float) -> list[tuple[int, int]]:
    """Hungarian pairing on (1 - IoU) within each label; pairs below ``min_iou`` are left unmatched."""
    pairs = []
    for label in np.union1d(ref.labels, cand.labels):
        ri, ci = np.nonzero(ref.labels == label)[0], np.nonzero(cand.labels == label)[0]
        if len(ri) == 0 or len(ci) == 0:
            continue
        iou = _iou(ref.boxes[ri], cand.boxes[ci])
        score_gap = np.abs(ref.scores[ri][:, None] - cand.scores[ci][None, :])
        rows, cols = linear_sum_assignment((1.0 - iou) + 1e-3 * score_gap)
        pairs += [(int(ri[r]), int(ci[c])) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
    return pairs


def _tied(dets: Detections, i: int, tol: float) -> bool:
    """Another detection of the same label has the same score (within ``tol``): their order is arbitrary."""
    same = (dets.labels == dets.labels[i]) & (np.abs(dets.scores - dets.scores[i]) <= tol)
    return int(same.sum()) > 1


def _has_tie_partner(dets: Detections, i: int, other: Detections, tol: float) -> bool:
    """An unmatched detection whose score is tied within its own set and present in the other runtime's set:
    the other runtime kept a different member of the same tie group."""
    if not _tied(dets, i, tol):
        return False
    return bool(((other.labels == dets.labels[i]) & (np.abs(other.scores - dets.scores[i]) <= tol)).any())


def _pair_agrees(ref: Detections, cand: Detections, r: int, c: int, tol: Tolerances) -> bool:
    return (float(np.abs(ref.boxes[r] - cand.boxes[c]).max()) <= tol.box_px
            and abs(float(ref.scores[r]) - float(cand.scores[c])) <= tol.score)


def _at_cutoff(score: float, other: Detections, cap: int | None, threshold: float, tol: float) -> bool:
    near_threshold = abs(score - threshold) <= tol
    near_cap = cap is not None and len(other) >= cap and score <= float(other.scores.min()) + tol
    return near_threshold or near_cap


def compare(probe: str, ref: Detections, cand: Detections, tol: Tolerances, cap: int | None = None,
            score_threshold: float = 0.0) -> ImageParity:
    pairs = match(ref, cand, tol.match_iou)
    # A pair that disagrees is two different detections that happen to overlap, not one detection that moved, when
    # both sit at a cut-off, or when their scores agree and are tied with another detection of the label: NMS and
    # top-k keep an arbitrary one of equally scored overlapping candidates, so runtimes may keep different ones.
    pairs = [(r, c) for r, c in pairs
             if _pair_agrees(ref, cand, r, c, tol)
             or not ((_at_cutoff(float(ref.scores[r]), cand, cap, score_threshold, tol.score)
                      and _at_cutoff(float(cand.scores[c]), ref, cap, score_threshold, tol.score))
                     or (abs(float(ref.scores[r]) - float(cand.scores[c])) <= tol.score
                         and (_tied(ref, r, tol.score) or _tied(cand, c, tol.score))))]
    r_done, c_done = {r for r, _ in pairs}, {c for _, c in pairs}
    unmatched = boundary = 0
    for i in set(range(len(ref))) - r_done:
        ok = (_at_cutoff(float(ref.scores[i]), cand, cap, score_threshold, tol.score)
              or _has_tie_partner(ref, i, cand, tol.score))
        boundary, unmatched = boundary + ok, unmatched + (not ok)
    for j in set(range(len(cand))) - c_done:
        ok = (_at_cutoff(float(cand.scores[j]), ref, cap, score_threshold, tol.score)
              or _has_tie_partner(cand, j, ref, tol.score))
        boundary, unmatched = boundary + ok, unmatched + (not ok)
    size = (ref.image_size[1], ref.image_size[0])
    rep = ImageParity(probe, size, len(ref), len(cand), len(pairs), unmatched, boundary)
    if pairs:
        ri, ci = np.array(pairs).T
        rep.max_box_diff_px = float(np.abs(ref.boxes[ri] - cand.boxes[ci]).max())
        rep.max_score_diff = float(np.abs(ref.scores[ri] - cand.scores[ci]).max())
        if ref.masks is not None and cand.masks is not None:
            sides = np.minimum(ref.boxes[ri, 2] - ref.boxes[ri, 0], ref.boxes[ri, 3] - ref.boxes[ri, 1])
            wide = sides >= tol.mask_min_box_px
            rep.masks_not_compared = int((~wide).sum())
            if wide.any():
                a = ref.masks[ri[wide]] > tol.mask_threshold
                b = cand.masks[ci[wide]] > tol.mask_threshold
                inter = (a & b).reshape(len(a), -1).sum(1)
                union = (a | b).reshape(len(a), -1).sum(1)
                ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
                rep.mask_iou_min, rep.mask_iou_mean = float(ious.min()), float(ious.mean())
    if rep.unmatched:
        rep.reasons.append(f"{rep.unmatched} unmatched detection(s)")
    if rep.max_box_diff_px > tol.box_px:
        rep.reasons.append(f"box differs by {rep.max_box_diff_px:.3g} px > {tol.box_px}")
    if rep.max_score_diff > tol.score:
        rep.reasons.append(f"score differs by {rep.max_score_diff:.3g} > {tol.score}")
    if rep.mask_iou_min is not None and rep.mask_iou_min < tol.mask_iou_min:
        rep.reasons.append(f"mask IoU {rep.mask_iou_min:.3f} < {tol.mask_iou_min}")
    rep.passed = not rep.reasons
    return rep


# -- probes ------------------------------------------------------------------------------------------------------


def default_probes(images: list[Path] | None = None, seed: int = 0,
                   extras: bool = True) -> list[tuple[str, Image.Image]]:
    """The probe sequence, in this order (the order matters: the blank image precedes a real one in the same
    session): real images of several sizes, blank, real after blank, tiny 64x48, large 2000x1500, grayscale."""
    from detdemo.data.images import open_image
    from detdemo.data.shapes import ShapesConfig, draw_image

    if images:
        reals = [(p.name, open_image(p)) for p in images]
    else:  # synthetic stand-ins at varied sizes and aspect ratios
        reals = []
        for i, (lo, hi) in enumerate([(200, 260), (300, 420), (420, 640)]):
            rng = np.random.default_rng([seed, i])
            img, _ = draw_image(rng, ShapesConfig(min_side=lo, max_side=hi))
            reals.append((f"shapes_{img.width}x{img.height}", img))
    first = reals[0][1]
    probes = list(reals)
    probes.append(("blank_320x240", Image.new("RGB", (320, 240), (127, 127, 127))))
    probes.append((f"after_blank_{reals[-1][0]}", reals[-1][1]))
    if not extras:
        return probes
    probes.append(("tiny_64x48", first.resize((64, 48), Image.BILINEAR)))
    probes.append(("large_2000x1500", first.resize((2000, 1500), Image.BILINEAR)))
    probes.append(("grayscale", first.convert("L")))
    return probes


def run_parity(reference, candidates: list, probes: list[tuple[str, Image.Image]], tol: Tolerances,
               cap: int | None = None, score_threshold: float = 0.0) -> dict:
    """Compare every candidate predictor with the reference on every probe; returns a JSON-ready report."""
    report = {"tolerances": asdict(tol), "backends": {}}
    ref_out = []
    for _name, img in probes:
        ref_out.append(reference.predict(img))
    for cand in candidates:
        rows = []
        for (name, img), ref in zip(probes, ref_out):
            rows.append(asdict(compare(name, ref, cand.predict(img), tol, cap, score_threshold)))
        worst = {
            "max_box_diff_px": max(r["max_box_diff_px"] for r in rows),
            "max_score_diff": max(r["max_score_diff"] for r in rows),
            "mask_iou_min": min((r["mask_iou_min"] for r in rows if r["mask_iou_min"] is not None), default=None),
            "unmatched": sum(r["unmatched"] for r in rows),
            "boundary": sum(r["boundary"] for r in rows),
            "masks_not_compared": sum(r["masks_not_compared"] for r in rows),
            "detections": sum(r["n_reference"] for r in rows),
        }
        report["backends"][cand.backend] = {"file": str(cand.path), "passed": all(r["passed"] for r in rows),
                                            "overall": worst, "images": rows}
    report["passed"] = all(b["passed"] for b in report["backends"].values())
    return report


def markdown(report: dict) -> str:
    lines = [f"# Export parity: {'PASS' if report['passed'] else 'FAIL'}", "",
             "Tolerances: " + ", ".join(f"{k}={v}" for k, v in report["tolerances"].items()), ""]
    for backend, b in report["backends"].items():
        o = b["overall"]
        lines += [f"## {backend} vs eager: {'PASS' if b['passed'] else 'FAIL'}", "",
                  f"{o['detections']} reference detections; unmatched {o['unmatched']}, at cut-off {o['boundary']}; "
                  f"max box diff {o['max_box_diff_px']:.3g} px; max score diff {o['max_score_diff']:.3g}; "
                  f"min mask IoU {o['mask_iou_min'] if o['mask_iou_min'] is None else round(o['mask_iou_min'], 4)} "
                  f"({o['masks_not_compared']} masks of boxes under {report['tolerances']['mask_min_box_px']} px "
                  "not compared)",
                  "", "| probe | size | eager | export | matched | unmatched | cut-off | box px | score | mask IoU min"
                  " / mean | result |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in b["images"]:
            miou = "—" if r["mask_iou_min"] is None else f"{r['mask_iou_min']:.4f} / {r['mask_iou_mean']:.4f}"
            lines.append(f"| {r['probe']} | {r['size'][0]}×{r['size'][1]} | {r['n_reference']} | {r['n_candidate']} | "
                         f"{r['matched']} | {r['unmatched']} | {r['boundary']} | {r['max_box_diff_px']:.3g} | "
                         f"{r['max_score_diff']:.3g} | {miou} | {'ok' if r['passed'] else '; '.join(r['reasons'])} |")
        lines.append("")
    return "\n".join(lines)


def write_reports(report: dict, out_dir: Path) -> tuple[Path, Path]:
    from detdemo.fileio import write_json, write_text

    return write_json(out_dir / "parity.json", report), write_text(out_dir / "parity.md", markdown(report))
