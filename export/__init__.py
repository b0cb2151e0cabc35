"""Export toolkit: TorchScript and ONNX export, three runtimes behind one predictor interface, parity checks."""

from export.exporters import FORMATS, ExportError, export_checkpoint, export_onnx, export_torchscript
from export.parity import Tolerances, default_probes, run_parity
from export.runtime import Detections, EagerPredictor, OnnxPredictor, TorchScriptPredictor, load_predictor

__all__ = ["FORMATS", "ExportError", "export_checkpoint", "export_onnx", "export_torchscript", "Tolerances",
           "default_probes", "run_parity", "Detections", "EagerPredictor", "OnnxPredictor", "TorchScriptPredictor",
           "load_predictor"]
