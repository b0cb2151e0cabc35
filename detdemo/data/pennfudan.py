"""Penn-Fudan layout: ``PNGImages/X.png`` with ``PedMasks/X_mask.png`` whose pixel values are instance ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from detdemo.data.base import Annotation, DetectionDataset, ImageRecord
from detdemo.errors import DataError

IMAGE_DIR, MASK_DIR = "PNGImages", "PedMasks"


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Pixel-edge XYXY boxes: a mask covering columns 3..5 spans x in [3, 6), as COCO measures it."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


class PennFudanDataset(DetectionDataset):
    layout = "pennfudan"
    has_masks = True

    def __init__(self, root: str | Path, transforms: Callable | None = None, class_name: str = "person"):
        super().__init__(root, transforms)
        image_dir, mask_dir = self.root / IMAGE_DIR, self.root / MASK_DIR
        for d in (image_dir, mask_dir):
            if not d.is_dir():
                raise DataError(f"{self.root}: not a Penn-Fudan folder (missing {d.name}/)")
        self.classes.append(class_name)
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not images:
            raise DataError(f"{image_dir}: no images found")
        self.mask_paths: list[Path] = []
        for i, img in enumerate(images):
            mask = mask_dir / f"{img.stem}_mask.png"
            if not mask.exists():
                raise DataError(f"{img}: instance mask {mask} not found")
            self.records.append(ImageRecord(img, i))
            self.mask_paths.append(mask)

    def annotation(self, idx: int, height: int, width: int) -> Annotation:
        path = self.mask_paths[idx]
        try:
            with Image.open(path) as m:
                ids_image = np.asarray(m)
        except OSError as exc:
            raise DataError(f"{path}: cannot read instance mask ({exc})") from None
        if ids_image.ndim != 2:
            raise DataError(f"{path}: instance mask must be single-channel ids, got shape {ids_image.shape}")
        if ids_image.shape != (height, width):
            raise DataError(
                f"{path}: mask is {ids_image.shape[1]}x{ids_image.shape[0]} but its image is {width}x{height}"
            )
        ids = np.unique(ids_image)
        ids = ids[ids != 0]
        masks = (ids_image[None] == ids[:, None, None]).astype(np.uint8)
        n = len(ids)
        return Annotation(
            boxes=masks_to_boxes(masks),
            labels=np.ones((n,), np.int64),
            iscrowd=np.zeros((n,), np.int64),
            masks=masks,
            area=masks.reshape(n, -1).sum(1).astype(np.float32),
        )
