"""Host-side pre- and post-processing shared by every runtime: torchvision's own eager transform code."""

from __future__ import annotations

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform


@torch.inference_mode()
def preprocess(transform: GeneralizedRCNNTransform, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Normalise then resize exactly as the eager detector does inside ``forward``."""
    x = transform.normalize(image)
    x, _ = transform.resize(x, None)
    return x, (int(x.shape[-2]), int(x.shape[-1]))


@torch.inference_mode()
def postprocess(transform: GeneralizedRCNNTransform, det: dict[str, torch.Tensor], resized: tuple[int, int],
                original: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Boxes (and keypoints) back to input pixels, masks pasted at input size: the eager detector's own step."""
    return transform.postprocess([det], [resized], [original])[0]
