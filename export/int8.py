"""ONNX INT8: static QDQ quantisation with onnxruntime's own tools, calibrated on the user's images.

Weights are quantised per channel (int8), activations per tensor (uint8, MinMax over the calibration images).
The layers whose outputs *are* the answer stay in float — box regression, class scores, mask logits, the RPN's
heads (``Family.keep_float``) — as do the ops onnxruntime cannot quantise (RoIAlign, NMS). Only ``Conv`` and
``Gemm`` nodes are quantised: the backbone, FPN and head trunks, where the time goes. Whether the result is
accurate enough is not assumed: ``check-export --data`` measures its AP against eager.
"""

from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path

from detdemo.errors import DetDemoError
from detdemo.fileio import IMAGE_EXTENSIONS

DEFAULT_CALIBRATION_IMAGES = 64
QUANTISED_OPS = ("Conv", "Gemm")


def calibration_files(source: str | Path, limit: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0) -> list[Path]:
    """Up to ``limit`` images, chosen with a seed, from a folder of images or a dataset (its training split)."""
    source = Path(source)
    if source.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in source.iterdir()):
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        from detdemo.data import open_dataset

        dataset = open_dataset(source, "train")
        files = [r.path for r in dataset.records]
    if not files:
        raise DetDemoError(f"{source}: no calibration images found")
    random.Random(seed).shuffle(files)
    return sorted(files[:limit])


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: the graph's input for each calibration image, preprocessed by
    the same host pipeline every runtime uses."""

    def __init__(self, files: list[Path], transform, input_name: str) -> None:
        self.files, self.transform, self.input_name = list(files), transform, input_name

    def get_next(self):
        import torch

        from detdemo.data.images import open_image
        from detdemo.inference.pipeline import to_chw_float

        while self.files:
            path = self.files.pop(0)
            try:
                x = to_chw_float(open_image(path))
            except DetDemoError:
                continue  # an unreadable calibration image is skipped, not fatal
            with torch.inference_mode():
                x, _ = self.transform.resize(self.transform.normalize(x), None)
            return {self.input_name: x.numpy()}
        return None

    def rewind(self) -> None:  # part of the protocol; one pass is all MinMax needs
        pass


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def float_nodes(graph, keep_float: tuple[str, ...]) -> list[str]:
    """Nodes of the modules that must stay float: exported node names follow module paths (``/model/a/b/Conv``)."""
    prefixes = tuple("/model/" + k.replace(".", "/") + "/" for k in keep_float)
    return [n.name for n in graph.node if n.op_type in QUANTISED_OPS and n.name.startswith(prefixes)]


def quantize_onnx(fp32: Path, out: Path, calibration: list[Path], transform, keep_float: tuple[str, ...]) -> dict:
    """Write ``out`` (QDQ INT8) from ``fp32``; returns what was done, for the file's metadata."""
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise DetDemoError(f"format onnx-int8 needs onnxruntime's quantisation tools ({exc}); pip install "
                           "onnxruntime") from None
    proto = onnx.load(str(fp32), load_external_data=False)
    excluded = float_nodes(proto.graph, keep_float)
    reader = _Reader(calibration, transform, proto.graph.input[0].name)
    with _quiet_root_logger():  # onnxruntime.quantization advises on the root logger
        quantize_static(str(fp32), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        op_types_to_quantize=list(QUANTISED_OPS), nodes_to_exclude=excluded,
                        calibrate_method=CalibrationMethod.MinMax)
    quantised = sum(1 for n in proto.graph.node if n.op_type in QUANTISED_OPS) - len(excluded)
    return {"quantization": {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                             "weights": "int8 per channel", "activations": "uint8 per tensor, MinMax",
                             "calibration_images": len(calibration), "quantized_nodes": quantised,
                             "kept_float": list(keep_float), "kept_float_nodes": len(excluded),
                             "calibration_files_sample": [p.name for p in calibration[:5]]}}


__all__ = ["calibration_files", "float_nodes", "quantize_onnx"]
