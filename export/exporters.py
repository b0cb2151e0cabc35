"""Every export format, run in order into one export folder: TorchScript (scripting), ONNX (the dynamo exporter,
or the deprecated TorchScript-based one), the ONNX-derived INT8 and OpenVINO files, the ExportedProgram (``pt2``)
and the AOTInductor packages (``aoti``, and ``aoti-bf16`` on a CPU with bf16).

ONNX: ``torch.onnx.export(dynamo=True)`` on the program ``export.torch_export`` traces (``export.onnx_dynamo``),
for every family torch.export handles; the TorchScript-based exporter (``dynamo=False``, opset 17, dynamic height,
width and detection count) for the others (``export.torch_export.BLOCKED_FAMILIES``) or when asked for
(``--onnx-exporter legacy``). The exporter used is recorded in the file's metadata with the library versions.

TorchScript is deprecated and PyTorch will remove ``torch.jit``: where scripting itself no longer works, the format
is skipped with the reason (``skipped`` in the manifest), and so are ``pt2``/``aoti`` for a family torch.export
cannot trace and ``aoti-bf16`` on a CPU without bf16; every other format is still exported.

An export folder is a set of files that must agree. Every file carries one export id, the manifest is deleted
before anything is written and written last, so a folder whose export was interrupted has no manifest (or files
whose id differs from it) and ``export.runtime`` refuses it instead of serving a mixture.
"""

from __future__ import annotations

import time
import uuid
import warnings
from pathlib import Path
from unittest import mock

import torch
import torchvision.ops.poolers

from detdemo.checkpoint import load_checkpoint, save_checkpoint
from detdemo.errors import DetDemoError
from detdemo.fileio import atomic_path, remove_stale_temps, require_free_space, write_json
from detdemo.inference.pipeline import transform_spec
from detdemo.models import ModelConfig, get_spec, model_from_checkpoint
from export.errors import ExportError
from export.formats import EAGER_FILE, EXPORTED, FORMATS, MANIFEST, ONNX_EXPORTERS, companions, exported_format
from export.metadata import build_metadata, dumps, stamp_onnx
from export.onnx_sigmoid import exact_sigmoid
from export.quiet import torchscript_quiet
from export.wrappers import OnnxDetector, ScriptableDetector, gather_merge_levels

ONNX_OPSET = 17  # the legacy exporter's; the dynamo exporter's own default is recorded in each file
LEGACY_ONNX_EXPORTER = "torch.onnx.export(dynamo=False)"


def torchscript_unavailable() -> str | None:
    """Why this PyTorch cannot script at all (None: it can): scripting a one-line function fails only where
    torch.jit itself is gone or broken, never because of a model."""
    def probe(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    try:
        with torchscript_quiet():
            torch.jit.script(probe)
    except Exception as exc:  # noqa: BLE001 - whatever a removed torch.jit raises
        return (f"torch.jit.script does not work in this PyTorch ({torch.__version__}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); TorchScript is deprecated, use onnx or pt2")
    return None


def onnx_exporter_for(arch: str, requested: str = "auto") -> str:
    """"dynamo" or "legacy": ``requested`` unless auto, else dynamo where torch.export handles the family."""
    from export.torch_export import blocked_reason

    if requested not in ONNX_EXPORTERS:
        raise DetDemoError(f"unknown ONNX exporter {requested!r}; choose from {', '.join(ONNX_EXPORTERS)}")
    if requested != "auto":
        return requested
    return "legacy" if blocked_reason(arch) else "dynamo"


def skip_reason(fmt: str, arch: str) -> str | None:
    """Why ``fmt`` cannot be made here for ``arch`` for a known, stated reason (None: try it)."""
    if fmt == "torchscript":
        return torchscript_unavailable()
    if fmt in ("pt2", "aoti", "aoti-bf16"):
        from export.torch_export import blocked_reason

        reason = blocked_reason(arch)
        if reason:
            return f"torch.export cannot export {arch} yet: {reason}"
    if fmt == "aoti-bf16":
        from export.aoti import NO_BF16, bf16_problem

        return NO_BF16 if bf16_problem("cpu") == NO_BF16 else None
    return None


def export_torchscript(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "") -> Path:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(ScriptableDetector(model.eval()))
    except Exception as exc:  # noqa: BLE001 - torch.jit raises many types
        raise ExportError(f"{cfg.arch}: TorchScript export failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0]})") from None
    meta = build_metadata(cfg, "torchscript", exporter="torch.jit.script", transform=transform_spec(model),
                          export_id=export_id)
    with atomic_path(path) as tmp, torchscript_quiet():
        torch.jit.save(scripted, str(tmp), _extra_files={"detdemo.json": dumps(meta)})
    return path


def export_onnx(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "",
                example_hw: tuple[int, int] | None = None, opset: int | None = None, exporter: str = "auto") -> Path:
    """``model.onnx`` by the dynamo exporter or the legacy one (``onnx_exporter_for``)."""
    if onnx_exporter_for(cfg.arch, exporter) == "dynamo":
        from export.onnx_dynamo import export_onnx_dynamo

        return export_onnx_dynamo(model, cfg, path, export_id, example_hw, opset)
    return export_onnx_legacy(model, cfg, path, export_id, example_hw, opset or ONNX_OPSET)


def export_onnx_legacy(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "",
                       example_hw: tuple[int, int] | None = None, opset: int = ONNX_OPSET) -> Path:
    """The TorchScript-based exporter (``dynamo=False``; deprecated by PyTorch, which warns on every call)."""
    import onnx
    import onnxruntime

    names = get_spec(cfg.arch).family_info.outputs
    wrapper = OnnxDetector(model.eval(), names)
    if example_hw is None:  # a typical resized input; any size works afterwards (dynamic axes)
        t = model.transform
        example_hw = tuple(t.fixed_size[::-1]) if t.fixed_size else (t.min_size[-1], t.min_size[-1] * 4 // 3)
    example = torch.randn(3, *example_hw)
    dynamic = {"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in names}}
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad(), \
                    mock.patch.object(torchvision.ops.poolers, "_onnx_merge_levels", gather_merge_levels):
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=list(names), dynamic_axes=dynamic,
                                  do_constant_folding=True)
            proto = onnx.load(str(tmp))
            exact_sigmoid(proto.graph)
            onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{cfg.arch}: ONNX export failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        meta = build_metadata(cfg, "onnx", exporter=LEGACY_ONNX_EXPORTER, opset=opset,
                              onnx=onnx.__version__, onnxruntime=onnxruntime.__version__,
                              transform=transform_spec(model), export_id=export_id)
        stamp_onnx(proto, meta)
        onnx.save(proto, str(tmp))
    return path


def export_onnx_int8(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "",
                     calibration: list[Path] | None = None) -> Path:
    """Static INT8 (QDQ) from the folder's fp32 ``model.onnx``, calibrated on ``calibration`` images."""
    import onnx

    from export.int8 import quantize_onnx

    if not calibration:
        raise DetDemoError("format onnx-int8 needs calibration images: --calibration DATA_OR_FOLDER (your own "
                           "images: the quantisation ranges come from them)")
    fp32 = path.parent / FORMATS["onnx"].file
    with atomic_path(path) as tmp:
        info = quantize_onnx(fp32, tmp, calibration, model.transform, get_spec(cfg.arch).family_info.keep_float)
        proto = onnx.load(str(tmp))
        meta = build_metadata(cfg, "onnx-int8", exporter=f"{_onnx_exporter_of(fp32)} + " +
                              info["quantization"]["method"], transform=transform_spec(model), export_id=export_id,
                              **info)
        stamp_onnx(proto, meta)
        onnx.save(proto, str(tmp))
    return path


def export_openvino(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "") -> Path:
    from export.openvino_ir import convert_onnx, openvino_module
    from export.openvino_ir import export_openvino as save

    meta = build_metadata(cfg, "openvino", exporter="openvino.convert_model(model.onnx)",
                          openvino=openvino_module().__version__, transform=transform_spec(model), export_id=export_id)
    return save(convert_onnx(path.parent / FORMATS["onnx"].file), path, dumps(meta))


def export_openvino_int8(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "",
                         calibration: list[Path] | None = None) -> Path:
    """The OpenVINO IR of the folder's ``model.onnx``, quantised by NNCF on ``calibration`` images."""
    from export.int8 import quantize_openvino
    from export.openvino_ir import convert_onnx, openvino_module
    from export.openvino_ir import export_openvino as save

    if not calibration:
        raise DetDemoError("format openvino-int8 needs calibration images: --calibration DATA_OR_FOLDER (your own "
                           "images: the quantisation ranges come from them)")
    quantized, info = quantize_openvino(convert_onnx(path.parent / FORMATS["onnx"].file), calibration,
                                        model.transform, get_spec(cfg.arch).family_info.keep_float)
    meta = build_metadata(cfg, "openvino-int8", exporter="openvino.convert_model(model.onnx) + " +
                          info["quantization"]["method"], openvino=openvino_module().__version__,
                          transform=transform_spec(model), export_id=export_id, **info)
    return save(quantized, path, dumps(meta))


def _onnx_exporter_of(onnx_file: Path) -> str:
    """The exporter recorded in a detdemo ONNX file's metadata."""
    import json

    import onnx

    proto = onnx.load(str(onnx_file), load_external_data=False)
    meta = next((json.loads(p.value) for p in proto.metadata_props if p.key == "detdemo"), {})
    return meta.get("exporter", LEGACY_ONNX_EXPORTER)


def export_pt2(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "") -> Path:
    from export.pt2 import export_pt2 as save

    return save(model, cfg, path, export_id)


def export_aoti(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "", device: str = "cpu") -> Path:
    from export.aoti import export_aoti as compile_package

    return compile_package(model, cfg, path, export_id, device)


def export_aoti_bf16(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "",
                     device: str = "cpu") -> Path:
    from export.aoti import export_aoti as compile_package

    return compile_package(model, cfg, path, export_id, device, precision="bf16")


EXPORTERS = {"torchscript": export_torchscript, "onnx": export_onnx, "onnx-int8": export_onnx_int8,
             "openvino": export_openvino, "openvino-int8": export_openvino_int8, "pt2": export_pt2,
             "aoti": export_aoti, "aoti-bf16": export_aoti_bf16}


def export_order(formats: tuple[str, ...]) -> list[str]:
    """The requested formats plus those they are made from (the INT8 and OpenVINO files need model.onnx), in
    order."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise DetDemoError(f"unknown export format(s) {unknown}; choose from {', '.join(EXPORTED)}")
    formats = tuple(exported_format(f) for f in formats)  # openvino-bf16 runs the openvino file
    wanted = set(formats) | {FORMATS[f].needs for f in formats if FORMATS[f].needs}
    return [f for f in EXPORTED if f in wanted]


def export_checkpoint(checkpoint: str | Path, formats: tuple[str, ...], out: str | Path,
                      calibration: list[Path] | None = None, onnx_exporter: str = "auto", device: str = "cpu",
                      skipped: dict[str, str] | None = None) -> dict[str, Path]:
    """Export a checkpoint into ``out``: the eager checkpoint (the reference for checks) and each format.
    ``onnx_exporter``: auto, dynamo or legacy. ``device``: what the AOTInductor package is compiled for.
    ``skipped``: filled with the formats that could not be made for a stated reason (``skip_reason``), which the
    manifest records too; a format that fails for any other reason raises ``ExportError``."""
    order = export_order(formats)
    data = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    require_free_space(out, int(1.1 * weight_bytes) * (1 + len(order)),  # each file holds the weights at most once
                       f"the eager checkpoint and {len(order)} exported file(s) of {cfg.arch}")
    (out / MANIFEST).unlink(missing_ok=True)  # from here until the new manifest, the folder is "incomplete"
    export_id = uuid.uuid4().hex
    paths = {"eager": save_checkpoint(out / EAGER_FILE, model, cfg, train_config=data.get("train_config"),
                                      metrics=data.get("metrics"), export_id=export_id,
                                      dataset=data.get("dataset"))}
    timings = {}
    skipped = {} if skipped is None else skipped
    for fmt in order:
        reason = skip_reason(fmt, cfg.arch)
        if reason:
            skipped[fmt] = reason
            continue
        t0 = time.perf_counter()
        extra = {"calibration": calibration} if FORMATS[fmt].precision == "int8" else {}
        extra.update({"onnx": {"exporter": onnx_exporter}, "aoti": {"device": device},
                      "aoti-bf16": {"device": device}}.get(fmt, {}))
        paths[fmt] = EXPORTERS[fmt](model, cfg, out / FORMATS[fmt].file, export_id=export_id, **extra)
        timings[fmt] = round(time.perf_counter() - t0, 2)
    if len(paths) == 1:
        raise ExportError(f"{cfg.arch}: none of the formats could be exported: " +
                          "; ".join(f"{fmt}: {why}" for fmt, why in skipped.items()))
    for fmt in (f for f in EXPORTED if f not in paths):  # an earlier export's other formats, and skipped ones
        for name in (FORMATS[fmt].file, *companions(FORMATS[fmt].file)):
            (out / name).unlink(missing_ok=True)
    metrics = data.get("metrics") or {}
    kept = ("epoch", "bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75")
    manifest = {"export_id": export_id, "source": str(checkpoint), "arch": cfg.arch, "class_names": cfg.class_names,
                "files": {k: p.name for k, p in paths.items()}, "export_seconds": timings,
                **({"skipped": skipped} if skipped else {}),
                "metrics": {k: metrics[k] for k in kept if k in metrics}}  # the source's val figures, if any
    write_json(out / MANIFEST, manifest)
    return paths


def record_verification(folder: Path, figures: dict) -> None:
    """Add each file's verified figures (check-export) to the manifest, keeping everything else."""
    from export.manifest import read_manifest, verified_of

    manifest = read_manifest(folder) or {}
    manifest["verified"] = {**verified_of(manifest), **figures}
    write_json(folder / MANIFEST, manifest)
