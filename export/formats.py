"""Formats and backends, each declared once: what an export folder holds and which runtime reads each file.

A leaf (no torch, no onnx): the exporters, the runtimes, the CLI and the app all read these tables, so a new
format or backend is one row here plus its exporter or runtime class.
"""

from __future__ import annotations

from dataclasses import dataclass

from detdemo.models.portable import CONFIG_FILE, WEIGHTS_FILE

EAGER_FILE = "model.pt"  # the checkpoint an export folder carries: the reference for parity and accuracy checks
PORTABLE_FILE = WEIGHTS_FILE  # what a published model repo carries instead: safetensors (+ config.json)
MANIFEST = "export.json"  # what was exported, when, from what, with which export id and verified figures


@dataclass(frozen=True)
class Backend:
    name: str
    label: str  # for people (the app's radio buttons, reports)
    reads: tuple[str, ...]  # the file kinds it runs: "checkpoint", "safetensors", "torchscript", "onnx", "openvino",
    # "pt2" (an ExportedProgram), "aoti" (an AOTInductor package)
    runtime: str  # "module:Class", imported only when used
    unsafe: bool = False  # loading runs code from the file: never for files from strangers


@dataclass(frozen=True)
class Format:
    name: str  # --format value
    file: str  # its file name in an export folder
    backend: str  # the backend that runs it
    precision: str  # "fp32", "bf16" or "int8": how the file runs, and so how it is judged (REDUCED: by AP)
    choice: str = ""  # its name as a backend choice in the app and its API ("onnxruntime", "onnxruntime-int8")
    needs: str = ""  # a format that must be exported first (the ONNX file the others are made from)
    library: str = ""  # the Python package it needs, named in the error when missing
    runs: str = ""  # another format whose file this one runs at its own precision (not a file of its own)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("pytorch", "PyTorch", ("checkpoint", "safetensors"), "detdemo.inference.eager:EagerPredictor"),
    Backend("torchscript", "TorchScript", ("torchscript",), "export.runtime:TorchScriptPredictor", unsafe=True),
    Backend("onnxruntime", "ONNX Runtime", ("onnx",), "export.runtime:OnnxPredictor"),
    Backend("openvino", "OpenVINO", ("openvino",), "export.openvino_runtime:OpenVinoPredictor"),
    Backend("pt2", "ExportedProgram", ("pt2",), "export.pt2:ExportedProgramPredictor", unsafe=True),
    Backend("inductor", "AOTInductor", ("aoti",), "export.aoti:InductorPredictor", unsafe=True),
)}

FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("torchscript", "model.torchscript.pt", "torchscript", "fp32", "torchscript"),
    Format("onnx", "model.onnx", "onnxruntime", "fp32", "onnxruntime"),
    Format("onnx-int8", "model.int8.onnx", "onnxruntime", "int8", "onnxruntime-int8", needs="onnx",
           library="onnxruntime"),
    # OpenVINO's float IR is two choices: fp32, checked detection by detection like ONNX Runtime, and bf16 (on CPUs
    # with AVX512-BF16/AMX; fp32 elsewhere), judged by AP. Export folders before this split list only "openvino".
    Format("openvino", "model.xml", "openvino", "fp32", "openvino", needs="onnx", library="openvino"),
    Format("openvino-bf16", "model.xml", "openvino", "bf16", "openvino-bf16", needs="onnx", library="openvino",
           runs="openvino"),
    Format("openvino-int8", "model.int8.xml", "openvino", "int8", "openvino-int8", needs="onnx", library="nncf"),
    Format("pt2", "model.pt2", "pt2", "fp32", "pt2"),
    Format("aoti", "model.aoti.pt2", "inductor", "fp32", "inductor"),
    # The same package computing in bf16 (the backbone and heads; CPUs with AVX512-BF16/AMX), compiled with
    # freezing: a file of its own, judged by AP. Both are AOTInductor packages; each records its precision.
    Format("aoti-bf16", "model.aoti-bf16.pt2", "inductor", "bf16", "inductor-bf16"),
)}
EXPORTED = tuple(f.name for f in FORMATS.values() if not f.runs)  # formats that are files: --format's choices
EAGER_CHOICE = "pytorch"  # the eager checkpoint's name as a backend choice


def choice_of(fmt: str) -> str:
    """The app/API name of a format ("eager" -> "pytorch")."""
    return EAGER_CHOICE if fmt == "eager" else FORMATS[fmt].choice


def format_of_choice(choice: str) -> str:
    if choice == EAGER_CHOICE:
        return "eager"
    found = next((f.name for f in FORMATS.values() if f.choice == choice), None)
    if found is None:
        raise KeyError(choice)
    return found


def choice_label(choice: str) -> str:
    if choice == EAGER_CHOICE:
        return BACKENDS["pytorch"].label
    fmt = FORMATS[format_of_choice(choice)]
    precision = {"int8": " INT8", "bf16": " bf16"}.get(fmt.precision, "")
    return BACKENDS[fmt.backend].label + precision


COMPANIONS = {  # files a file needs beside it
    "model.xml": ("model.bin",), "model.int8.xml": ("model.int8.bin",), PORTABLE_FILE: (CONFIG_FILE,)}
EAGER_FILES = (EAGER_FILE, PORTABLE_FILE)  # what the "eager" entry of a manifest may name

DEFAULT_BACKEND_FOR_KIND = {"checkpoint": "pytorch", "safetensors": "pytorch", "torchscript": "torchscript",
                            "onnx": "onnxruntime", "openvino": "openvino", "pt2": "pt2", "aoti": "inductor"}
REDUCED = ("int8", "bf16", "fp16")  # judged by accuracy on data, not detection by detection
# What a user who names no format gets: formats on exporters PyTorch keeps (ONNX through the dynamo exporter, the
# ExportedProgram), full precision. TorchScript (deprecated: PyTorch will remove torch.jit), the reduced-precision
# files and the AOTInductor package (compiled for one machine's CPU or GPU) are asked for by name.
DEFAULT_FORMATS = ("onnx", "pt2")
ONNX_EXPORTERS = ("auto", "dynamo", "legacy")  # --onnx-exporter; auto: dynamo where torch.export handles the family


def format_of_file(name: str) -> str | None:
    """The format that wrote a file of this name (not a second way of running it)."""
    return next((f.name for f in FORMATS.values() if f.file == name and not f.runs), None)


def run_as(fmt: str) -> tuple[str, ...]:
    """The other formats that run ``fmt``'s file (``openvino`` -> ``openvino-bf16``)."""
    return tuple(f.name for f in FORMATS.values() if f.runs == fmt)


def exported_format(fmt: str) -> str:
    """The format whose file ``fmt`` is (itself, or the one it ``runs``)."""
    return FORMATS[fmt].runs or fmt


def backend_label(name: str) -> str:
    return BACKENDS[name].label if name in BACKENDS else name


def companions(name: str) -> tuple[str, ...]:
    return COMPANIONS.get(name, ())


def format_backend(fmt: str) -> str:
    return "pytorch" if fmt == "eager" else FORMATS[fmt].backend


def format_precision(fmt: str) -> str:
    return "fp32" if fmt == "eager" else FORMATS[fmt].precision
