"""COCO AP re-accumulated over resampled image sets, for paired bootstrap intervals of an AP difference.

An AP measured on a few dozen images moves by whole points when a handful of images change; a gate that compares
two such numbers needs their uncertainty. The bootstrap resamples *images* (with replacement) and recomputes AP on
each resample, the same resamples for both models (paired), so the interval is that of the difference itself.

It must not multiply the evaluation time: pycocotools' ``evaluate()`` already matched every detection to the
ground truth per image and category (``COCOeval.evalImgs``); only ``accumulate()`` depends on which images are in
the set. So the matching is taken once from pycocotools and only the accumulation is redone here, vectorised over
resamples, with each image's multiplicity as a weight. With every weight 1 this is exactly pycocotools'
``accumulate`` + ``summarize``'s AP (tested); a resample counts an image drawn twice twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CategoryTable:
    """One category's detections over all images, in the order pycocotools' ``accumulate`` sorts them."""

    det_image: np.ndarray  # (D,) index of each detection's image
    tps: np.ndarray  # (T, D) true positive at each IoU threshold (matched, not ignored)
    fps: np.ndarray  # (T, D) false positive (unmatched, not ignored)
    gt_per_image: np.ndarray  # (I,) ground truth objects that count (not crowd / ignored), per image


@dataclass(frozen=True)
class MatchTables:
    image_ids: list[int]
    categories: list[CategoryTable]
    rec_thrs: np.ndarray  # (R,) recall thresholds (101 points)


def match_tables(ev) -> MatchTables:
    """The per-image matches of a ``COCOeval`` after ``evaluate()``: area range "all", the largest maxDets (the
    ``AP`` of ``stats[0]``)."""
    p = ev.params
    n_images, n_areas, max_det = len(p.imgIds), len(p.areaRng), p.maxDets[-1]
    n_thr = len(p.iouThrs)
    tables = []
    for k in range(len(p.catIds)):
        base = k * n_areas * n_images  # area index 0 is "all"
        entries = [(i, ev.evalImgs[base + i]) for i in range(n_images) if ev.evalImgs[base + i] is not None]
        gt = np.zeros(n_images)
        for i, e in entries:
            gt[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        if not entries:
            tables.append(CategoryTable(np.zeros(0, int), np.zeros((n_thr, 0), bool), np.zeros((n_thr, 0), bool), gt))
            continue
        scores = np.concatenate([np.asarray(e["dtScores"][:max_det]) for _, e in entries])
        image = np.concatenate([np.full(len(e["dtScores"][:max_det]), i) for i, e in entries]).astype(int)
        order = np.argsort(-scores, kind="mergesort")  # as pycocotools sorts, ties kept in image order
        dtm = np.concatenate([e["dtMatches"][:, :max_det] for _, e in entries], axis=1)[:, order]
        dt_ig = np.concatenate([e["dtIgnore"][:, :max_det] for _, e in entries], axis=1)[:, order].astype(bool)
        matched = dtm != 0
        tables.append(CategoryTable(image[order], matched & ~dt_ig, ~matched & ~dt_ig, gt))
    return MatchTables(list(p.imgIds), tables, np.asarray(p.recThrs))


def tables_without_detections(gt) -> MatchTables:
    """The match tables of an empty result list (pycocotools cannot load one): every category's ground truth per
    image, counted as pycocotools' ``evaluate`` counts it for area range "all" (crowd objects ignored), and no
    detections, so its AP is 0 wherever a category has ground truth."""
    from pycocotools.cocoeval import Params

    p = Params(iouType="bbox")
    image_ids, (low, high) = sorted(gt.getImgIds()), p.areaRng[0]
    row = {image_id: i for i, image_id in enumerate(image_ids)}
    n_thr, tables = len(p.iouThrs), []
    for cat_id in sorted(gt.getCatIds()):
        counts = np.zeros(len(image_ids))
        for ann in gt.loadAnns(gt.getAnnIds(catIds=[cat_id])):
            if not ann.get("iscrowd", 0) and low <= ann["area"] <= high:
                counts[row[ann["image_id"]]] += 1
        tables.append(CategoryTable(np.zeros(0, int), np.zeros((n_thr, 0), bool), np.zeros((n_thr, 0), bool),
                                    counts))
    return MatchTables(image_ids, tables, np.asarray(p.recThrs))


def _category_ap(tab: CategoryTable, weights: np.ndarray, rec_thrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AP of this category per resample, whether it counts: it has ground truth in that resample)."""
    n_pos = weights @ tab.gt_per_image  # (B,)
    n_det = tab.tps.shape[1]
    if n_det == 0:
        return np.zeros(len(weights)), n_pos > 0
    w = weights[:, tab.det_image][:, None, :]  # (B, 1, D)
    tp = np.cumsum(w * tab.tps[None], axis=2)  # (B, T, D)
    fp = np.cumsum(w * tab.fps[None], axis=2)
    recall = tp / np.maximum(n_pos, 1e-12)[:, None, None]
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[..., ::-1], axis=2)[..., ::-1]  # pycocotools' envelope
    rows = recall.shape[0] * recall.shape[1]
    flat = recall.reshape(rows, n_det)  # compared exactly as pycocotools does (no offset tricks: 3/10 vs 0.3)
    idx = np.stack([np.searchsorted(row, rec_thrs, side="left") for row in flat])
    padded = np.concatenate([precision.reshape(rows, n_det), np.zeros((rows, 1))], axis=1)  # beyond: precision 0
    q = np.take_along_axis(padded, np.minimum(idx, n_det), axis=1)
    return q.reshape(len(weights), -1).mean(axis=1), n_pos > 0


def weighted_ap(tables: MatchTables, weights: np.ndarray, chunk: int = 100) -> np.ndarray:
    """AP (IoU .50:.95, all areas, 100 detections) for each row of image ``weights`` (B, I); NaN where no category
    has ground truth."""
    weights = np.atleast_2d(np.asarray(weights, float))
    out = np.empty(len(weights))
    for start in range(0, len(weights), chunk):
        w = weights[start:start + chunk]
        total, count = np.zeros(len(w)), np.zeros(len(w))
        for tab in tables.categories:
            ap, valid = _category_ap(tab, w, tables.rec_thrs)
            total += np.where(valid, ap, 0.0)
            count += valid
        out[start:start + chunk] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def resample_weights(n_images: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """(B, I) multiplicities of each image in each resample (a multinomial draw of n_images with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_resamples).astype(float)


@dataclass(frozen=True)
class PairedInterval:
    delta: float  # the AP difference on the full set (exactly pycocotools')
    low: float  # the 95 % interval of the difference over resamples; NaN where unknown (no resample had ground
    high: float  # truth, or a single image whose difference is not 0)
    resamples: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


class PairedBootstrap:
    """One reference's AP over seeded resamples of its images, computed once; every candidate is then resampled
    with the very same image sets (paired), so checking several files costs one re-accumulation each."""

    def __init__(self, reference: MatchTables, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        n = len(reference.image_ids)
        self.reference, self.level, self.seed = reference, level, seed
        self.weights = resample_weights(n, n_resamples, seed)
        self.reference_full = float(weighted_ap(reference, np.ones((1, n)))[0])
        self.reference_resampled = weighted_ap(reference, self.weights)

    def interval(self, candidate: MatchTables) -> PairedInterval:
        """The interval of AP(candidate) - AP(reference) over the shared resamples."""
        if self.reference.image_ids != candidate.image_ids:
            raise ValueError("the two evaluations cover different images; a paired interval needs the same ones")
        n = len(candidate.image_ids)
        delta = float(weighted_ap(candidate, np.ones((1, n)))[0]) - self.reference_full
        diffs = weighted_ap(candidate, self.weights) - self.reference_resampled
        diffs = diffs[~np.isnan(diffs)]
        tail = (1 - self.level) / 2 * 100
        low, high = (np.percentile(diffs, [tail, 100 - tail]) if len(diffs) else (np.nan, np.nan))
        if n < 2 and delta != 0:  # one image is its only resample: a zero-width "interval" that says nothing of
            low = high = np.nan  # other images (it would make the gate a point comparison again); unknown
        return PairedInterval(delta, float(low), float(high), int(len(diffs)))


def paired_delta_interval(reference: MatchTables, candidate: MatchTables, n_resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> PairedInterval:
    """The interval of AP(candidate) - AP(reference) over the same resampled image sets."""
    return PairedBootstrap(reference, n_resamples, seed, level).interval(candidate)
