"""COCO instances JSON, as exported by CVAT, Roboflow, Label Studio and COCO itself.

Category ids are often non-contiguous (COCO's own run 1..90 with gaps; tools start at 0 or 1); they are mapped
to labels 1..K in id order, with names and the original ids kept so results can be written back in COCO ids.
Images without annotations stay in the dataset as negatives: they teach the model what is *not* an object.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from detdemo.data.base import (
    Annotation,
    DetectionDataset,
    ImageRecord,
    OffImageBoxes,
    Problems,
    degenerate,
    warn_degenerate,
)
from detdemo.errors import DataError


def segmentation_to_rle(segm, height: int, width: int) -> dict:
    """Polygons, uncompressed RLE (``counts`` a list) or compressed RLE -> one compressed RLE."""
    if isinstance(segm, list):  # polygons
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, height, width)
    if isinstance(segm, dict) and isinstance(segm.get("counts"), str | bytes):
        return segm
    raise ValueError(f"unknown segmentation encoding {type(segm).__name__}")


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO object with 'images', 'annotations', 'categories'")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{path}: not a COCO instances file (missing or invalid: {', '.join(missing)})")
    return data


def _find_image_dir(json_path: Path, root: Path, first_file: str | None) -> Path:
    """The folder the ``file_name`` entries are relative to, by looking where the first one exists."""
    stem = json_path.stem.removeprefix("instances_")
    candidates = [json_path.parent, root / stem, root / "images" / stem, root / "images", root]
    if json_path.parent.name == "annotations":
        candidates.insert(1, json_path.parent.parent / stem)
    if first_file is None:
        return candidates[0]
    for c in candidates:
        if (c / first_file).exists():
            return c
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise DataError(f"{json_path}: image {first_file!r} not found in any of: {tried}")


class CocoDataset(DetectionDataset):
    layout = "coco"

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path | None = None,
        transforms: Callable | None = None,
        classes: list[str] | None = None,
    ) -> None:
        annotation_file = Path(annotation_file)
        super().__init__(annotation_file.parent, transforms)
        self.annotation_file = annotation_file
        data = _load_json(annotation_file)
        where = str(annotation_file)
        try:
            cats = sorted(data["categories"], key=lambda c: c["id"])
            cat_names = {c["id"]: str(c["name"]) for c in cats}
            images = data["images"]
            first = images[0]["file_name"] if images else None
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: malformed category or image entry (missing {exc})") from None
        if classes is not None:  # a fixed class list, e.g. the one a checkpoint was trained with
            unknown = sorted(set(cat_names.values()) - set(classes))
            if unknown:
                raise DataError(f"{where}: categories {unknown} are not among the expected classes {classes}")
            self.classes.extend(classes)
        else:
            self.classes.extend(cat_names.values())
        label_of_name = {n: i for i, n in enumerate(self.classes)}
        self.category_to_label = {cid: label_of_name[n] for cid, n in cat_names.items()}
        self.label_to_category = {v: k for k, v in self.category_to_label.items()}
        self.image_dir = Path(image_dir) if image_dir else _find_image_dir(annotation_file, self.root, first)

        problems = Problems(where)  # checked up front, all at once: not mid-epoch inside a loader worker
        image_ids: set = set()
        for img in images:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise DataError(f"{where}: image entry {img!r:.80} is malformed (needs 'id' and 'file_name')")
            if img["id"] in image_ids:
                problems.add(f"image id {img['id']} is used twice ({img['file_name']})")
            image_ids.add(img["id"])
            if not (self.image_dir / img["file_name"]).is_file():
                problems.add(f"image '{img['file_name']}' not found in {self.image_dir}")
        by_image: dict[int, list[dict]] = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):
            try:
                if ann["category_id"] not in self.category_to_label:
                    problems.add(f"annotation {ann.get('id', k)} uses category_id {ann['category_id']} which is "
                                 "not in 'categories'")
                    continue
                if ann["image_id"] not in image_ids:
                    problems.add(f"annotation {ann.get('id', k)} refers to image id {ann['image_id']}, which is not "
                                 "in 'images'")
                    continue
                by_image[ann["image_id"]].append(ann)
            except (KeyError, TypeError) as exc:
                raise DataError(f"{where}: annotation #{k} is malformed (missing {exc})") from None
        problems.raise_if_any()

        self.annotations: list[list[dict]] = []
        masks_present = []
        dropped, dropped_files = 0, []
        off_image = OffImageBoxes()
        for img in images:
            try:
                rec = ImageRecord(self.image_dir / img["file_name"], int(img["id"]), img.get("height"),
                                  img.get("width"))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{where}: image entry {img!r:.80} is malformed ({exc})") from None
            anns = by_image.get(rec.image_id, [])
            boxes = self._boxes(anns, where)
            bad = degenerate(boxes)
            if bad.any():
                dropped += int(bad.sum())
                dropped_files.append(img["file_name"])
                anns = [a for a, b in zip(anns, bad) if not b]
                boxes = boxes[~bad]
            off_image.add(img["file_name"], boxes, rec.height, rec.width)
            masks_present.extend(bool(a.get("segmentation")) for a in anns)
            self.records.append(rec)
            self.annotations.append(anns)
        warn_degenerate(where, dropped, dropped_files)
        off_image.warn(where)
        self.has_masks = bool(masks_present) and all(masks_present)
        if masks_present and any(masks_present) and not self.has_masks:
            warnings.warn(f"{where}: some annotations lack 'segmentation'; loading boxes only", stacklevel=2)
        self.has_keypoints = any("keypoints" in a for anns in self.annotations for a in anns)

    def num_objects(self) -> int:
        return sum(len(anns) for anns in self.annotations)

    @staticmethod
    def _boxes(anns: list[dict], where: str) -> np.ndarray:
        try:
            xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{where}: annotation with missing or malformed 'bbox' ({exc})") from None
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)

    def annotation(self, idx: int, height: int, width: int) -> Annotation:
        anns = self.annotations[idx]
        if not anns:
            return Annotation.empty(self.has_masks, height, width)
        boxes = self._boxes(anns, str(self.annotation_file))
        ann = Annotation(
            boxes=boxes,
            labels=np.array([self.category_to_label[a["category_id"]] for a in anns], np.int64),
            iscrowd=np.array([int(a.get("iscrowd", 0)) for a in anns], np.int64),
            area=np.array([a.get("area", (b[2] - b[0]) * (b[3] - b[1])) for a, b in zip(anns, boxes)],
                          np.float32),
        )
        if self.has_masks:
            try:
                rles = [segmentation_to_rle(a["segmentation"], height, width) for a in anns]
            except (ValueError, TypeError, KeyError) as exc:
                raise DataError(
                    f"{self.annotation_file}: bad segmentation for image {self.records[idx].path.name} ({exc})"
                ) from None
            masks = mask_utils.decode(rles)  # H, W, N
            ann.masks = np.ascontiguousarray(masks.transpose(2, 0, 1))
            if ann.masks.shape[1:] != (height, width):
                raise DataError(
                    f"{self.annotation_file}: masks of {self.records[idx].path.name} are "
                    f"{ann.masks.shape[2]}x{ann.masks.shape[1]} but the image is {width}x{height}"
                )
        if self.has_keypoints:
            kps = [np.array(a.get("keypoints", []), np.float32).reshape(-1, 3) for a in anns]
            k = max(len(x) for x in kps)
            ann.keypoints = np.stack([np.pad(x, ((0, k - len(x)), (0, 0))) for x in kps])
        return ann
