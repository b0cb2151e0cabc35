"""What every prediction returns, whichever runtime ran it: ``Detections``; and what every runtime is: ``Predictor``.

Arrays are numpy so that callers (drawing, evaluation, the parity checker, the app) never care which runtime ran.
Masks are kept as the model's own low-resolution probabilities (``mask_probs``, 28x28 for Mask R-CNN: small and
exact) and pasted into the input image only when asked: ``mask(i)`` pastes one (a boolean image, one byte per
pixel), ``masks`` all of them at once. Pasting every soft mask at full size up front cost 4 bytes per pixel per
detection (a 6000x4000 photo: 96 MB each, 7 GB for 73 detections); callers that walk the detections one at a time
(drawing, COCO results, parity, areas) now hold one mask at a time, whatever the photo's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

MASK_THRESHOLD = 0.5  # torchvision's and COCO's: a pixel belongs to the object when its probability is above it


def paste_probability(probs: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torchvision's own pasting (``paste_masks_in_image``) of one low-resolution mask: (H, W) float32."""
    import torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    pasted = paste_masks_in_image(torch.from_numpy(np.ascontiguousarray(probs, np.float32))[None, None],
                                  torch.from_numpy(np.ascontiguousarray(box, np.float32))[None], size, padding=1)
    return pasted[0, 0].numpy()


def paste_mask(probs: np.ndarray, box: np.ndarray, size: tuple[int, int],
               threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """The eager detector's mask pixels for one detection: pasted, then thresholded."""
    return paste_probability(probs, box, size) > threshold


class Detections:
    """``boxes`` (N, 4) float32 XYXY in input pixels; ``labels`` (N,) int64 in 1..K; ``scores`` (N,) float32;
    ``mask_probs`` (N, M, M) float32 or None; ``keypoints`` (N, K, 3) and ``keypoint_scores`` (N, K) or None;
    ``image_size`` (height, width). ``masks`` may be given directly as (N, H, W) bool (then no pasting happens)."""

    def __init__(self, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, class_names: list[str],
                 masks: np.ndarray | None = None, mask_probs: np.ndarray | None = None,
                 keypoints: np.ndarray | None = None, keypoint_scores: np.ndarray | None = None,
                 image_size: tuple[int, int] = (0, 0), extras: dict | None = None,
                 mask_threshold: float = MASK_THRESHOLD) -> None:
        self.boxes, self.labels, self.scores = boxes, labels, scores
        self.class_names = list(class_names)
        self.mask_probs, self.keypoints, self.keypoint_scores = mask_probs, keypoints, keypoint_scores
        self.image_size = tuple(image_size) if image_size != (0, 0) or masks is None else masks.shape[1:]
        self.extras = dict(extras or {})
        self.mask_threshold = mask_threshold
        self._masks = None if masks is None else np.asarray(masks, dtype=bool)

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        return f"Detections({len(self)} on {self.image_size[1]}x{self.image_size[0]}, masks={self.has_masks})"

    @property
    def has_masks(self) -> bool:
        return self._masks is not None or self.mask_probs is not None

    def mask(self, i: int) -> np.ndarray:
        """Detection ``i``'s mask at input size, (H, W) bool."""
        if self._masks is not None:
            return self._masks[i]
        if self.mask_probs is None:
            raise ValueError("these detections have no masks")
        return paste_mask(self.mask_probs[i], self.boxes[i], self.image_size, self.mask_threshold)

    def mask_probability(self, i: int) -> np.ndarray | None:
        """Detection ``i``'s pasted probabilities, (H, W) float32; None when only binary masks are held."""
        if self.mask_probs is None:
            return None
        return paste_probability(self.mask_probs[i], self.boxes[i], self.image_size)

    @property
    def masks(self) -> np.ndarray | None:
        """Every mask at input size, (N, H, W) bool; pasted on first use (prefer ``mask(i)`` on large images)."""
        if self._masks is None and self.mask_probs is not None:
            stack = np.zeros((len(self), *self.image_size), dtype=bool)
            for i in range(len(self)):
                stack[i] = self.mask(i)
            self._masks = stack
        return self._masks

    def mask_areas(self) -> np.ndarray | None:
        if not self.has_masks:
            return None
        return np.array([int(self.mask(i).sum()) for i in range(len(self))], dtype=np.int64)

    def names(self) -> list[str]:
        return [self.class_names[i - 1] if 0 < i <= len(self.class_names) else str(i) for i in self.labels]

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where ``keep`` (a boolean mask or indices) says so."""
        def pick(a):
            return None if a is None else a[keep]

        return Detections(self.boxes[keep], self.labels[keep], self.scores[keep], self.class_names,
                          pick(self._masks), pick(self.mask_probs), pick(self.keypoints),
                          pick(self.keypoint_scores), self.image_size, self.extras, self.mask_threshold)

    def filter(self, score_threshold: float) -> Detections:
        return self.select(self.scores >= score_threshold)

    def only_classes(self, names: list[str] | set[str]) -> Detections:
        wanted = set(names)
        return self.select(np.array([n in wanted for n in self.names()], dtype=bool))


@runtime_checkable
class Predictor(Protocol):
    """One interface over every runtime (eager PyTorch, TorchScript, ONNX Runtime, ...)."""

    backend: str  # a name from export.formats.BACKENDS
    path: Path
    class_names: list[str]
    device: str  # where the model runs, as the runtime really got it ("cpu", "cuda:0")
    notes: list[str]  # anything a user should see (a provider fallback), empty when all is as asked
    uses_torch_threads: bool  # the graph runs in torch (eager, TorchScript) and wants torch's intra-op threads

    def predict(self, image, *, score_threshold: float | None = None,
                timings: dict[str, float] | None = None) -> Detections:
        """``image``: a PIL image, an HxW/HxWx3/HxWx4 array, or a CHW tensor. Detections under ``score_threshold``
        are dropped before any mask is pasted; ``timings`` receives seconds per stage."""
        ...
