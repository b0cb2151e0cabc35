"""The ``pt2`` format: the ExportedProgram itself (``torch.export.save`` / ``torch.export.load``), and the backend
that runs it with PyTorch's own kernels.

The program is the graph ``export.torch_export`` traces, with the original modules (no ONNX rewrites), so on the
CPU it computes what eager computes, kernel for kernel. detdemo's metadata (classes, transform, export id) travels as
an extra file of the archive (``<archive>/extra/detdemo.json``) and is read straight from the zip, before anything
is deserialised.

**Loading runs code from the file** (docs/export.md): ``torch.export.load`` unpickles what the archive marks as
pickled, falls back to ``torch.load(weights_only=False)`` for the sample inputs, and parses the graph's symbolic
shape expressions with ``sympy.sympify``, which evaluates strings. Only load ``.pt2`` files you made or trust;
from the Hub one is fetched only when asked for by name (``export.hub_files``), as TorchScript is.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from detdemo.errors import DetDemoError
from detdemo.fileio import atomic_write
from detdemo.inference.device import resolve_device
from detdemo.inference.pipeline import HostPipeline, transform_spec
from detdemo.models import ModelConfig
from export.archives import read_zip_json
from export.errors import ExportError, first_line
from export.metadata import build_metadata, dumps
from export.torch_export import EXPORTER, export_program

EXTRA = "detdemo.json"


def export_pt2(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "") -> Path:
    """Saved through a buffer (the archive's folder is then named ``archive``, not after a temporary file), without
    the example image the trace used (1.3 MB of noise for the bundled model; nothing reads it back) and without the
    nodes' stack traces (the exporting machine's file paths, in a file that may be published)."""
    program = export_program(model, cfg)
    program.example_inputs = None
    for graph_module in program.graph_module.modules():
        if isinstance(graph_module, torch.fx.GraphModule):
            for node in graph_module.graph.nodes:
                node.meta.pop("stack_trace", None)
    meta = build_metadata(cfg, "pt2", exporter=EXPORTER, transform=transform_spec(model), export_id=export_id)
    buffer = io.BytesIO()
    try:
        torch.export.save(program, buffer, extra_files={EXTRA: dumps(meta)})
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{cfg.arch}: saving the ExportedProgram failed ({first_line(exc)})") from None
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


class ExportedProgramPredictor(HostPipeline):
    """Runs a ``.pt2`` ExportedProgram; ``device`` moves it (``torch.export.passes.move_to_device_pass``)."""

    backend = "pt2"

    def __init__(self, path: str | Path, device="auto") -> None:
        from export.runtime import init_from_meta

        super().__init__()
        path = Path(path)
        self._device = resolve_device(device)
        self.device = str(self._device)
        self.meta = read_zip_json(path, "/extra/" + EXTRA)
        init_from_meta(self, path)  # the export id and transform, checked before the program is deserialised
        self.outputs = list(self.meta.get("outputs") or [])
        try:
            program = torch.export.load(str(path))
            if self._device.type != "cpu":
                program = torch.export.passes.move_to_device_pass(program, self._device)
            self.module = program.module()
        except Exception as exc:  # noqa: BLE001
            raise DetDemoError(f"{path}: cannot load ExportedProgram ({first_line(exc)})") from None
        self.precision = "fp32"

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module(x.to(self._device))
        return {name: t.cpu() for name, t in zip(self.outputs, out)}


__all__ = ["EXTRA", "ExportedProgramPredictor", "export_pt2"]
