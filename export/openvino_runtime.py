"""OpenVINO as a runtime: the IR compiled for the CPU, behind the host pipeline.

The float IR runs in fp32 (``INFERENCE_PRECISION_HINT=f32``: the ``openvino`` choice, checked detection by
detection like ONNX Runtime) or, asked for, bf16 (``openvino-bf16``, judged by AP) on CPUs with AVX512-BF16/AMX;
where the CPU has no bf16 it runs fp32 and says so (``precision``, ``notes``). The INT8 IR's float layers run in bf16
where the CPU has it unless fp32 is asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from detdemo.errors import DetDemoError
from detdemo.inference.device import resolve_device, usable_cpus
from detdemo.inference.pipeline import HostPipeline, transform_from_spec
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
            precision = "bf16" if int8 else "fp32"
        if precision not in ("fp32", "bf16"):
            raise DetDemoError(f"OpenVINO precision must be auto, fp32, bf16 or int8, got {precision!r}")
        if precision == "bf16" and not cpu_supports_bf16(core):
            if not int8:
                self.notes.append("this CPU has no bf16 (AVX512-BF16/AMX): OpenVINO runs the model in fp32")
            precision = "fp32"
        compiled = core.compile_model(model, "CPU", compile_config(precision, threads))
        self._use(compiled, "int8" if int8 else precision)
        init_from_meta(self, Path(path))

    def _use(self, compiled, precision: str) -> None:
        self.compiled = compiled
        self.precision = precision  # what the CPU really runs, recorded in reports
        self.device = "cpu"
        self.output_names = [o.any_name for o in compiled.outputs]
        self.request = compiled.create_infer_request()

    @classmethod
    def from_compiled(cls, compiled, meta: dict, precision: str) -> OpenVinoPredictor:
        """A predictor over a model compiled elsewhere, with the metadata of the file it came from: NNCF's
        accuracy control (``export.repair``) hands each candidate to its validation function compiled."""
        predictor = cls.__new__(cls)
        HostPipeline.__init__(predictor)
        predictor.meta = meta
        predictor._use(compiled, precision)
        predictor.class_names = meta.get("class_names", [])
        predictor.transform = transform_from_spec(meta["transform"])
        predictor.path = Path(f"<{meta.get('format', 'openvino')} being quantised>")
        return predictor

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        result = self.request.infer({0: x.cpu().numpy()})
        out = {port.any_name: torch.from_numpy(value.copy()) for port, value in result.items()}
        return drop_phantom_rows(out)


def compile_config(precision: str, threads: int | None = None) -> dict:
    """The CPU plugin's settings for a precision ("fp32" or "bf16": the hint for the float layers)."""
    return {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": threads or usable_cpus()}


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
