"""One predictor interface, three runtimes: eager PyTorch, TorchScript, ONNX Runtime.

Each takes a PIL image or an array (HxW, HxWx3 or HxWx4, uint8 or float in [0, 1]) and returns ``Detections``
with numpy arrays, so callers (the parity checker, the app, benchmarks) never care which runtime ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from detdemo.data.images import decode_pil
from detdemo.errors import DetDemoError


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) float32 XYXY in input pixels
    labels: np.ndarray  # (N,) int64, 1..K
    scores: np.ndarray  # (N,) float32
    class_names: list[str]
    masks: np.ndarray | None = None  # (N, H, W) float32 probabilities
    keypoints: np.ndarray | None = None  # (N, K, 3)
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def names(self) -> list[str]:
        return [self.class_names[i - 1] if 0 < i <= len(self.class_names) else str(i) for i in self.labels]

    def filter(self, score_threshold: float) -> Detections:
        keep = self.scores >= score_threshold
        return Detections(self.boxes[keep], self.labels[keep], self.scores[keep], self.class_names,
                          None if self.masks is None else self.masks[keep],
                          None if self.keypoints is None else self.keypoints[keep], dict(self.extras))


def to_chw_float(image) -> torch.Tensor:
    """PIL image or array -> float32 [3, H, W] in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(decode_pil(image))
    if isinstance(image, torch.Tensor):
        image = image.numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DetDemoError(f"expected an HxW or HxWx3/4 image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    else:
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _from_outputs(out: dict, class_names: list[str]) -> Detections:
    def get(name):
        v = out.get(name)
        return None if v is None else (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))

    masks = get("masks")
    if masks is not None and masks.ndim == 4:
        masks = masks[:, 0]
    return Detections(get("boxes").astype(np.float32), get("labels").astype(np.int64),
                      get("scores").astype(np.float32), class_names, masks, get("keypoints"))


class EagerPredictor:
    backend = "pytorch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        from detdemo.checkpoint import load_model

        self.model, self.config = load_model(checkpoint, device)
        self.device = torch.device(device)
        self.class_names = self.config.class_names
        self.path = Path(checkpoint)
        self._lock = threading.Lock()

    @classmethod
    def from_module(cls, model: torch.nn.Module, class_names: list[str], path: str | Path = "",
                    device: str = "cpu") -> EagerPredictor:
        """Wrap a model built elsewhere (torchvision's COCO models in the app) in the same interface."""
        self = cls.__new__(cls)
        self.model, self.config = model.eval().to(device), None
        self.device, self.class_names, self.path = torch.device(device), list(class_names), Path(path)
        self._lock = threading.Lock()
        return self

    @contextlib.contextmanager
    def _score_floor(self, score_threshold: float | None):
        """Raise the R-CNN heads' score threshold for one call. Boxes under it can neither survive nor suppress a
        higher-scoring box in NMS, so the detections above it are unchanged; their masks are just not pasted."""
        heads = getattr(self.model, "roi_heads", None)
        if score_threshold is None or heads is None or score_threshold <= heads.score_thresh:
            yield
            return
        old = heads.score_thresh
        heads.score_thresh = float(np.nextafter(np.float32(score_threshold), np.float32(0)))  # torchvision keeps >
        try:
            yield
        finally:
            heads.score_thresh = old

    @torch.inference_mode()
    def predict(self, image, timings: dict[str, float] | None = None,
                score_threshold: float | None = None) -> Detections:
        """``timings``, when given, receives seconds per stage (eager: one ``model`` stage, transform included).
        ``score_threshold`` drops weaker detections before their masks are pasted (the slow part on a CPU)."""
        x = to_chw_float(image).to(self.device)
        start = time.perf_counter()
        with self._lock, self._score_floor(score_threshold):  # the threshold is model state: one call at a time
            out = self.model([x])[0]
        if timings is not None:
            timings["model"] = time.perf_counter() - start
        det = _from_outputs(out, self.class_names)
        return det if score_threshold is None else det.filter(score_threshold)


class _HostPipeline:
    """Exported graphs: pre- and post-process on the host with torchvision's eager transform (export.wrappers)."""

    meta: dict

    def _setup_transform(self) -> None:
        from export.wrappers import transform_from_spec

        if "transform" not in self.meta:
            raise DetDemoError(f"{self.path}: exported without detdemo metadata; re-export with `detdemo export`")
        self.transform = transform_from_spec(self.meta["transform"])

    def _run_graph(self, x: torch.Tensor) -> dict:
        raise NotImplementedError

    def predict(self, image, timings: dict[str, float] | None = None,
                score_threshold: float | None = None) -> Detections:
        """``timings``, when given, receives seconds for ``preprocess``, ``model`` and ``postprocess``.
        ``score_threshold`` drops weaker detections before their masks are pasted (the slow part on a CPU)."""
        from export.pipeline import postprocess, preprocess

        x = to_chw_float(image)
        original = (int(x.shape[-2]), int(x.shape[-1]))
        t0 = time.perf_counter()
        resized_image, resized = preprocess(self.transform, x)
        t1 = time.perf_counter()
        raw = {k: torch.as_tensor(v) for k, v in self._run_graph(resized_image).items()}
        if score_threshold is not None:
            keep = raw["scores"] >= score_threshold
            raw = {k: v[keep] for k, v in raw.items()}
        t2 = time.perf_counter()
        out = postprocess(self.transform, raw, resized, original)
        if timings is not None:
            timings.update(preprocess=t1 - t0, model=t2 - t1, postprocess=time.perf_counter() - t2)
        return _from_outputs(out, self.class_names)


class TorchScriptPredictor(_HostPipeline):
    backend = "torchscript"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        extra = {"detdemo.json": ""}
        try:
            self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except Exception as exc:  # noqa: BLE001
            raise DetDemoError(f"{path}: cannot load TorchScript file ({type(exc).__name__})") from None
        self.meta = json.loads(extra["detdemo.json"] or "{}")
        self.class_names = self.meta.get("class_names", [])
        self.device = torch.device(device)
        self.path = Path(path)
        self._setup_transform()

    @torch.inference_mode()
    def _run_graph(self, x: torch.Tensor) -> dict:
        return {k: v.cpu() for k, v in self.module(x.to(self.device)).items()}


def onnx_session(path: str | Path, threads: int | None = None):
    """One tuned session per file: CUDA provider when onnxruntime-gpu sees a GPU, else CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # noqa: BLE001
        raise DetDemoError(f"{path}: cannot load ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None


class OnnxPredictor(_HostPipeline):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnx

        self.session = onnx_session(path, threads)
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        self.meta = json.loads(meta.get("detdemo", "{}"))
        self.class_names = self.meta.get("class_names", [])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.path = Path(path)
        self._setup_transform()

    def _run_graph(self, x: torch.Tensor) -> dict:
        outs = self.session.run(None, {"image": x.numpy()})
        return dict(zip(self.output_names, outs))


BACKENDS = {"pytorch": EagerPredictor, "torchscript": TorchScriptPredictor, "onnxruntime": OnnxPredictor}


def load_predictor(path: str | Path, backend: str | None = None):
    """Pick the runtime from the file: ``.onnx`` -> ONNX Runtime, ``*.torchscript.pt`` -> TorchScript, else eager."""
    path = Path(path)
    if backend is None:
        if path.suffix == ".onnx":
            backend = "onnxruntime"
        elif path.name.endswith(".torchscript.pt"):
            backend = "torchscript"
        else:
            backend = "pytorch"
    if backend not in BACKENDS:
        raise DetDemoError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[backend](path)
