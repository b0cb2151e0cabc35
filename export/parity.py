"""Parity between the eager model and its exported files, on images that break exports in practice.

Detections are paired by label and box IoU with the Hungarian algorithm, never index by index: two detections
with near-equal scores legitimately swap order between runtimes. Every pair must agree on box, score, soft mask
(the model's own 28x28 probabilities), pasted mask and keypoints within ``Tolerances``; an output one side has and
the other lacks (masks, keypoints) fails.

Only two situations excuse a detection, and every excused detection is listed in the report and counted in its
headline figures:

* **cut-off**: its score sits at the other runtime's cut-off (within ``score`` of the detection cap's lowest kept
  score when that cap was hit, or of the score threshold): which of two candidates scoring the same survives
  there is arbitrary.
* **NMS cut-off**: it is unmatched, and a higher-scoring detection of its label in the other runtime overlaps it
  at an IoU within what the box tolerance can change of the model's NMS threshold (``_at_nms_cutoff``): on
  sub-pixel sliver boxes a 0.01 px difference decides whether NMS keeps it.
* **tie**: its score equals another detection's of its label *in its own runtime* to within a few float32 ulps (a
  genuine tie, not merely close scores), and the other runtime holds a detection of the same label and score that
  is likewise tied (a swapped pair), or an unmatched one, one for one: NMS kept a different member of an
  indistinguishable group (uniform image regions give many anchors exactly equal scores). A dropped detection has
  no such partner, and a moved one whose score is not genuinely tied is still judged, so neither hides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from detdemo.errors import DetDemoError
from detdemo.inference.detections import MASK_THRESHOLD, Detections


@dataclass(frozen=True)
class Tolerances:
    """Defaults from measurements (docs/export.md), each about 100x above what an honest export shows: ONNX Runtime
    moves boxes by <= 3e-4 px, scores by <= 2e-6 and 28x28 mask probabilities by <= 2.4e-5 against eager, and its
    pasted masks reach IoU >= 0.99999; TorchScript is bit-exact. A 5 % change of the box-regression weights moves
    boxes by 0.26 px; a mask head scaled by 1.03 moves probabilities by more than 1e-2.

    Mask IoU is taken over decisive pixels only (reference probability farther than ``mask_prob`` from the 0.5
    threshold): a briefly trained model has many pixels within 1e-5 of 0.5, which flip on float noise although the
    soft masks agree to 4e-6 (measured: IoU 0.988 over all pixels). Those pixels are held by the soft-mask check.

    With probabilities on both sides, masks are pasted into the reference's box for the IoU (``_decisive_iou``).
    With binary masks only, each is pasted by its own box, and masks are compared only where the box is at least
    ``mask_min_box_px`` on its shorter side: torchvision pastes the 28x28 mask into ``int(width + 1)`` columns, so
    on a box 0.1-3 px wide a 0.01-px box difference changes the paste width and flips pixels (random-init Mask
    R-CNN R50-FPN: boxes 0.09-1.5 px wide, box difference <= 0.016 px, mask IoU 0.0-0.86)."""

    box_px: float = 0.05
    score: float = 1e-4
    mask_prob: float = 5e-3
    mask_iou_min: float = 0.999
    keypoint_px: float = 0.05
    keypoint_tie_share: float = 0.02  # at most this share of an image's keypoints may be excused as heatmap ties
    mask_min_box_px: float = 4.0
    match_iou: float = 0.5
    tie_ulps: int = 8  # scores this many float32 spacings apart, in one runtime's output, are a genuine tie


@dataclass
class ImageParity:
    probe: str
    size: tuple[int, int]
    n_reference: int
    n_candidate: int
    matched: int
    unmatched: int  # failures
    excused: int  # listed in ``excusals``; not failures
    max_box_diff_px: float = 0.0  # over every pair, excused ones included
    max_score_diff: float = 0.0
    max_mask_prob_diff: float | None = None
    mask_iou_min: float | None = None
    mask_iou_mean: float | None = None
    max_keypoint_diff_px: float | None = None
    masks_not_compared: int = 0  # matched detections with boxes thinner than Tolerances.mask_min_box_px
    excusals: list[dict] = field(default_factory=list)
    unmatched_examples: list[str] = field(default_factory=list)  # the first few, named (``_which``)
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


def _genuinely_tied(dets: Detections, i: int, ulps: int) -> bool:
    """Another detection of the same label in the same output scores the same to within ``ulps`` float32 steps."""
    spacing = ulps * float(np.spacing(np.float32(max(abs(float(dets.scores[i])), 1e-30))))
    same = (dets.labels == dets.labels[i]) & (np.abs(dets.scores - dets.scores[i]) <= spacing)
    return int(same.sum()) > 1


def _at_cutoff(score: float, other: Detections, cap: int | None, threshold: float, tol: float) -> bool:
    near_threshold = abs(score - threshold) <= tol
    near_cap = cap is not None and len(other) >= cap and score <= float(other.scores.min()) + tol
    return near_threshold or near_cap


def _at_nms_cutoff(dets: Detections, i: int, other: Detections, nms_threshold: float | None,
                   box_px: float) -> bool:
    """An unmatched detection NMS could keep or drop on float noise: in the other runtime's output, a higher-scoring
    detection of its label overlaps it at an IoU within what ``box_px`` (the box difference observed between the
    runtimes on this image) can change of the NMS threshold. The margin is the IoU change of moving box edges by
    ``box_px`` on the thinner box (2 * box_px / its shorter side): with 0.016 px differences a 0.08 px sliver can
    flip anywhere within 0.4 of the threshold, a 20 px box only within 0.002."""
    if nms_threshold is None:
        return False
    box = dets.boxes[i]
    same = np.nonzero((other.labels == dets.labels[i]) & (other.scores > dets.scores[i] - 1e-6))[0]
    if len(same) == 0:
        return False
    iou = _iou(box[None], other.boxes[same])[0]
    sides = np.minimum(np.minimum(box[2] - box[0], box[3] - box[1]),
                       np.minimum(other.boxes[same, 2] - other.boxes[same, 0],
                                  other.boxes[same, 3] - other.boxes[same, 1]))
    margin = 2 * box_px / np.maximum(sides, 1e-6)
    return bool((np.abs(iou - nms_threshold) <= margin).any())


def _which(dets: Detections, i: int, side: str = "eager") -> str:
    """A detection as a failure message names it: which one, so a user can find it in their own output."""
    name = dets.names()[i] if len(dets.class_names) else str(int(dets.labels[i]))
    box = ", ".join(f"{float(v):.1f}" for v in dets.boxes[i])
    return f"{side} detection #{int(i)} {name} score {float(dets.scores[i]):.3f} at [{box}]"


def _entry(side: str, dets: Detections, i: int) -> dict:
    return {"side": side, "index": int(i), "label": int(dets.labels[i]), "score": float(dets.scores[i]),
            "box": [round(float(v), 3) for v in dets.boxes[i]]}


def _pair_ok(ref: Detections, cand: Detections, r: int, c: int, tol: Tolerances) -> bool:
    return (float(np.abs(ref.boxes[r] - cand.boxes[c]).max()) <= tol.box_px
            and abs(float(ref.scores[r]) - float(cand.scores[c])) <= tol.score)


def _decisive_iou(ref: Detections, cand: Detections, r: int, c: int, tol: Tolerances) -> float:
    """IoU of the two runtimes' masks, both pasted into the *reference's* box, over the *decisive* pixels: those
    whose reference probability is farther from the threshold than ``mask_prob``.

    The box is held by its own check (0.05 px), and torchvision's integer paste geometry turns a 1e-4 px box
    difference that straddles a pixel edge into a whole-pixel shift of the mask (measured: IoU 0.991 with boxes
    within 1.2e-4 px); pasting both into one box measures the mask itself. A pixel within ``mask_prob`` of the
    threshold may flip on float noise and is held by the soft-mask check; a decisive pixel that flips is a real
    difference. One pair at a time, whatever the image size."""
    p_ref = ref.mask_probability(r)
    if p_ref is None or cand.mask_probs is None:  # binary masks only: every pixel counts
        a, b = ref.mask(r), cand.mask(c)
    else:
        from detdemo.inference.detections import paste_probability

        p_cand = paste_probability(cand.mask_probs[c], ref.boxes[r], ref.image_size)
        decisive = np.abs(p_ref - MASK_THRESHOLD) > tol.mask_prob
        a = (p_ref > MASK_THRESHOLD) & decisive
        b = (p_cand > MASK_THRESHOLD) & decisive
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def compare(probe: str, ref: Detections, cand: Detections, tol: Tolerances, cap: int | None = None,
            score_threshold: float = 0.0, nms_threshold: float | None = None) -> ImageParity:
    pairs = match(ref, cand, tol.match_iou)
    excusals: list[dict] = []
    judged = []
    for r, c in pairs:  # a pair that disagrees is excused only at a cut-off or as a swap within a genuine tie
        why = None
        if not _pair_ok(ref, cand, r, c, tol):
            if (_at_cutoff(float(ref.scores[r]), cand, cap, score_threshold, tol.score)
                    and _at_cutoff(float(cand.scores[c]), ref, cap, score_threshold, tol.score)):
                why = "cut-off"
            elif (abs(float(ref.scores[r]) - float(cand.scores[c])) <= tol.score
                  and _genuinely_tied(ref, r, tol.tie_ulps) and _genuinely_tied(cand, c, tol.tie_ulps)):
                why = "tie"  # both runtimes hold several equal-scored candidates; NMS kept different ones
        if why:
            excusals.append({"why": why, "reference": _entry("reference", ref, r),
                             "candidate": _entry("candidate", cand, c)})
        else:
            judged.append((r, c))
    r_left = sorted(set(range(len(ref))) - {r for r, _ in pairs})
    c_left = sorted(set(range(len(cand))) - {c for _, c in pairs})
    # genuine ties: one-for-one partners among the unmatched of the other side (same label, same score)
    unexcused_r, unexcused_c = [], list(c_left)
    for r in r_left:
        partner = next((c for c in unexcused_c if cand.labels[c] == ref.labels[r]
                        and abs(float(cand.scores[c]) - float(ref.scores[r])) <= tol.score
                        and (_genuinely_tied(ref, r, tol.tie_ulps) or _genuinely_tied(cand, c, tol.tie_ulps))),
                       None)
        if partner is not None:
            unexcused_c.remove(partner)
            excusals.append({"why": "tie", "reference": _entry("reference", ref, r),
                             "candidate": _entry("candidate", cand, partner)})
        else:
            unexcused_r.append(r)
    unmatched, unmatched_examples = 0, []
    observed = max((float(np.abs(ref.boxes[r] - cand.boxes[c]).max()) for r, c in judged), default=0.0)
    for side, dets, other, left in (("reference", ref, cand, unexcused_r), ("candidate", cand, ref, unexcused_c)):
        for i in left:
            if _at_cutoff(float(dets.scores[i]), other, cap, score_threshold, tol.score):
                excusals.append({"why": "cut-off", side: _entry(side, dets, i)})
            elif _at_nms_cutoff(dets, i, other, nms_threshold, min(observed, tol.box_px)):
                excusals.append({"why": "NMS cut-off", side: _entry(side, dets, i)})
            else:
                unmatched += 1
                if len(unmatched_examples) < 3:
                    unmatched_examples.append(_which(dets, i, "eager" if side == "reference" else "export")
                                              + " has no partner")
    size = (ref.image_size[1], ref.image_size[0])
    rep = ImageParity(probe, size, len(ref), len(cand), len(pairs), unmatched, len(excusals), excusals=excusals,
                      unmatched_examples=unmatched_examples)
    _compare_pairs(rep, ref, cand, pairs, judged, tol)
    rep.passed = not rep.reasons
    return rep


def _compare_pairs(rep: ImageParity, ref: Detections, cand: Detections, pairs: list, judged: list,
                   tol: Tolerances) -> None:
    presence = {"masks": (ref.has_masks, cand.has_masks),
                "keypoints": (ref.keypoints is not None, cand.keypoints is not None)}
    for output, (in_ref, in_cand) in presence.items():  # an output one side lacks is a broken export
        if in_ref != in_cand:
            rep.reasons.append(f"{output} missing from the {'export' if in_ref else 'reference'}")
    if rep.unmatched:
        rep.reasons.append(f"{rep.unmatched} unmatched detection(s): " + "; ".join(rep.unmatched_examples))
    if pairs:
        ri, ci = np.array(pairs).T
        rep.max_box_diff_px = float(np.abs(ref.boxes[ri] - cand.boxes[ci]).max())
        rep.max_score_diff = float(np.abs(ref.scores[ri] - cand.scores[ci]).max())
    if not judged:
        return
    ri, ci = np.array(judged).T
    box_diffs = np.abs(ref.boxes[ri] - cand.boxes[ci]).max(axis=1)
    score_diffs = np.abs(ref.scores[ri] - cand.scores[ci])
    if box_diffs.max() > tol.box_px:
        rep.reasons.append(f"box differs by {box_diffs.max():.3g} px > {tol.box_px} "
                           f"({_which(ref, ri[box_diffs.argmax()])})")
    if score_diffs.max() > tol.score:
        rep.reasons.append(f"score differs by {score_diffs.max():.3g} > {tol.score} "
                           f"({_which(ref, ri[score_diffs.argmax()])})")
    if ref.mask_probs is not None and cand.mask_probs is not None:
        prob_diffs = np.abs(ref.mask_probs[ri] - cand.mask_probs[ci]).reshape(len(ri), -1).max(axis=1)
        rep.max_mask_prob_diff = float(prob_diffs.max())
        if rep.max_mask_prob_diff > tol.mask_prob:
            rep.reasons.append(f"soft mask probability differs by {rep.max_mask_prob_diff:.3g} > {tol.mask_prob} "
                               f"({_which(ref, ri[prob_diffs.argmax()])})")
    if ref.has_masks and cand.has_masks:
        sides = np.minimum(ref.boxes[ri, 2] - ref.boxes[ri, 0], ref.boxes[ri, 3] - ref.boxes[ri, 1])
        # with probabilities both masks are pasted into one box, so a box of any width compares; binary masks
        # pasted by their own boxes flip whole columns on thin boxes (see Tolerances)
        both_soft = ref.mask_probs is not None and cand.mask_probs is not None
        wide = np.ones(len(ri), bool) if both_soft else sides >= tol.mask_min_box_px
        rep.masks_not_compared = int((~wide).sum())
        ious = [_decisive_iou(ref, cand, r, c, tol) for r, c in zip(ri[wide], ci[wide])]
        if ious:
            rep.mask_iou_min, rep.mask_iou_mean = float(min(ious)), float(np.mean(ious))
            if rep.mask_iou_min < tol.mask_iou_min:
                rep.reasons.append(f"mask IoU {rep.mask_iou_min:.4f} < {tol.mask_iou_min} "
                                   f"({_which(ref, ri[wide][int(np.argmin(ious))])})")
    if ref.keypoints is not None and cand.keypoints is not None:
        _compare_keypoints(rep, ref, cand, ri, ci, tol)


def _compare_keypoints(rep: ImageParity, ref: Detections, cand: Detections, ri, ci, tol: Tolerances) -> None:
    """A keypoint is the argmax of its heatmap: where two cells of a briefly trained model's flat heatmap are equal
    to float noise, the runtimes may pick different cells although the peak value (the keypoint's score) is the
    same on both sides. Such a keypoint is excused and listed; more than ``keypoint_tie_share`` of an image's
    keypoints moving, or any moving with a different peak value, fails (a decoding bug moves them all)."""
    diff = np.abs(ref.keypoints[ri, :, :2] - cand.keypoints[ci, :, :2]).max(axis=2)  # (pairs, keypoints)
    rep.max_keypoint_diff_px = float(diff.max())
    off = diff > tol.keypoint_px
    if not off.any():
        return
    tied = np.zeros_like(off)
    if ref.keypoint_scores is not None and cand.keypoint_scores is not None:
        tied = np.abs(ref.keypoint_scores[ri] - cand.keypoint_scores[ci]) <= tol.score
    if (off & ~tied).any() or off.sum() > max(1, int(tol.keypoint_tie_share * off.size)):
        rep.reasons.append(f"keypoints differ by {rep.max_keypoint_diff_px:.3g} px > {tol.keypoint_px}")
        return
    for p, k in zip(*np.nonzero(off)):
        rep.excusals.append({"why": f"keypoint tie (keypoint {int(k)} moved {float(diff[p, k]):.3g} px, heatmap peak "
                                    f"{float(ref.keypoint_scores[ri[p], k]):.6g} on both sides)",
                             "reference": _entry("reference", ref, int(ri[p]))})
        rep.excused += 1


# -- probes ------------------------------------------------------------------------------------------------------


def default_probes(images: list[Path] | None = None, seed: int = 0, extras: bool = True,
                   skipped: list[str] | None = None) -> list[tuple[str, Image.Image]]:
    """The probe sequence, in this order (the order matters: the blank image precedes a real one in the same
    session): real images of several sizes, blank, real after blank, tiny 64x48, large 2000x1500, grayscale."""
    from detdemo.data.images import open_image
    from detdemo.data.shapes import ShapesConfig, draw_image

    reals = []
    for path in images or []:  # an unreadable file is reported (``skipped``) and the rest still checked
        try:
            reals.append((path.name, open_image(path)))
        except DetDemoError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
    if images and not reals:
        raise DetDemoError(f"none of the {len(images)} probe image(s) could be read: {'; '.join(skipped or [])}")
    if not images:  # synthetic stand-ins at varied sizes and aspect ratios
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


def _worst(rows: list[dict], key: str, pick=max):
    values = [r[key] for r in rows if r[key] is not None]
    return pick(values) if values else None


def family_limits(arch: str, model) -> dict:
    """``run_parity``'s cut-offs for ``arch``'s family, read from the reference ``model``: the detection cap, the
    score floor and the NMS threshold its excusals are judged against."""
    from detdemo.models import get_spec

    family = get_spec(arch).family_info
    return {"cap": family.detection_cap(model), "score_threshold": family.score_floor(model),
            "nms_threshold": family.nms_threshold(model)}


def run_parity(reference, candidates: list, probes: list[tuple[str, Image.Image]], tol: Tolerances,
               cap: int | None = None, score_threshold: float = 0.0, gated: set[str] | None = None,
               nms_threshold: float | None = None) -> dict:
    """Compare every candidate with the reference on every probe; returns a JSON-ready report.

    ``candidates``: predictors, or (name, predictor) pairs (the report's keys; default: the backend's name).
    ``gated``: the names whose per-detection verdict decides ``passed`` (default: all). Reduced-precision files
    are compared and reported but judged by accuracy (``export.accuracy``), not detection by detection."""
    report = {"tolerances": asdict(tol), "backends": {}}
    ref_out = [reference.predict(img) for _name, img in probes]
    for item in candidates:
        name, cand = item if isinstance(item, tuple) else (item.backend, item)
        rows = [asdict(compare(name, ref, cand.predict(img), tol, cap, score_threshold, nms_threshold))
                for (name, img), ref in zip(probes, ref_out)]
        worst = {
            "detections": sum(r["n_reference"] for r in rows),
            "unmatched": sum(r["unmatched"] for r in rows),
            "excused": sum(r["excused"] for r in rows),
            "max_box_diff_px": _worst(rows, "max_box_diff_px"),
            "max_score_diff": _worst(rows, "max_score_diff"),
            "max_mask_prob_diff": _worst(rows, "max_mask_prob_diff"),
            "mask_iou_min": _worst(rows, "mask_iou_min", min),
            "max_keypoint_diff_px": _worst(rows, "max_keypoint_diff_px"),
            "masks_not_compared": sum(r["masks_not_compared"] for r in rows),
        }
        report["backends"][name] = {"file": str(cand.path), "backend": cand.backend,
                                    "precision": getattr(cand, "precision", "fp32"),
                                    "gated": gated is None or name in gated,
                                    "passed": all(r["passed"] for r in rows), "overall": worst, "images": rows}
    report["passed"] = all(b["passed"] for b in report["backends"].values() if b["gated"])
    return report


def _g(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def summary_line(o: dict, tol: dict) -> str:
    """The headline figures of one backend (every pair counted, excused ones included)."""
    line = (f"detections {o['detections']}, unmatched {o['unmatched']}, excused {o['excused']} (listed), "
            f"max box diff {_g(o['max_box_diff_px'])} px, max score diff {_g(o['max_score_diff'])}")
    if o["max_mask_prob_diff"] is not None or o["mask_iou_min"] is not None:
        line += (f", max soft-mask diff {_g(o['max_mask_prob_diff'])}, min mask IoU {_g(o['mask_iou_min'], 6)}"
                 f" ({o['masks_not_compared']} masks of boxes under {tol['mask_min_box_px']} px not compared)")
    if o["max_keypoint_diff_px"] is not None:
        line += f", max keypoint diff {_g(o['max_keypoint_diff_px'])} px"
    return line


def markdown(report: dict) -> str:
    from export.formats import backend_label

    tol = report["tolerances"]
    lines = [f"# Export parity: {'PASS' if report['passed'] else 'FAIL'}", "",
             "Tolerances: " + ", ".join(f"{k}={v}" for k, v in tol.items()), ""]
    for name, b in report["backends"].items():
        verdict = ("PASS" if b["passed"] else "FAIL") if b.get("gated", True) else \
            "reported, not gated (reduced precision: judged by accuracy)"
        lines += [f"## {name} ({backend_label(b.get('backend', name))}, {b.get('precision', 'fp32')}) vs eager: "
                  f"{verdict}", "",
                  summary_line(b["overall"], tol), "",
                  "| probe | size | eager | export | matched | unmatched | excused | box px | score | soft mask | "
                  "mask IoU min / mean | result |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        excused = []
        for r in b["images"]:
            miou = "—" if r["mask_iou_min"] is None else f"{r['mask_iou_min']:.5f} / {r['mask_iou_mean']:.5f}"
            lines.append(f"| {r['probe']} | {r['size'][0]}×{r['size'][1]} | {r['n_reference']} | {r['n_candidate']} | "
                         f"{r['matched']} | {r['unmatched']} | {r['excused']} | {r['max_box_diff_px']:.3g} | "
                         f"{r['max_score_diff']:.3g} | {_g(r['max_mask_prob_diff'])} | {miou} | "
                         f"{'ok' if r['passed'] else '; '.join(r['reasons'])} |")
            excused += [(r["probe"], e) for e in r["excusals"]]
        if excused:
            lines += ["", "Excused detections (each one, with why):", ""]
            for probe, e in excused:
                sides = "; ".join(f"{k} label {v['label']} score {v['score']:.6g} box {v['box']}"
                                  for k, v in e.items() if k != "why")
                lines.append(f"- {probe}: {e['why']}: {sides}")
        lines.append("")
    return "\n".join(lines)


def write_reports(report: dict, out_dir: Path) -> tuple[Path, Path]:
    from detdemo.fileio import write_json, write_text

    return write_json(out_dir / "parity.json", report), write_text(out_dir / "parity.md", markdown(report))
