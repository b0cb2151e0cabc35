"""OpenVINO as a runtime: the IR compiled for the CPU (bf16 where the CPU has it), behind the host pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from detdemo.errors import DetDemoError
from detdemo.inference.device import resolve_device, usable_cpus
from detdemo.inference.pipeline import HostPipeline
from export.openvino_ir import RT_INFO_KEY, openvino_module
from export.runtime import init_from_meta


def cpu_supports_bf16(core) -> bool:
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001
        return False


class OpenVinoPredictor(HostPipeline):
    backend = "openvino"

    def __init__(self, path: str | Path, device="auto", precision: str = "auto", threads: int | None = None) -> None:
        super().__init__()
        ov = openvino_module()
        target = resolve_device(device) if str(device) != "auto" else torch.device("cpu")
        if target.type != "cpu":
            self.notes.append(f"OpenVINO runs on the CPU here; {target} was asked for")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # noqa: BLE001
            raise DetDemoError(f"{path}: cannot read OpenVINO model ({type(exc).__name__})") from None
        if not model.has_rt_info([RT_INFO_KEY]):
            raise DetDemoError(f"{path}: an OpenVINO model without detdemo metadata; re-export with `detdemo export`")
        self.meta = json.loads(model.get_rt_info([RT_INFO_KEY]).astype(str))
        int8 = self.meta.get("format") == "openvino-int8"  # the file decides; its float layers as "auto" says
        if precision in ("auto", "int8"):
            precision = "bf16" if cpu_supports_bf16(core) else "fp32"
        if precision not in ("fp32", "bf16"):
            raise DetDemoError(f"OpenVINO precision must be auto, fp32 or bf16, got {precision!r}")
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                          "INFERENCE_NUM_THREADS": threads or usable_cpus()})
        self.precision = "int8" if int8 else precision  # what the CPU really runs, recorded in reports
        self.device = "cpu"
        self.output_names = [o.any_name for o in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()
        init_from_meta(self, Path(path))

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        result = self.request.infer({0: x.cpu().numpy()})
        out = {port.any_name: torch.from_numpy(value.copy()) for port, value in result.items()}
        return drop_phantom_rows(out)


def drop_phantom_rows(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove detections labelled background (0), which the graph never returns: OpenVINO 2026.4's CPU plugin, on
    a CPU without AVX-512 (AMD EPYC here), returns an empty detection list as one row of uninitialised memory
    (label 0, denormal boxes, any score; measured on a blank image, where ONNX Runtime returns none). Dropping the
    row cannot hide a broken export: a real detection it removed would be unmatched in the parity check."""
    labels = out.get("labels")
    if labels is None or labels.numel() == 0 or bool((labels >= 1).all()):
        return out
    keep = labels >= 1
    n = len(labels)
    return {k: (v[keep] if v.dim() and len(v) == n else v) for k, v in out.items()}
