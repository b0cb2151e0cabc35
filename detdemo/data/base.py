"""The one dataset contract every loader fulfils: the tutorial's ``(image, target)`` pairs.

Loaders only parse their annotation format into ``Annotation`` records; this base turns a record into tensors,
drops degenerate boxes (counted, warned once) and applies transforms, so every format behaves the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from detdemo.data.images import image_size, open_image, pil_to_tensor_image
from detdemo.data.transforms import eval_transforms
from detdemo.errors import DataError

BACKGROUND = "__background__"


@dataclass
class Annotation:
    """One image's objects in pixel XYXY, labels already contiguous (1..K)."""

    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64
    iscrowd: np.ndarray  # (N,) int64
    masks: np.ndarray | None = None  # (N, H, W) uint8
    keypoints: np.ndarray | None = None  # (N, K, 3) float32
    area: np.ndarray | None = None  # (N,) float32; box area when the source gives none

    @staticmethod
    def empty(with_masks: bool, height: int, width: int) -> Annotation:
        return Annotation(
            boxes=np.zeros((0, 4), np.float32),
            labels=np.zeros((0,), np.int64),
            iscrowd=np.zeros((0,), np.int64),
            masks=np.zeros((0, height, width), np.uint8) if with_masks else None,
        )


@dataclass
class ImageRecord:
    path: Path
    image_id: int
    height: int | None = None
    width: int | None = None
    extra: dict = field(default_factory=dict)


def degenerate(boxes: np.ndarray) -> np.ndarray:
    """Boolean mask of boxes with zero or negative width or height (NaN counts as degenerate)."""
    if len(boxes) == 0:
        return np.zeros((0,), bool)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return ~((w > 0) & (h > 0))


def warn_degenerate(source: str, count: int, files: Sequence[str]) -> None:
    if count:
        shown = ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
        warnings.warn(
            f"{source}: dropped {count} degenerate box(es) (zero or negative width/height) in "
            f"{len(files)} file(s): {shown}",
            stacklevel=3,
        )


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes clipped to the image; one wholly outside ends with zero width or height (dropped as degenerate)."""
    if len(boxes) == 0:
        return boxes
    out = boxes.copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def count_off_image(boxes: np.ndarray, height: int | None, width: int | None) -> tuple[int, int]:
    """(boxes overhanging the image edge, boxes wholly outside it); (0, 0) when the size is not known yet."""
    if not height or not width or len(boxes) == 0:
        return 0, 0
    inside = clip_boxes(boxes, height, width)
    outside = int(degenerate(inside).sum() - degenerate(boxes).sum())
    overhanging = int((np.abs(inside - boxes).max(1) > 0).sum()) - outside
    return overhanging, outside


class OffImageBoxes:
    """Counts boxes that overhang or miss their image while a dataset is read, then warns once."""

    def __init__(self) -> None:
        self.overhanging = self.outside = 0
        self.files: list[str] = []

    def add(self, name: str, boxes: np.ndarray, height: int | None, width: int | None) -> None:
        over, out = count_off_image(boxes, height, width)
        if over or out:
            self.overhanging, self.outside = self.overhanging + over, self.outside + out
            self.files.append(name)

    def warn(self, source: str) -> None:
        if self.overhanging or self.outside:
            shown = ", ".join(self.files[:5]) + (" ..." if len(self.files) > 5 else "")
            warnings.warn(f"{source}: clipped {self.overhanging} box(es) that overhang the image edge and dropped "
                          f"{self.outside} lying wholly outside the image, in {len(self.files)} file(s): {shown}",
                          stacklevel=3)


class Problems:
    """Collects what is wrong with a dataset so the user hears of every problem at once, not one per run."""

    def __init__(self, where: str) -> None:
        self.where, self.items = where, []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            shown = "; ".join(self.items[:10]) + (f"; and {len(self.items) - 10} more" if len(self.items) > 10 else "")
            raise DataError(f"{self.where}: {len(self.items)} problem(s): {shown}")


class DetectionDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``records`` and ``classes`` and implement ``annotation``."""

    layout: str = "?"
    has_masks: bool = False
    split_source: str = ""  # where open_dataset took this split from, for people: "ImageSets/Main/val.txt"

    def __init__(self, root: str | Path, transforms: Callable | None = None) -> None:
        self.root = Path(root)
        # Default to the eval preset so every dataset yields model-ready float images out of the box.
        self.transforms = transforms if transforms is not None else eval_transforms()
        self.records: list[ImageRecord] = []
        self.classes: list[str] = [BACKGROUND]  # index = label; 0 is background

    # -- subclass API -------------------------------------------------------------------------------------
    def annotation(self, idx: int, height: int, width: int) -> Annotation:
        raise NotImplementedError

    # -- the contract ---------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Including background, as torchvision's ``num_classes`` expects."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Foreground names; ``class_names[label - 1]`` names ``label``."""
        return self.classes[1:]

    def __len__(self) -> int:
        return len(self.records)

    def get_height_and_width(self, idx: int) -> tuple[int, int]:
        rec = self.records[idx]
        if rec.height is None or rec.width is None:
            rec.height, rec.width = image_size(rec.path)
        return rec.height, rec.width

    def num_objects(self) -> int:
        """Annotated objects in this split (subclasses count without decoding masks)."""
        return sum(len(self.annotation(i, *self.get_height_and_width(i)).boxes) for i in range(len(self)))

    def load_target(self, idx: int, height: int, width: int) -> dict[str, torch.Tensor]:
        ann = self.annotation(idx, height, width)
        clipped = clip_boxes(ann.boxes, height, width)  # counted and warned about when the dataset was read
        keep = ~degenerate(clipped)
        boxes = torch.as_tensor(clipped[keep], dtype=torch.float32).reshape(-1, 4)
        area = ann.area[keep] if ann.area is not None else None
        target: dict[str, torch.Tensor] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.as_tensor(ann.labels[keep], dtype=torch.int64),
            "image_id": torch.tensor(self.records[idx].image_id, dtype=torch.int64),
            "area": (
                torch.as_tensor(area, dtype=torch.float32)
                if area is not None
                else (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            ),
            "iscrowd": torch.as_tensor(ann.iscrowd[keep], dtype=torch.int64),
        }
        if ann.masks is not None:
            target["masks"] = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(ann.masks[keep])))
        if ann.keypoints is not None:
            target["keypoints"] = torch.as_tensor(ann.keypoints[keep], dtype=torch.float32)
        return target

    def __getitem__(self, idx: int):
        rec = self.records[idx]
        pil = open_image(rec.path)
        width, height = pil.size
        rec.height, rec.width = height, width
        image = pil_to_tensor_image(pil)
        target = self.load_target(idx, height, width)
        return self.transforms(image, target)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, "
            f"classes={self.class_names}, masks={self.has_masks})"
        )
