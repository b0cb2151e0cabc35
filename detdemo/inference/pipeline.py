"""The one prediction path: host pre-processing, a graph run by some runtime, host post-processing.

torchvision computes the resize of an image differently when eager, scripted or traced (the scale factor passes
through Python floats, TorchScript tensors or ONNX shape ops), so an exported detector would see a slightly
different image than the eager one on some sizes (measured: boxes moved by tens of pixels). So normalisation,
resizing and post-processing (box rescaling, mask pasting, keypoint rescaling) run here, on the host, with
torchvision's own *eager* transform code, for every runtime including eager PyTorch; the graph holds batching,
backbone, RPN/heads and NMS. A runtime is then only "how to run the graph", and every runtime sees the very tensor
the eager model sees.

Detections under the caller's score threshold are dropped before anything else happens to them, and masks stay at
the model's resolution until a caller pastes them, one at a time (see ``Detections``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes, resize_keypoints

from detdemo.errors import DetDemoError
from detdemo.inference.detections import MASK_THRESHOLD, Detections


class GraphTransform(GeneralizedRCNNTransform):
    """Batching only: the host has already normalised and resized, and post-processes the outputs."""

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target

    def postprocess(self, result: list[dict[str, torch.Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        return result


def _with_graph_transform(model: nn.Module, cls: type = GraphTransform) -> nn.Module:
    transform = copy.copy(model.transform)
    transform.__class__ = cls
    model.transform = transform
    return model


def graph_model(model: nn.Module) -> nn.Module:
    """An independent copy of ``model`` whose transform only batches: what exporters trace or script.

    Each copy gets its own subclass of GraphTransform: TorchScript caches compiled module types process-wide, and
    after many exports and loads in one process a shared type was once "redefined" (``Can't redefine method:
    forward on class ...GraphTransform``, ssd300_vgg16 as the 16th export of a test session)."""
    fresh = type("GraphTransform", (GraphTransform,), {"__module__": GraphTransform.__module__})
    return _with_graph_transform(copy.deepcopy(model).eval(), fresh)


def graph_view(model: nn.Module) -> nn.Module:
    """The same, sharing ``model``'s submodules and weights (no copy): what eager prediction runs, so a model
    being trained is evaluated with its current weights."""
    view = copy.copy(model)
    view._modules = dict(model._modules)  # its own module table, the same modules
    return _with_graph_transform(view)


def transform_spec(model: nn.Module) -> dict:
    """The eager transform's settings, stored in export metadata so any runtime can rebuild it."""
    t = model.transform
    return {"min_size": list(t.min_size), "max_size": t.max_size, "image_mean": list(t.image_mean),
            "image_std": list(t.image_std), "size_divisible": t.size_divisible,
            "fixed_size": list(t.fixed_size) if t.fixed_size else None}


def transform_from_spec(spec: dict) -> GeneralizedRCNNTransform:
    fixed = tuple(spec["fixed_size"]) if spec.get("fixed_size") else None
    return GeneralizedRCNNTransform(tuple(spec["min_size"]), spec["max_size"], spec["image_mean"],
                                    spec["image_std"], size_divisible=spec["size_divisible"],
                                    fixed_size=fixed).eval()


def to_chw_float(image) -> torch.Tensor:
    """A PIL image, an array (HxW, HxWx1/3/4; uint8, uint16 or float in [0, 1]) or a CHW tensor (torchvision's
    layout; uint8 or float) -> float32 [3, H, W] in [0, 1]."""
    if isinstance(image, Image.Image):
        from detdemo.data.images import decode_pil

        image = np.asarray(decode_pil(image))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise DetDemoError(f"expected a CHW image tensor with 1 or 3 channels, got shape {tuple(image.shape)}")
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DetDemoError(f"expected an HxW or HxWx1/3/4 image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DetDemoError(f"image has no pixels (shape {arr.shape})")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    # Channels first while the pixels are still integers (a quarter of the bytes of float32), then one float32
    # array written once: the same values as converting and then dividing (float32(x) / float32(255) either way).
    chw = np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1))
    if chw.dtype == np.uint8:
        out = np.divide(chw, np.float32(255.0), dtype=np.float32)
    elif chw.dtype == np.uint16:
        out = np.divide(chw, np.float32(65535.0), dtype=np.float32)
    else:
        out = chw.astype(np.float32)
    return torch.from_numpy(out)


class HostPipeline:
    """A predictor whose runtime only runs the graph (``_run_graph``); see the module docstring.

    Subclasses set ``transform``, ``class_names``, ``backend``, ``path`` and ``device`` and implement
    ``_run_graph(x) -> dict`` of CPU tensors in the resized frame (masks as (N, 1, M, M) probabilities)."""

    backend = ""
    transform: GeneralizedRCNNTransform
    class_names: list[str]
    path: Path = Path()
    device: str = "cpu"
    mask_threshold: float = MASK_THRESHOLD
    uses_torch_threads: bool = False  # True where _run_graph runs torch modules (eager, TorchScript)

    def __init__(self) -> None:
        self.notes: list[str] = []

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _preprocess_device(self) -> torch.device:
        return torch.device("cpu")

    @torch.inference_mode()
    def predict(self, image, *, score_threshold: float | None = None,
                timings: dict[str, float] | None = None) -> Detections:
        t0 = time.perf_counter()
        x = to_chw_float(image).to(self._preprocess_device())
        original = (int(x.shape[-2]), int(x.shape[-1]))
        x = self.transform.normalize(x)
        x, _ = self.transform.resize(x, None)
        resized = (int(x.shape[-2]), int(x.shape[-1]))
        t1 = time.perf_counter()
        raw = self._run_graph(x)
        t2 = time.perf_counter()
        det = self._postprocess(raw, resized, original, score_threshold)
        if timings is not None:
            timings.update(preprocess=t1 - t0, model=t2 - t1, postprocess=time.perf_counter() - t2)
        return det

    def _postprocess(self, raw: dict[str, torch.Tensor], resized: tuple[int, int], original: tuple[int, int],
                     score_threshold: float | None) -> Detections:
        raw = {k: torch.as_tensor(v).cpu() for k, v in raw.items()}
        if score_threshold is not None:
            keep = raw["scores"] >= score_threshold
            raw = {k: v[keep] for k, v in raw.items()}
        boxes = resize_boxes(raw["boxes"].float(), resized, original)
        det = Detections(boxes.numpy().astype(np.float32), raw["labels"].numpy().astype(np.int64),
                         raw["scores"].numpy().astype(np.float32), list(self.class_names), image_size=original,
                         mask_threshold=self.mask_threshold)
        if "masks" in raw:
            probs = raw["masks"].float()
            probs = probs[:, None] if probs.ndim == 3 else probs
            det.mask_probs = probs[:, 0].numpy()
        if "keypoints" in raw:
            det.keypoints = resize_keypoints(raw["keypoints"].float(), resized, original).numpy()
            if "keypoints_scores" in raw:
                det.keypoint_scores = raw["keypoints_scores"].float().numpy()
        return det
