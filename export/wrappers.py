"""Single-image wrappers that give exported graphs a plain signature.

torchvision detectors take a list of images and, when scripted, return ``(losses, detections)``. Exported
models take one ``float32 [3, H, W]`` image in [0, 1] (the batch is fixed at 1) and return tensors only.
"""

from __future__ import annotations

import torch
from torch import nn

OUTPUTS = {
    "faster_rcnn": ("boxes", "labels", "scores"),
    "retinanet": ("boxes", "labels", "scores"),
    "fcos": ("boxes", "labels", "scores"),
    "ssd": ("boxes", "labels", "scores"),
    "ssdlite": ("boxes", "labels", "scores"),
    "mask_rcnn": ("boxes", "labels", "scores", "masks"),
    "keypoint_rcnn": ("boxes", "labels", "scores", "keypoints", "keypoints_scores"),
}


class ScriptableDetector(nn.Module):
    """For TorchScript: returns the detection dict (``boxes``, ``labels``, ``scores`` and per-family extras)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model([image])
        if isinstance(out, tuple):  # scripted torchvision detectors return (losses, detections)
            return out[1][0]
        return out[0]


class OnnxDetector(nn.Module):
    """For ONNX: a tuple of tensors in ``OUTPUTS[family]`` order."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, image: torch.Tensor):
        det = self.model([image])[0]
        return tuple(det[n] for n in self.names)
