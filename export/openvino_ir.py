"""OpenVINO IR (``model.xml`` + ``model.bin``), converted from detdemo's own ONNX export.

Weights stay float32 in the file (``compress_to_fp16=False``); the precision is chosen when the model is loaded
(``export.openvino_runtime``): bf16 on CPUs with AVX512-BF16 or AMX, float32 elsewhere. The INT8 IR
(``openvino-int8``) is the same conversion quantised by NNCF (``export.int8``). The detdemo metadata (classes,
preprocessing, export id) travels in the IR's ``rt_info``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from detdemo.errors import DetDemoError
from detdemo.fileio import TEMP_SUFFIX

RT_INFO_KEY = "detdemo"


def openvino_module():
    try:
        import openvino
    except ImportError:
        raise DetDemoError("the openvino format and backend need the openvino package: pip install "
                           "'detdemo[openvino]' (or pip install openvino)") from None
    return openvino


def convert_onnx(onnx_file: Path):
    ov = openvino_module()
    try:
        return ov.convert_model(str(onnx_file))
    except Exception as exc:  # noqa: BLE001 - OpenVINO's frontends raise their own types
        raise DetDemoError(f"{onnx_file}: OpenVINO cannot convert this ONNX model ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]})") from None


def export_openvino(model, path: Path, meta_json: str) -> Path:
    """``path`` (.xml) and its .bin beside it, each written atomically (the .bin first, the .xml naming it last)."""
    ov = openvino_module()
    model.set_rt_info(meta_json, [RT_INFO_KEY])
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        ov.save_model(model, str(staging / path.name), compress_to_fp16=False)
        # the .xml finds its weights as the .bin of the same stem beside it: the .bin goes in first, the .xml last
        os.replace(staging / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
