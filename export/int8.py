"""INT8, calibrated on the user's images: ONNX (static QDQ, onnxruntime's own tools) and OpenVINO (NNCF's
post-training quantisation of the IR).

ONNX: weights are quantised per channel (int8), activations per tensor (uint8, MinMax over the calibration images);
only ``Conv`` and ``Gemm`` nodes, the backbone, FPN and head trunks where the time goes. OpenVINO: NNCF's default
(performance preset, symmetric weights and activations), which also places its quantisers where OpenVINO's CPU
plugin fuses them — the residual additions that onnxruntime's QDQ graph leaves in float (docs/benchmarks.md §4).
In both, the layers whose outputs *are* the answer stay in float — box regression, class scores, mask logits, the
RPN's heads (``Family.keep_float``) — as do RoIAlign and NMS, and in OpenVINO every op that computes with
coordinates (``COORDINATE_OPS``). Whether the result is accurate enough is not
assumed: ``check-export --data`` measures its AP against eager.
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


def calibration_inputs(files: list[Path], transform):
    """The graph's input for each calibration image, preprocessed by the host pipeline every runtime uses; an
    unreadable image is skipped, not fatal."""
    import torch

    from detdemo.data.images import open_image
    from detdemo.inference.pipeline import to_chw_float

    for path in files:
        try:
            x = to_chw_float(open_image(path))
        except DetDemoError:
            continue
        with torch.inference_mode():
            x, _ = transform.resize(transform.normalize(x), None)
        yield x.numpy()


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over ``calibration_inputs``."""

    def __init__(self, files: list[Path], transform, input_name: str) -> None:
        self.inputs, self.input_name = calibration_inputs(files, transform), input_name

    def get_next(self):
        x = next(self.inputs, None)
        return None if x is None else {self.input_name: x}

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


# Ops that compute with coordinates stay float in every family: box decoding and clipping, the inputs of NMS, RoI
# pooling and anchors. In torchvision's detectors they sit directly in the model, its rpn or its roi_heads (not in a
# learned submodule), or in the poolers and anchor generators. Measured on the bundled model: NNCF quantising them
# cost 0.065 bbox AP; kept float, the INT8 file is within 0.002 of eager (docs/benchmarks.md §4).
COORDINATE_OPS = (".*/model/[^/]+$", ".*/model/(rpn|roi_heads)/[^/]+$", ".*/model/roi_heads/[a-z_]*roi_pool/.*",
                  ".*/model/(rpn/)?anchor_generator/.*")


def quantize_openvino(model, calibration: list[Path], transform, keep_float: tuple[str, ...]):
    """(INT8 OpenVINO model, what was done) from a float OpenVINO model converted from our ONNX export."""
    try:
        import nncf
    except ImportError:
        raise DetDemoError("format openvino-int8 needs NNCF: pip install 'detdemo[openvino]' (or pip install "
                           "nncf)") from None
    inputs = list(calibration_inputs(calibration, transform))
    if not inputs:
        raise DetDemoError("none of the calibration images could be read")
    # OpenVINO keeps the ONNX node names, which follow module paths (/model/roi_heads/box_predictor/...)
    patterns = [".*/model/" + k.replace(".", "/") + "/.*" for k in keep_float] + list(COORDINATE_OPS)
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs),
                                  ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False))
    except Exception as exc:  # noqa: BLE001 - NNCF raises its own types
        raise DetDemoError(f"NNCF could not quantise this model ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    finally:
        logger.setLevel(level)
    return quantized, {"quantization": {"method": f"nncf.quantize {nncf.__version__}", "format": "OpenVINO IR",
                                        "weights": "int8 per channel", "activations": "int8, NNCF defaults",
                                        "calibration_images": len(inputs),
                                        "kept_float": [*keep_float, "coordinate ops (decoding, RoI pooling, anchors)"],
                                        "calibration_files_sample": [p.name for p in calibration[:5]]}}


__all__ = ["calibration_files", "float_nodes", "quantize_onnx", "quantize_openvino"]
