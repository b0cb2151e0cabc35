"""ONNX through the dynamo exporter: ``torch.onnx.export(exported_program, dynamo=True)`` on the graph
``export.torch_export`` traces, the exporter PyTorch keeps (the TorchScript-based one, ``dynamo=False``, is
deprecated and will be removed).

Same graph contract as the legacy file (input ``image``, outputs named after ``Family.outputs``, dynamic height,
width and detection count), and the same ONNX Runtime rewrites (``export.wrappers``, ``export.onnx_sigmoid``). The
conversion runs inside ``export.patches.export_patches()``: the exporter re-traces the program while decomposing
it, and needs the same fake NMS kernel.

Node names. The legacy exporter names nodes after module paths (``/model/roi_heads/box_predictor/cls_score/Gemm``)
and the INT8 and OpenVINO derivations choose the layers that stay float by those names (``export.int8``). The
dynamo exporter names nodes ``node_Gemm_12`` and records the module path in each node's metadata
(``pkg.torch.onnx.name_scopes``); ``name_nodes_by_module`` renames every node after its deepest module, the legacy
way, so a dynamo ``model.onnx`` feeds the same derivations unchanged and reads the same in a profiler. The
metadata itself is then dropped: it holds stack traces with the exporting machine's paths.
"""

from __future__ import annotations

import ast
import contextlib
import io
import warnings
from collections import Counter
from pathlib import Path

import torch

from detdemo.fileio import atomic_path
from detdemo.inference.pipeline import transform_spec
from detdemo.models import ModelConfig, get_spec
from export.errors import ExportError, first_line
from export.metadata import build_metadata, stamp_onnx
from export.onnx_sigmoid import exact_sigmoid
from export.patches import export_patches
from export.torch_export import example_size, export_program

EXPORTER = "torch.onnx.export(dynamo=True)"
SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def module_scope(node) -> str | None:
    """The dotted path of the deepest module a dynamo-exported node came from ("" for the wrapper itself), or None
    when the exporter recorded none (nodes its optimiser created)."""
    raw = next((p.value for p in node.metadata_props if p.key == SCOPES_KEY), None)
    if raw is None:
        return None
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    # [outer module, ..., innermost module, the FX node's own name]
    return scopes[-2] if isinstance(scopes, list) and len(scopes) >= 2 else None


def name_nodes_by_module(graph) -> int:
    """Rename every node with a recorded module to ``/<module path with slashes>/<OpType>[_k]`` (unique), as the
    legacy exporter names them; returns how many were renamed. Value names are untouched (they are the graph's
    wiring); node names are labels."""
    seen: Counter[str] = Counter()
    renamed = 0
    for node in graph.node:
        scope = module_scope(node)
        if scope is None:
            continue
        base = "/" + "/".join(p for p in [*scope.split("."), node.op_type] if p)
        seen[base] += 1
        node.name = base if seen[base] == 1 else f"{base}_{seen[base] - 1}"
        renamed += 1
    return renamed


def export_onnx_dynamo(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "",
                       example_hw: tuple[int, int] | None = None, opset: int | None = None) -> Path:
    import onnx
    import onnxruntime

    names = list(get_spec(cfg.arch).family_info.outputs)
    program = export_program(model, cfg, onnx_rewrites=True, example_hw=example_hw)
    example = torch.rand(3, *(example_hw or example_size(model)))
    console = io.StringIO()
    try:
        with export_patches(), warnings.catch_warnings(), contextlib.redirect_stdout(console):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=["image"],
                                             output_names=names, opset_version=opset, optimize=True, verbose=False)
        proto = onnx_program.model_proto
        name_nodes_by_module(proto.graph)
        exact_sigmoid(proto.graph)  # after naming: the new nodes take the Sigmoid's module path
        for node in proto.graph.node:  # stack traces with this machine's paths, FX dumps: not for a shipped file
            del node.metadata_props[:]
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"{cfg.arch}: ONNX export (dynamo) failed ({first_line(exc)})") from None
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    meta = build_metadata(cfg, "onnx", exporter=EXPORTER, opset=opset_used, onnx=onnx.__version__,
                          onnxruntime=onnxruntime.__version__, onnxscript=_onnxscript_version(),
                          transform=transform_spec(model), export_id=export_id)
    stamp_onnx(proto, meta)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def _onnxscript_version() -> str:
    try:
        import onnxscript
    except ImportError:
        return ""
    return onnxscript.__version__


__all__ = ["EXPORTER", "export_onnx_dynamo", "module_scope", "name_nodes_by_module"]
