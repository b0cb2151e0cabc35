"""Augmentation presets built from ``torchvision.transforms.v2``, which moves boxes and masks with the image.

The detectors resize every image to their own ``min_size`` internally, so scale jitter that only resized the
whole image would be undone; a random affine scale changes object size *relative to the frame*, which survives.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def _labels_and_friends(sample):
    """Tell SanitizeBoundingBoxes to drop every per-object field along with a removed box."""
    target = sample[1]
    return tuple(target[k] for k in ("labels", "iscrowd", "area", "keypoints") if k in target)


def train_transforms(scale_range: tuple[float, float] = (0.75, 1.25), hflip: float = 0.5) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomAffine(degrees=0.0, scale=scale_range),
            v2.RandomHorizontalFlip(p=hflip),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels_and_friends),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])
