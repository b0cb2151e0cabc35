"""What every prediction returns, whichever runtime ran it: ``Detections``; and what every runtime is: ``Predictor``.

Arrays are numpy so that callers (drawing, evaluation, the parity checker, the app) never care which runtime ran.
Masks come twice: ``mask_probs`` are the model's own low-resolution probabilities (28x28 for Mask R-CNN), small and
exact, which the parity checker compares; ``masks`` are those pasted into the input image and thresholded, one byte
per pixel, which is what drawing, areas and COCO results need. Pasting soft float masks at full size would cost 4
bytes per pixel per detection (a 6000x4000 photo: 96 MB each), which is how large photos ran out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) float32 XYXY in input pixels
    labels: np.ndarray  # (N,) int64, 1..K
    scores: np.ndarray  # (N,) float32
    class_names: list[str]
    masks: np.ndarray | None = None  # (N, H, W) bool, pasted at input size and thresholded (mask_threshold)
    mask_probs: np.ndarray | None = None  # (N, M, M) float32, the model's own low-resolution probabilities
    keypoints: np.ndarray | None = None  # (N, K, 3) x, y, visibility in input pixels
    keypoint_scores: np.ndarray | None = None  # (N, K)
    image_size: tuple[int, int] = (0, 0)  # (height, width) of the input
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def names(self) -> list[str]:
        return [self.class_names[i - 1] if 0 < i <= len(self.class_names) else str(i) for i in self.labels]

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where ``keep`` (a boolean mask or indices) says so; arrays are views or copies."""
        def pick(a):
            return None if a is None else a[keep]

        return Detections(self.boxes[keep], self.labels[keep], self.scores[keep], self.class_names,
                          pick(self.masks), pick(self.mask_probs), pick(self.keypoints), pick(self.keypoint_scores),
                          self.image_size, dict(self.extras))

    def filter(self, score_threshold: float) -> Detections:
        return self.select(self.scores >= score_threshold)

    def only_classes(self, names: list[str] | set[str]) -> Detections:
        wanted = set(names)
        return self.select(np.array([n in wanted for n in self.names()], dtype=bool))

    def mask_areas(self) -> np.ndarray | None:
        return None if self.masks is None else self.masks.reshape(len(self), -1).sum(1)


@runtime_checkable
class Predictor(Protocol):
    """One interface over every runtime (eager PyTorch, TorchScript, ONNX Runtime, ...)."""

    backend: str  # a name from export.runtime.BACKENDS
    path: Path
    class_names: list[str]
    device: str  # where the model runs, as the runtime really got it ("cpu", "cuda:0")
    notes: list[str]  # anything a user should see (a provider fallback), empty when all is as asked

    def predict(self, image, *, score_threshold: float | None = None,
                timings: dict[str, float] | None = None) -> Detections:
        """``image``: a PIL image, an HxW/HxWx3/HxWx4 array, or a CHW tensor. Detections under ``score_threshold``
        are dropped before their masks are pasted; ``timings`` receives seconds per stage."""
        ...
