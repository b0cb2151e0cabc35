"""Eager PyTorch as a runtime: the model's own modules run the graph; the host pipeline does the rest."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from detdemo.errors import DetDemoError
from detdemo.inference.device import resolve_device
from detdemo.inference.pipeline import HostPipeline, graph_view

PRECISIONS = ("fp32", "bf16")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()) and _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class EagerPredictor(HostPipeline):
    backend = "pytorch"
    uses_torch_threads = True

    def __init__(self, model: nn.Module, class_names: list[str], *, path: str | Path = "", device="auto",
                 precision: str = "fp32") -> None:
        super().__init__()
        precision = "fp32" if precision in ("auto", None) else precision
        if precision not in PRECISIONS:
            raise DetDemoError(f"unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}")
        self._device = resolve_device(device)
        self.device = str(self._device)
        self.model = model.eval().to(self._device)
        self.graph = graph_view(self.model)
        self.transform = self.model.transform
        self.class_names = list(class_names)
        self.path = Path(path)
        self.precision = precision
        self.export_id: str | None = None  # set when loaded from an export folder's model.pt
        if precision == "bf16" and not bf16_supported(self._device):
            self.precision = "fp32"
            self.notes.append(f"bf16 is not supported on {self.device}; running in float32")

    @classmethod
    def from_checkpoint(cls, path: str | Path, device="auto", precision: str = "fp32") -> EagerPredictor:
        from detdemo.checkpoint import load_checkpoint
        from detdemo.models.build import model_from_checkpoint

        data = load_checkpoint(path)
        model, cfg = model_from_checkpoint(data)
        predictor = cls(model, cfg.class_names, path=data["path"], device=device, precision=precision)
        predictor.export_id = data.get("export_id")
        return predictor

    @classmethod
    def from_portable(cls, path: str | Path, device="auto", precision: str = "fp32") -> EagerPredictor:
        """From ``model.safetensors`` and the ``config.json`` beside it: no unpickling at all."""
        from detdemo.models.portable import load_portable

        model, cfg, config = load_portable(path)
        predictor = cls(model, cfg.class_names, path=path, device=device, precision=precision)
        predictor.export_id = config.get("export_id")
        return predictor

    def _preprocess_device(self) -> torch.device:
        return self._device

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        autocast = (torch.autocast(self._device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            out = self.graph([x])
        out = out[1] if isinstance(out, tuple) else out  # scripted detectors return (losses, detections)
        return {k: v.float() if v.is_floating_point() else v for k, v in out[0].items()}
