"""COCO evaluation with pycocotools, for any dataset detdemo can load.

Ground truth is converted from the dataset's own targets (so VOC, Penn-Fudan, held-out splits and shapes are
evaluated exactly like COCO), with original COCO category ids, areas and crowd flags preserved. The numbers are
pycocotools' ``COCOeval`` itself; nothing here re-implements the metric.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from detdemo.data import collate
from detdemo.engine.distributed import DistInfo, all_gather
from detdemo.inference.detections import Detections, Predictor
from detdemo.inference.eager import EagerPredictor

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class EvalResult:
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # iou_type -> STAT_NAMES -> value
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # iou_type -> class -> AP
    summary: dict[str, str] = field(default_factory=dict)  # iou_type -> pycocotools' 12-line text
    num_images: int = 0
    num_detections: int = 0
    # What the figures were computed from, for the evaluation pictures (``detdemo.engine.eval_pictures``); held in
    # memory only, never written: the ground truth, the COCO results entries and each IoU type's COCOeval.
    gt: COCO | None = field(default=None, repr=False)
    detections: list[dict] = field(default_factory=list, repr=False)
    coco_evals: dict[str, COCOeval] = field(default_factory=dict, repr=False)

    def flat(self) -> dict[str, float]:
        """``bbox_AP``, ``segm_AP50``, ... for metrics.jsonl."""
        return {f"{t}_{k}": v for t, s in self.stats.items() for k, v in s.items()}

    def to_dict(self) -> dict:
        return {"stats": self.stats, "per_class": self.per_class, "summary": self.summary,
                "num_images": self.num_images, "num_detections": self.num_detections}


def category_ids(dataset) -> dict[int, int]:
    """label -> category id written to results (the source's own ids for COCO data)."""
    mapping = getattr(dataset, "label_to_category", None)
    return dict(mapping) if mapping else {i: i for i in range(1, dataset.num_classes)}


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def dataset_to_coco(dataset, with_masks: bool) -> COCO:
    """A pycocotools COCO object holding the dataset's ground truth (decoded once per evaluation run)."""
    cats = category_ids(dataset)
    images, anns = [], []
    for idx in range(len(dataset)):
        h, w = dataset.get_height_and_width(idx)
        target = dataset.load_target(idx, h, w)
        image_id = int(target["image_id"])
        images.append({"id": image_id, "height": h, "width": w})
        boxes = target["boxes"].tolist()
        for j, (x0, y0, x1, y1) in enumerate(boxes):
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": cats[int(target["labels"][j])],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(target["area"][j]),
                   "iscrowd": int(target["iscrowd"][j])}
            if with_masks:
                ann["segmentation"] = _rle(target["masks"][j].numpy())
            anns.append(ann)
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": cats[i], "name": n} for i, n in enumerate(dataset.class_names, start=1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def detections_to_coco(det: Detections, image_id: int, cats: dict[int, int]) -> list[dict]:
    """COCO results entries (``bbox`` as x, y, width, height; ``segmentation`` as RLE) for one image."""
    results = []
    for j, (x0, y0, x1, y1) in enumerate(det.boxes.tolist()):
        label = int(det.labels[j])
        r = {"image_id": image_id, "category_id": cats.get(label, label),
             "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(det.scores[j])}
        if det.has_masks:
            r["segmentation"] = _rle(det.mask(j))
        results.append(r)
    return results


def coco_evaluate(gt: COCO, results: list[dict], iou_types: tuple[str, ...], class_names: list[str]) -> EvalResult:
    """Run COCOeval per IoU type; also per-class AP (IoU .50:.95, all areas, 100 detections)."""
    out = EvalResult(num_images=len(gt.getImgIds()), num_detections=len(results), gt=gt, detections=results)
    for iou_type in iou_types:
        if not results:  # pycocotools cannot load an empty result list; no detections means zero recall
            out.stats[iou_type] = dict.fromkeys(STAT_NAMES, 0.0)
            out.per_class[iou_type] = dict.fromkeys(class_names, 0.0)
            out.summary[iou_type] = "no detections"
            continue
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            dt = gt.loadRes([dict(r) for r in results])  # loadRes mutates its input
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out.coco_evals[iou_type] = ev
        out.stats[iou_type] = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
        out.summary[iou_type] = "\n".join(line for line in text.getvalue().splitlines() if line.startswith(" Av"))
        precision = ev.eval["precision"]  # [T, R, K, A, M]
        per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            name = gt.cats[cat_id]["name"]
            per_class[name] = float(p.mean()) if p.size else math.nan
        out.per_class[iou_type] = per_class
    return out


def predict_dataset(predictor: Predictor, dataset, info: DistInfo | None = None, workers: int = 0,
                    progress: bool = True) -> list[dict]:
    """COCO-format detections of ``predictor`` (any runtime) for this rank's share, gathered on every rank."""
    info = info or DistInfo()
    cats = category_ids(dataset)
    indices = list(range(info.rank, len(dataset), info.world_size))
    # Its own generator: evaluating must not advance the training RNG (resume exactness depends on it).
    loader = DataLoader(Subset(dataset, indices), batch_size=1, num_workers=workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    results: list[dict] = []
    for images, targets in tqdm(loader, desc="eval", disable=not (progress and info.is_main), leave=False):
        for image, target in zip(images, targets):
            results.extend(detections_to_coco(predictor.predict(image), int(target["image_id"]), cats))
    return [r for part in all_gather(results, info) for r in part]


def evaluate_predictor(predictor: Predictor, dataset, info: DistInfo | None = None, gt: COCO | None = None,
                       workers: int = 0, progress: bool = True, masks: bool | None = None) -> EvalResult | None:
    """COCO metrics of any predictor on ``dataset``; segm too when both the data and the model have masks.
    Every rank predicts its share; rank 0 returns the result, the others None."""
    info = info or DistInfo()
    results = predict_dataset(predictor, dataset, info, workers, progress)
    if not info.is_main:
        return None
    if masks is None:
        masks = bool(getattr(dataset, "has_masks", False)) and any("segmentation" in r for r in results[:1])
    gt = gt or dataset_to_coco(dataset, with_masks=masks)
    return coco_evaluate(gt, results, ("bbox", "segm") if masks else ("bbox",), dataset.class_names)


def evaluate_model(model, dataset, device: torch.device, info: DistInfo | None = None, gt: COCO | None = None,
                   workers: int = 0, progress: bool = True) -> EvalResult | None:
    """A model being trained, evaluated through the same prediction path as every exported file."""
    model = getattr(model, "module", model)
    predictor = EagerPredictor(model, dataset.class_names, device=device)
    has_masks = bool(getattr(dataset, "has_masks", False)) and _predicts_masks(model)
    return evaluate_predictor(predictor, dataset, info, gt, workers, progress, masks=has_masks)


def _predicts_masks(model) -> bool:
    return getattr(getattr(model, "roi_heads", None), "mask_predictor", None) is not None
