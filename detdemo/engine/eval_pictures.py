"""Pictures of one evaluation, and the numbers behind them: precision-recall curves, a confusion matrix with a
background row and column, per-class AP bars, and a gallery of the images with the most mistakes.

Everything comes from the evaluation that produced the COCO figures (``EvalResult``: its ground truth, its COCO
results entries and each IoU type's ``COCOeval``), so drawing the pictures never runs the model again. The curves
are ``COCOeval.eval['precision']`` itself (all areas, 100 detections per image): nothing is re-measured. The
confusion matrix and the gallery need a decision per detection, which AP does not make (it sweeps every score), so
they are taken at one stated score threshold and IoU 0.5, on boxes (a mask model is judged by its boxes here). A
mask model's gallery draws the masks too, from the same COCO entries the segm figures were computed from.

The numbers go to ``pictures.json`` beside the PNGs, so tests and the app read back exactly what was drawn.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from detdemo.fileio import atomic_path, write_json

PICTURES_JSON = "pictures.json"
PR_CURVES_PNG = "pr_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS_AP_PNG = "per_class_ap.png"
GALLERY_DIR = "gallery"
MODEL_EVALUATION = "evaluation.json"  # a model folder's (run, export, bundled, published) evaluation of itself
BACKGROUND = "background"
MATCH_IOU = 0.5
DEFAULT_SCORE_THRESHOLD = 0.5  # the confusion matrix's and the gallery's (AP uses every detection)
GALLERY_SIZE = 6
GALLERY_WIDTH_PX = 520  # gallery pictures are this wide (small PNGs; room for the legend under small images)
# Detection outcomes, and how the gallery draws each (ground truth dashed, detections solid).
CORRECT, WRONG_CLASS, FALSE_ALARM, IGNORED = "correct", "wrong class", "false alarm", "ignored (crowd)"
FOUND, MISSED = "found", "missed"
WRONG_CLASS_COLOUR, FALSE_ALARM_COLOUR = (255, 120, 0), (255, 0, 0)
GT_FOUND_COLOUR, GT_MISSED_COLOUR = "#ffffff", "#ffff00"  # dashed, over a black stroke: visible on any image
GT_MASK_LINESTYLE = ":"  # a ground-truth mask's outline (dotted: its box is dashed)
MASK_ALPHA = 0.45  # a detected mask's fill, as the app draws it
GALLERY_STYLES = ("ground truth dashed (white found, yellow missed or given the wrong class), detections solid "
                  "(class colour when right, orange for the wrong class, red for a false alarm); for a mask model, "
                  "each ground-truth mask as a dotted outline in its box's colour and each detected mask filled "
                  "translucent in its class colour")


def pictures_dir(json_path: str | Path) -> Path:
    """Where the pictures of an evaluation written to ``json_path`` go: a folder beside it, named like it without
    the extension (``eval_val.json`` -> ``eval_val/``; a model folder's ``evaluation.json`` -> ``evaluation/``)."""
    path = Path(json_path)
    return path.with_suffix("") if path.suffix else path.with_name(path.name + "_pictures")


MODEL_PICTURES_DIR = pictures_dir(MODEL_EVALUATION).name


# -- numbers ------------------------------------------------------------------------------------------------------
@dataclass
class ImageOutcome:
    """One image's detections (at the threshold) matched to its ground truth at IoU 0.5."""

    image_id: int
    gt_boxes: np.ndarray  # (G, 4) XYXY, crowd regions left out
    gt_labels: np.ndarray  # (G,) class index 0..K-1
    gt_status: list[str]  # FOUND / WRONG_CLASS / MISSED
    det_boxes: np.ndarray  # (D, 4) XYXY, detections at or above the threshold, by descending score
    det_labels: np.ndarray
    det_scores: np.ndarray
    det_status: list[str]  # CORRECT / WRONG_CLASS / FALSE_ALARM / IGNORED
    det_match: list[int]  # the ground truth each detection matched, -1 for none
    # A mask model's masks as COCO segmentations (RLE), aligned with the boxes above; decoded only when drawn.
    gt_masks: list[dict] | None = None
    det_masks: list[dict] | None = None

    def count(self, status: str) -> int:
        return self.det_status.count(status) if status != MISSED else self.gt_status.count(MISSED)

    @property
    def mistakes(self) -> int:
        return self.count(MISSED) + self.count(FALSE_ALARM) + self.count(WRONG_CLASS)


def _xyxy(xywh: list) -> list[float]:
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch
    from torchvision.ops import box_iou

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


def _inside_fraction(det: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share of each detection's area inside each crowd region (COCO's rule for crowd ground truth)."""
    if not len(det) or not len(regions):
        return np.zeros((len(det), len(regions)))
    x0 = np.maximum(det[:, None, 0], regions[None, :, 0])
    y0 = np.maximum(det[:, None, 1], regions[None, :, 1])
    x1 = np.minimum(det[:, None, 2], regions[None, :, 2])
    y1 = np.minimum(det[:, None, 3], regions[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = np.clip((det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1]), 1e-12, None)
    return inter / area[:, None]


def match_image(image_id: int, gt_boxes: np.ndarray, gt_labels: np.ndarray, det_boxes: np.ndarray,
                det_labels: np.ndarray, det_scores: np.ndarray, score_threshold: float,
                crowd_boxes: np.ndarray | None = None, iou_threshold: float = MATCH_IOU,
                gt_masks: list[dict] | None = None, det_masks: list[dict] | None = None) -> ImageOutcome:
    """Greedy matching by descending score, as COCOeval matches: first each detection to the best-overlapping
    unmatched ground truth of its own class; then the detections left over to unmatched ground truth of another
    class (wrong class). A detection still unmatched is a false alarm unless it lies in a crowd region; ground
    truth still unmatched is missed. So the matrix's diagonal is COCO's true positives at this threshold.
    ``gt_masks``/``det_masks`` (COCO segmentations aligned with the boxes) only ride along, for the gallery."""
    keep = np.flatnonzero(det_scores >= score_threshold)
    keep = keep[np.argsort(-det_scores[keep], kind="stable")]
    det_masks = None if det_masks is None else [det_masks[k] for k in keep]
    det_boxes, det_labels, det_scores = det_boxes[keep].reshape(-1, 4), det_labels[keep], det_scores[keep]
    gt_boxes = gt_boxes.reshape(-1, 4)
    ious = _iou(det_boxes, gt_boxes)
    gt_taken = np.full(len(gt_boxes), -1)
    det_match = [-1] * len(det_boxes)
    det_status = [FALSE_ALARM] * len(det_boxes)
    for same_class in (True, False):
        for d in range(len(det_boxes)):
            if det_match[d] >= 0:
                continue
            ok = (gt_taken < 0) & (ious[d] >= iou_threshold)
            ok &= (gt_labels == det_labels[d]) if same_class else (gt_labels != det_labels[d])
            if ok.any():
                g = int(np.flatnonzero(ok)[np.argmax(ious[d][ok])])
                gt_taken[g], det_match[d] = d, g
                det_status[d] = CORRECT if same_class else WRONG_CLASS
    if crowd_boxes is not None and len(crowd_boxes):
        inside = _inside_fraction(det_boxes, crowd_boxes.reshape(-1, 4)).max(axis=1)
        det_status = [IGNORED if s == FALSE_ALARM and inside[d] >= iou_threshold else s
                      for d, s in enumerate(det_status)]
    gt_status = [MISSED if t < 0 else (FOUND if det_status[t] == CORRECT else WRONG_CLASS) for t in gt_taken]
    return ImageOutcome(image_id, gt_boxes, gt_labels, gt_status, det_boxes, det_labels, det_scores, det_status,
                        det_match, gt_masks, det_masks)


def confusion_matrix(outcomes: list[ImageOutcome], num_classes: int) -> np.ndarray:
    """(K+1)x(K+1) counts: rows are the ground truth's class, columns the detection's; the last row and column
    are background (a false alarm is background -> class, a miss class -> background)."""
    bg = num_classes
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for o in outcomes:
        for d, status in enumerate(o.det_status):
            if status in (CORRECT, WRONG_CLASS):
                m[o.gt_labels[o.det_match[d]], o.det_labels[d]] += 1
            elif status == FALSE_ALARM:
                m[bg, o.det_labels[d]] += 1
        for g, status in enumerate(o.gt_status):
            if status == MISSED:
                m[o.gt_labels[g], bg] += 1
    return m


def match_evaluation(gt, detections: list[dict], score_threshold: float,
                     masks: bool = False) -> tuple[list[str], list[ImageOutcome]]:
    """Class names (the ground truth's category order) and every image's outcome, from a pycocotools ``COCO``
    ground truth and COCO results entries; with ``masks``, each outcome keeps the masks (as RLE) for the gallery."""
    cats = [c["id"] for c in gt.dataset["categories"]]
    index = {cat: k for k, cat in enumerate(cats)}
    by_image: dict[int, list[dict]] = {}
    for r in detections:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    outcomes = []
    for image_id in sorted(gt.getImgIds()):
        anns = gt.imgToAnns.get(image_id, [])
        plain = [a for a in anns if not a.get("iscrowd")]
        crowd = [a for a in anns if a.get("iscrowd")]
        dets = [r for r in by_image.get(image_id, []) if int(r["category_id"]) in index]
        gt_masks = det_masks = None
        if masks:
            gt_masks = [gt.annToRLE(a) if a.get("segmentation") else None for a in plain]
            det_masks = [r.get("segmentation") for r in dets]
        outcomes.append(match_image(
            image_id,
            np.array([_xyxy(a["bbox"]) for a in plain], dtype=np.float64).reshape(-1, 4),
            np.array([index[a["category_id"]] for a in plain], dtype=np.int64),
            np.array([_xyxy(r["bbox"]) for r in dets], dtype=np.float64).reshape(-1, 4),
            np.array([index[int(r["category_id"])] for r in dets], dtype=np.int64),
            np.array([float(r["score"]) for r in dets], dtype=np.float64),
            score_threshold,
            np.array([_xyxy(a["bbox"]) for a in crowd], dtype=np.float64).reshape(-1, 4),
            gt_masks=gt_masks, det_masks=det_masks))
    return [gt.cats[c]["name"] for c in cats], outcomes


def precision_curves(ev, class_names: list[str]) -> dict:
    """``COCOeval.eval['precision']`` [T, R, K, A, M] sliced at all areas and the largest maxDets: per class, the
    101-point curve at IoU 0.5 and its mean over IoU 0.5:0.95 (None for a class with no ground truth)."""
    p = ev.params
    a = p.areaRngLbl.index("all")
    m = len(p.maxDets) - 1
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - MATCH_IOU)))
    precision = ev.eval["precision"]
    names = {cat: ev.cocoGt.cats[cat]["name"] for cat in p.catIds}
    at50, mean = {}, {}
    for k, cat in enumerate(p.catIds):
        curve = precision[:, :, k, a, m]
        valid = bool((curve > -1).all())
        at50[names[cat]] = curve[t50].tolist() if valid else None
        mean[names[cat]] = curve.mean(axis=0).tolist() if valid else None
    order = [n for n in class_names if n in at50]
    return {"recall": np.asarray(p.recThrs).tolist(), "iou_0.50": {n: at50[n] for n in order},
            "iou_0.50:0.95": {n: mean[n] for n in order}}


def _ap(curve: list[float] | None) -> float:
    return float(np.mean(curve)) if curve is not None else math.nan


@dataclass
class PictureNumbers:
    """What the pictures show, as written to ``pictures.json``."""

    class_names: list[str]
    score_threshold: float
    iou_threshold: float
    confusion: list[list[int]]  # (K+1)x(K+1): rows ground truth, columns detections, last = background
    curves: dict[str, dict] = field(default_factory=dict)  # iou type -> precision_curves()
    per_class_ap: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # type -> class -> AP, AP50
    images: list[dict] = field(default_factory=list)  # per image: id, file, objects, detections, mistakes
    gallery: list[dict] = field(default_factory=list)  # drawn images: picture file, source image, counts
    files: dict[str, str] = field(default_factory=dict)  # what -> file name in the pictures folder
    boxes_only_matrix: bool = True  # the matrix and gallery judge boxes (so a mask model's too)
    gallery_masks: bool = False  # the gallery draws masks too (a mask model evaluated on data with masks)

    @property
    def matrix_labels(self) -> list[str]:
        return [*self.class_names, BACKGROUND]

    def to_dict(self) -> dict:
        return {**asdict(self), "matrix_labels": self.matrix_labels,
                "matrix_axes": {"rows": "ground truth", "columns": "detections"}}


def compute_numbers(result, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                    image_files: dict[int, str] | None = None) -> tuple[PictureNumbers, list[ImageOutcome]]:
    """The pictures' numbers from one ``EvalResult`` (which keeps its ground truth, detections and COCOeval)."""
    if result.gt is None:
        raise ValueError("this evaluation kept no ground truth (EvalResult from an older detdemo?)")
    masks = "segm" in result.stats  # (a model that found nothing has no segm COCOeval, but its misses have masks)
    names, outcomes = match_evaluation(result.gt, result.detections, score_threshold, masks=masks)
    numbers = PictureNumbers(names, float(score_threshold), MATCH_IOU,
                             confusion_matrix(outcomes, len(names)).tolist(), gallery_masks=masks)
    for iou_type, ev in result.coco_evals.items():
        curves = precision_curves(ev, names)
        numbers.curves[iou_type] = curves
        numbers.per_class_ap[iou_type] = {n: {"AP": result.per_class[iou_type].get(n, math.nan),
                                              "AP50": _ap(curves["iou_0.50"][n])} for n in curves["iou_0.50"]}
    files = image_files or {}
    numbers.images = [{"image_id": o.image_id, "file": files.get(o.image_id, ""), "objects": len(o.gt_boxes),
                       "detections": len(o.det_boxes), "missed": o.count(MISSED),
                       "false_alarms": o.count(FALSE_ALARM), "wrong_class": o.count(WRONG_CLASS)}
                      for o in outcomes]
    return numbers, outcomes


# -- pictures -----------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 90, palette: bool = False) -> None:
    """PNG through the atomic writer; ``palette`` quantises a photo-like figure to 256 colours (a third the size)."""
    plt = _pyplot()
    if palette:
        from PIL import Image

        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format="png")
        image = Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", optimize=True)
    else:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def _class_rgb(k: int) -> tuple[float, float, float]:
    from detdemo.engine.draw import class_colour

    return tuple(c / 255 for c in class_colour(k + 1))


def plot_pr_curves(numbers: PictureNumbers, path: Path) -> Path:
    plt = _pyplot()
    types = list(numbers.curves) or ["bbox"]
    fig, axes = plt.subplots(len(types), 2, figsize=(10, 4 * len(types)), squeeze=False)
    for row, iou_type in zip(axes, types):
        curves = numbers.curves.get(iou_type)
        for ax, key, title in zip(row, ("iou_0.50", "iou_0.50:0.95"), ("IoU 0.50", "mean over IoU 0.50:0.95")):
            ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{iou_type}, {title}")
            ax.grid(alpha=0.3)
            if curves is None:
                ax.text(0.5, 0.5, "no detections", ha="center", va="center")
                continue
            for k, name in enumerate(numbers.class_names):
                curve = curves[key].get(name)
                if curve is not None:
                    ax.plot(curves["recall"], curve, color=_class_rgb(k), label=f"{name} (AP {_ap(curve):.3f})")
            if ax.lines:
                ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("Precision-recall per class (COCOeval's precision, all areas, 100 detections per image)",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_confusion(numbers: PictureNumbers, path: Path, masks: bool = False) -> Path:
    plt = _pyplot()
    counts = np.asarray(numbers.confusion)
    labels = numbers.matrix_labels
    n = len(labels)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    size = max(4.5, 0.7 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if i == n - 1 and j == n - 1:
                ax.text(j, i, "—", ha="center", va="center", color="grey")
                continue
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="detected as", ylabel="ground truth")
    what = "boxes of a mask model" if masks else "boxes"
    ax.set_title(f"Confusion matrix: {what}, IoU ≥ {numbers.iou_threshold:g}, score ≥ {numbers.score_threshold:g}\n"
                 "last column: missed; last row: false alarms; colour: share of the row", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_per_class_ap(numbers: PictureNumbers, path: Path) -> Path:
    plt = _pyplot()
    names = numbers.class_names
    bars = [(f"{t} {metric}", t, metric) for t in numbers.per_class_ap for metric in ("AP", "AP50")]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names) * max(1, len(bars)) / 2 + 2), 4))
    width = 0.8 / max(1, len(bars))
    x = np.arange(len(names))
    for b, (label, iou_type, metric) in enumerate(bars):
        values = [numbers.per_class_ap[iou_type].get(n, {}).get(metric, math.nan) for n in names]
        shown = [0.0 if math.isnan(v) else v for v in values]
        rects = ax.bar(x + (b - (len(bars) - 1) / 2) * width, shown, width, label=label)
        ax.bar_label(rects, labels=["—" if math.isnan(v) else f"{v:.2f}" for v in values], fontsize=7, padding=1)
    if not bars:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set(ylabel="AP", ylim=(0, 1.25), yticks=np.linspace(0, 1, 6),
           title="AP per class (AP: IoU 0.50:0.95; AP50: IoU 0.50)")
    if bars:
        ax.legend(fontsize=8, ncols=len(bars), loc="upper center")  # above the bars: they stop at 1
    fig.tight_layout()
    _save(fig, path)
    return path


def _outlined(width: float) -> list:
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=width + 2, foreground="black"), patheffects.Normal()]


def _legend_handles(masks: bool = False):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=GT_FOUND_COLOUR, ls="--", lw=2, label="ground truth, found",
                      path_effects=_outlined(2)),
               Line2D([], [], color=GT_MISSED_COLOUR, ls="--", lw=2.5, label="ground truth, missed or wrong class",
                      path_effects=_outlined(2.5)),
               Line2D([], [], color="grey", lw=3, label="detection, correct (class colour)"),
               Line2D([], [], color=np.array(WRONG_CLASS_COLOUR) / 255, lw=3, label="detection, wrong class"),
               Line2D([], [], color=np.array(FALSE_ALARM_COLOUR) / 255, lw=3, label="detection, false alarm")]
    if masks:
        handles += [Line2D([], [], color=GT_FOUND_COLOUR, ls=GT_MASK_LINESTYLE, lw=2,
                           label="ground-truth mask (outline, its box's colour)", path_effects=_outlined(2)),
                    Patch(facecolor="grey", alpha=MASK_ALPHA, label="detected mask (filled, class colour)")]
    return handles


def _mask_at(segmentation: dict | None, size: tuple[int, int]) -> np.ndarray:
    """A COCO segmentation (RLE) as a boolean mask of ``size`` (height, width): decoded at the image's own size, then
    scaled as the image was (bilinear, kept where at least half covered). All False when there is none."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    if not segmentation:
        return np.zeros(size, dtype=bool)
    full = mask_utils.decode(segmentation)
    if full.shape == size:
        return full.astype(bool)
    scaled = Image.fromarray(full * np.uint8(255)).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(scaled) >= 128


def draw_outcome(image, outcome: ImageOutcome, class_names: list[str], path: Path, title: str) -> Path:
    """One gallery picture: detections drawn by ``draw_detections`` (solid boxes, ``class: score``; wrong class in
    orange, false alarms in red; a mask model's masks filled translucent in the class colour), ground truth on top
    as dashed boxes (white found, yellow missed or taken by a detection of another class) and, for a mask model,
    each ground-truth mask's dotted outline in its box's colour; and a legend explaining the styles."""
    from PIL import Image

    from detdemo.engine.draw import draw_detections, image_to_tensor
    from detdemo.inference.detections import Detections

    scale = GALLERY_WIDTH_PX / image.width
    image = image.resize((GALLERY_WIDTH_PX, round(image.height * scale)), Image.Resampling.BILINEAR)
    size = (image.height, image.width)
    canvas = image_to_tensor(image)
    colour = {WRONG_CLASS: WRONG_CLASS_COLOUR, FALSE_ALARM: FALSE_ALARM_COLOUR}
    masks = outcome.det_masks is not None or outcome.gt_masks is not None
    for statuses in ((CORRECT, IGNORED), (WRONG_CLASS,), (FALSE_ALARM,)):
        keep = np.array([s in statuses for s in outcome.det_status], dtype=bool)
        if not keep.any():
            continue
        drawn = None
        if outcome.det_masks is not None:
            drawn = np.stack([_mask_at(outcome.det_masks[d], size) for d in np.flatnonzero(keep)])
        det = Detections((outcome.det_boxes[keep] * scale).astype(np.float32), outcome.det_labels[keep] + 1,
                         outcome.det_scores[keep].astype(np.float32), class_names, masks=drawn, image_size=size)
        matched = None if statuses[0] == CORRECT else np.zeros(len(det), dtype=bool)
        canvas = draw_detections(canvas, det, masks=drawn is not None, mask_alpha=MASK_ALPHA, matched=matched,
                                 unmatched_colour=colour.get(statuses[0], (255, 0, 0)))
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    dpi, strip = 80, 1.45 if masks else 1.1  # inches below the image for the caption and the legend
    height = image.height / dpi + strip
    fig = plt.figure(figsize=(image.width / dpi, height), dpi=dpi)
    ax = fig.add_axes((0, strip / height, 1, 1 - strip / height))
    ax.imshow(canvas.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    for (x0, y0, x1, y1), status in zip(outcome.gt_boxes * scale, outcome.gt_status):
        found = status == FOUND
        width = 1.5 if found else 2.5
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=width,
                               edgecolor=GT_FOUND_COLOUR if found else GT_MISSED_COLOUR,
                               path_effects=_outlined(width)))
    for segmentation, status in zip(outcome.gt_masks or [], outcome.gt_status):
        mask = _mask_at(segmentation, size)
        if not mask.any():
            continue
        found = status == FOUND
        width = 1.5 if found else 2.0
        outline = ax.contour(mask.astype(np.float32), levels=[0.5], linestyles=GT_MASK_LINESTYLE, linewidths=width,
                             colors=[GT_FOUND_COLOUR if found else GT_MISSED_COLOUR])
        outline.set_path_effects(_outlined(width))
    fig.legend(handles=_legend_handles(masks), loc="lower center", ncols=2, fontsize=7.5, frameon=False,
               title=title, title_fontsize=8, handlelength=3.5)
    _save(fig, path, dpi=dpi, palette=True)
    return path


def _caption(outcome: ImageOutcome, file: str, score_threshold: float) -> str:
    return (f"{Path(file).name or outcome.image_id}: {outcome.count(MISSED)} missed, "
            f"{outcome.count(FALSE_ALARM)} false alarm(s), {outcome.count(WRONG_CLASS)} wrong class "
            f"(score ≥ {score_threshold:g}, IoU ≥ {MATCH_IOU:g})")


def image_files(dataset) -> dict[int, str]:
    """image id -> image file, for a detdemo dataset (``records``); empty for anything else."""
    return {int(r.image_id): str(r.path) for r in getattr(dataset, "records", [])}


def write_pictures(result, folder: str | Path, dataset=None, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                   gallery_size: int = GALLERY_SIZE) -> PictureNumbers:
    """Write every picture of ``result`` into ``folder`` (created; earlier gallery pictures replaced) and
    ``pictures.json`` with their numbers. ``dataset`` gives the gallery its image files (no gallery without)."""
    from detdemo.data.images import open_image

    folder = Path(folder)
    files = image_files(dataset) if dataset is not None else {}
    numbers, outcomes = compute_numbers(result, score_threshold, files)
    masks = "segm" in result.coco_evals
    plot_pr_curves(numbers, folder / PR_CURVES_PNG)
    plot_confusion(numbers, folder / CONFUSION_PNG, masks=masks)
    plot_per_class_ap(numbers, folder / PER_CLASS_AP_PNG)
    numbers.files = {"pr_curves": PR_CURVES_PNG, "confusion_matrix": CONFUSION_PNG, "per_class_ap": PER_CLASS_AP_PNG}
    gallery = folder / GALLERY_DIR
    for old in gallery.glob("*.png") if gallery.is_dir() else []:
        old.unlink()  # a previous evaluation's worst images are not this one's
    worst = sorted((o for o in outcomes if o.mistakes and o.image_id in files),
                   key=lambda o: (-o.mistakes, o.image_id))[:gallery_size]
    for rank, o in enumerate(worst, start=1):
        source = files[o.image_id]
        name = f"{rank:02d}_{Path(source).stem}.png"
        draw_outcome(open_image(source), o, numbers.class_names, gallery / name,
                     _caption(o, source, score_threshold))
        numbers.gallery.append({"file": f"{GALLERY_DIR}/{name}", "image": Path(source).name,
                                "image_id": o.image_id, "missed": o.count(MISSED),
                                "false_alarms": o.count(FALSE_ALARM), "wrong_class": o.count(WRONG_CLASS),
                                "caption": _caption(o, source, score_threshold)})
        if numbers.gallery_masks:  # how many masks the picture draws: outlined ground truth, filled detections
            numbers.gallery[-1]["masks"] = {"ground_truth": sum(bool(m) for m in o.gt_masks or []),
                                            "detections": sum(bool(m) for m in o.det_masks or [])}
    write_json(folder / PICTURES_JSON, numbers.to_dict())
    return numbers


CHARTS = ((PR_CURVES_PNG, "Precision-recall per class"), (CONFUSION_PNG, "Confusion matrix"),
          (PER_CLASS_AP_PNG, "AP per class"))


def listed_pictures(folder: str | Path) -> list[tuple[str, str]]:
    """(file relative to ``folder``, caption) of each picture there: the charts, then the gallery, worst first;
    empty when the folder holds no ``pictures.json``."""
    folder = Path(folder)
    numbers = read_pictures(folder)
    if numbers is None:
        return []
    listed = [(name, caption) for name, caption in CHARTS]
    listed += [(g["file"], g.get("caption", g["file"])) for g in numbers.get("gallery", [])]
    return [(name, caption) for name, caption in listed if (folder / name).is_file()]


def read_pictures(folder: str | Path) -> dict | None:
    """``pictures.json`` of a pictures folder, or None when there is none (or it cannot be read)."""
    import json

    path = Path(folder) / PICTURES_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
