"""Export toolkit: ONNX, ExportedProgram, AOTInductor, TorchScript, OpenVINO and INT8 export (``torch.export`` through
scoped patches for the formats PyTorch keeps), the runtimes that read exported files, and parity checks.

Builds on detdemo's core (models, checkpoints, the prediction pipeline in ``detdemo.inference``); the core never
imports this package.
"""

from export.exporters import ExportError, export_checkpoint, export_onnx, export_torchscript
from export.formats import BACKENDS, FORMATS
from export.parity import Tolerances, default_probes, run_parity
from export.runtime import OnnxPredictor, TorchScriptPredictor, load_predictor

__all__ = ["BACKENDS", "FORMATS", "ExportError", "export_checkpoint", "export_onnx", "export_torchscript",
           "Tolerances", "default_probes", "run_parity", "OnnxPredictor", "TorchScriptPredictor", "load_predictor"]
