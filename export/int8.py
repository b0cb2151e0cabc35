"""INT8, calibrated on the user's images: ONNX (static QDQ, onnxruntime's own tools) and OpenVINO (NNCF's
post-training quantisation of the IR).

ONNX: the graph is first prepared with onnxruntime's ``quant_pre_process`` (its basic optimisations fold constant
subgraphs into initializers: R50-FPN's convolutions took their biases from ``Identity`` nodes, and a convolution
whose bias is not a constant never fuses). Weights are quantised per channel (int8), activations per tensor (uint8,
MinMax over the calibration images). ONNX Runtime runs a quantised ``Conv`` in integers only when its whole
DQ -> Conv -> Q pattern survives into ``QLinearConv`` (onnxruntime#12487), so besides ``Conv`` and ``Gemm`` the ops
between them in the learned trunks are quantised too — residual and FPN ``Add`` (``QLinearAdd``), ``Relu``/``Clip``
(folded into the convolution's output range), ``MaxPool`` and ``Resize`` (run on uint8) — never the coordinate
arithmetic (``COORDINATE_OPS``). What onnxruntime made of it is counted on its optimised graph
(``fused_op_counts``) and recorded in the file's metadata. The stem convolution (3 input channels) stays float:
int8 gives no speed there (measured: as slow as float32, plus a dequantisation) and it reads the image itself.
OpenVINO: NNCF's default (performance preset, symmetric weights and activations), which also places its quantisers
where OpenVINO's CPU plugin fuses them. In both, the layers whose outputs *are* the answer stay in float — box
regression, class scores, mask logits, the RPN's heads (``Family.keep_float``) — as do RoIAlign and NMS, and in
OpenVINO every op that computes with coordinates (``COORDINATE_OPS``). Whether the result is accurate enough is not
assumed: ``check-export --data`` measures its AP against eager, and ``export.repair`` returns layers to float until
it is within a limit.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import random
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from detdemo.errors import DetDemoError
from detdemo.fileio import IMAGE_EXTENSIONS

DEFAULT_CALIBRATION_IMAGES = 64
QUANTISED_OPS = ("Conv", "Gemm")
# between quantised convolutions in a learned trunk: ops onnxruntime fuses or runs on uint8 once they are quantised
# (QLinearAdd; Relu/Clip folded into the producer's range; MaxPool/Resize with their Q/DQ dropped)
TRUNK_OPS = ("Add", "Relu", "Clip", "MaxPool", "Resize")
STEM_CHANNELS = 4  # a convolution with at most this many input channels reads the image: kept float


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


def _module(name: str) -> str:
    return name.rsplit("/", 1)[0]


def _is_coordinate_op(name: str) -> bool:
    return any(re.fullmatch(p, name) for p in COORDINATE_OPS)


def _stem(node, initializers: dict) -> bool:
    """A plain convolution over at most ``STEM_CHANNELS`` input channels (weight shape: out, in/groups, kh, kw)."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in initializers:
        return False
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    return groups == 1 and initializers[node.input[1]].dims[1] <= STEM_CHANNELS


def onnx_plan(graph, keep_float: tuple[str, ...], also_float: tuple[str, ...] = ()) -> dict:
    """Which nodes of a (pre-processed) graph are quantised: ``nodes``; and why the others of their kind are not:
    ``kept_float`` (the family's answer layers), ``stem``, ``returned_to_float`` (``also_float``, from a repair)."""
    initializers = {i.name: i for i in graph.initializer}
    kept = set(float_nodes(graph, keep_float))
    returned = set(also_float)
    stem = {n.name for n in graph.node if _stem(n, initializers)} - kept
    convs = [n.name for n in graph.node if n.op_type in QUANTISED_OPS and n.name not in kept | stem | returned]
    modules = {_module(name) for name in convs}

    def in_trunk(name: str) -> bool:  # its module, or the block around it (an activation module), holds a conv
        scopes = {_module(name), _module(_module(name))} - {"/model", ""}
        return any(m == s or m.startswith(s + "/") for m in modules for s in scopes)

    trunk = [n.name for n in graph.node if n.op_type in TRUNK_OPS and n.name not in returned
             and not _is_coordinate_op(n.name) and in_trunk(n.name)]
    return {"nodes": convs + trunk, "quantized_convs": convs, "trunk_ops": trunk, "kept_float": sorted(kept),
            "stem": sorted(stem), "returned_to_float": sorted(returned & {n.name for n in graph.node})}


def _quantize_static():
    try:
        import onnx  # noqa: F401
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise DetDemoError(f"format onnx-int8 needs onnxruntime's quantisation tools ({exc}); pip install "
                           "onnxruntime") from None
    return CalibrationMethod, QuantFormat, QuantType, quantize_static, quant_pre_process


class OnnxQuantizer:
    """One model quantised possibly many times (``export.repair`` returns layers to float one group at a time):
    prepared and calibrated once, then each ``write`` only re-places the Q/DQ pairs (seconds, where calibrating
    R50-FPN on 16 images took 80 s)."""

    def __init__(self, fp32: Path, calibration: list[Path], transform, keep_float: tuple[str, ...],
                 workdir: Path) -> None:
        import onnx

        self._cls = _quantize_static()
        self.keep_float, self.calibration, self.transform = keep_float, calibration, transform
        self.workdir = Path(workdir)
        self.prepared = self.workdir / "prepared.onnx"
        with _quiet_root_logger():
            self._cls[4](str(fp32), str(self.prepared), skip_symbolic_shape=True)  # symbolic inference fails on NMS
        self.graph = onnx.load(str(self.prepared), load_external_data=False).graph
        self.input_name = self.graph.input[0].name
        self.cache = self.workdir / "calibration.json"
        self._cached = "calibration_cache_path" in inspect.signature(self._cls[3]).parameters  # onnxruntime >= 1.31
        self.plan = onnx_plan(self.graph, keep_float)

    def write(self, out: Path, also_float: tuple[str, ...] = (), count_fused: bool = True) -> dict:
        """Write ``out`` (QDQ INT8) with the nodes ``also_float`` returned to float; returns what was done (with
        ``count_fused``, what onnxruntime fuses: a session of its own, skipped for the repair's candidates)."""
        calibration_method, quant_format, quant_type, quantize_static, _ = self._cls
        plan = onnx_plan(self.graph, self.keep_float, tuple(also_float))
        options = {"calibration_cache_path": str(self.cache)} if self._cached else {}
        reader = None if self._cached and self.cache.is_file() else _Reader(self.calibration, self.transform,
                                                                               self.input_name)
        if not plan["nodes"]:  # every layer in float (quantize_static reads an empty node list as "all nodes")
            shutil.copyfile(self.prepared, out)
        else:
            with _quiet_root_logger():  # onnxruntime.quantization advises on the root logger
                quantize_static(str(self.prepared), str(out), reader, quant_format=quant_format.QDQ,
                                per_channel=True, weight_type=quant_type.QInt8, activation_type=quant_type.QUInt8,
                                op_types_to_quantize=[*QUANTISED_OPS, *TRUNK_OPS], nodes_to_quantize=plan["nodes"],
                                nodes_to_exclude=plan["kept_float"] + plan["stem"] + plan["returned_to_float"],
                                calibrate_method=calibration_method.MinMax, **options)
        return {"quantization": {
            "method": "onnxruntime.quantization.quantize_static", "format": "QDQ", "prepared": "quant_pre_process",
            "weights": "int8 per channel", "activations": "uint8 per tensor, MinMax",
            "calibration_images": len(self.calibration), "quantized_nodes": len(plan["quantized_convs"]),
            "quantized_trunk_ops": len(plan["trunk_ops"]), "kept_float": list(self.keep_float),
            "kept_float_nodes": len(plan["kept_float"]), "stem_float_nodes": plan["stem"],
            "returned_to_float": plan["returned_to_float"],
            **({"onnxruntime_fused": fused_op_counts(out)} if count_fused else {}),
            "calibration_files_sample": [p.name for p in self.calibration[:5]]}}


def quantize_onnx(fp32: Path, out: Path, calibration: list[Path], transform, keep_float: tuple[str, ...],
                  also_float: tuple[str, ...] = ()) -> dict:
    """Write ``out`` (QDQ INT8) from ``fp32``; returns what was done, for the file's metadata."""
    _quantize_static()
    with tempfile.TemporaryDirectory(prefix="detdemo-int8-") as work:
        return OnnxQuantizer(fp32, calibration, transform, keep_float, Path(work)).write(out, also_float)


FUSED_OPS = ("QLinearConv", "QLinearAdd", "QGemm", "QLinearMatMul", "QLinearConcat", "QLinearMul")
FLOAT_OPS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul")


def fused_op_counts(path: Path) -> dict:
    """What onnxruntime's CPU provider makes of a QDQ file: its integer kernels (QLinearConv, QLinearAdd, QGemm...),
    the float convolutions and GEMMs left, and the Quantize/DequantizeLinear nodes left, counted on the graph it
    optimises (``SessionOptions.optimized_model_filepath``, extended level: the QDQ fusions, before the layout
    rewrites specific to this CPU)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="detdemo-ortopt-") as work:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(work) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
    counts = Counter(n.op_type for n in graph.node)
    return {**{op: counts[op] for op in FUSED_OPS if counts[op]},
            "float_conv": sum(counts[op] for op in FLOAT_OPS if "Conv" in op),
            "float_gemm": sum(counts[op] for op in FLOAT_OPS if "Conv" not in op),
            "QuantizeLinear": counts["QuantizeLinear"], "DequantizeLinear": counts["DequantizeLinear"],
            "onnxruntime": ort.__version__}


# Ops that compute with coordinates stay float in every family: box decoding and clipping, the inputs of NMS, RoI
# pooling and anchors. In torchvision's detectors they sit directly in the model, its rpn or its roi_heads (not in a
# learned submodule), or in the poolers and anchor generators. Measured on the bundled model: NNCF quantising them
# cost 0.065 bbox AP; kept float, the INT8 file is within 0.002 of eager (docs/benchmarks.md §4).
COORDINATE_OPS = (".*/model/[^/]+$", ".*/model/(rpn|roi_heads)/[^/]+$", ".*/model/roi_heads/[a-z_]*roi_pool/.*",
                  ".*/model/(rpn/)?anchor_generator/.*")


def nncf_module():
    try:
        import nncf
    except ImportError:
        raise DetDemoError("format openvino-int8 needs NNCF: pip install 'detdemo[openvino]' (or pip install "
                           "nncf)") from None
    return nncf


def openvino_ignored_scope(keep_float: tuple[str, ...]):
    """What NNCF leaves float: the family's answer layers and every coordinate op. OpenVINO keeps the ONNX node
    names, which follow module paths (/model/roi_heads/box_predictor/...)."""
    patterns = [".*/model/" + k.replace(".", "/") + "/.*" for k in keep_float] + list(COORDINATE_OPS)
    return nncf_module().IgnoredScope(patterns=patterns, validate=False)


@contextlib.contextmanager
def nncf_errors():
    """NNCF's progress at WARNING, and its exceptions as one DetDemoError line."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    except DetDemoError:
        raise
    except Exception as exc:  # noqa: BLE001 - NNCF raises its own types
        raise DetDemoError(f"NNCF could not quantise this model ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    finally:
        logger.setLevel(level)


def openvino_settings(calibration: list[Path], keep_float: tuple[str, ...], n_inputs: int) -> dict:
    """What the file's metadata says about an NNCF quantisation."""
    return {"method": f"nncf.quantize {nncf_module().__version__}", "format": "OpenVINO IR",
            "weights": "int8 per channel", "activations": "int8, NNCF defaults", "calibration_images": n_inputs,
            "kept_float": [*keep_float, "coordinate ops (decoding, RoI pooling, anchors)"],
            "calibration_files_sample": [p.name for p in calibration[:5]]}


def openvino_calibration(calibration: list[Path], transform) -> list:
    inputs = list(calibration_inputs(calibration, transform))
    if not inputs:
        raise DetDemoError("none of the calibration images could be read")
    return inputs


def quantize_openvino(model, calibration: list[Path], transform, keep_float: tuple[str, ...]):
    """(INT8 OpenVINO model, what was done) from a float OpenVINO model converted from our ONNX export."""
    nncf = nncf_module()
    inputs = openvino_calibration(calibration, transform)
    with nncf_errors():
        quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs),
                                  ignored_scope=openvino_ignored_scope(keep_float))
    return quantized, {"quantization": openvino_settings(calibration, keep_float, len(inputs))}


__all__ = ["OnnxQuantizer", "calibration_files", "float_nodes", "fused_op_counts", "onnx_plan", "openvino_calibration",
           "openvino_ignored_scope", "openvino_settings", "quantize_onnx", "quantize_openvino"]
