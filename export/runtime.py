"""Runtimes for exported files, and ``load_predictor``: one entry point from any model file or folder to a
``Predictor`` (``detdemo.inference``), whichever runtime reads it.

Files are recognised by their content, never by their name alone: a detdemo checkpoint, a TorchScript archive, an
ExportedProgram (``.pt2``) and an AOTInductor package are all zip files (told apart by TorchScript's ``code/``
entries, the ExportedProgram's ``archive_format`` and ``models/``, the package's ``data/aotinductor/``), an ONNX
model is a protobuf ``ModelProto``.
An export folder is read through its manifest, and every file must carry the manifest's export id: a folder where
an interrupted re-export left files of two exports side by side is refused, never served.
"""

from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from pathlib import Path

import torch

from detdemo.checkpoint import RUN_CHECKPOINTS, load_checkpoint
from detdemo.errors import CheckpointError, DetDemoError
from detdemo.inference.detections import Predictor
from detdemo.inference.device import resolve_device, usable_cpus
from detdemo.inference.pipeline import HostPipeline, transform_from_spec
from detdemo.models.portable import CONFIG_FILE
from export.archives import archive_kind
from export.errors import first_line
from export.formats import (
    BACKENDS,
    DEFAULT_BACKEND_FOR_KIND,
    EAGER_FILE,
    FORMATS,
    MANIFEST,
    PORTABLE_FILE,
    companions,
    format_backend,
    format_precision,
    run_as,
)
from export.manifest import member, read_manifest
from export.quiet import torchscript_quiet

TORCHSCRIPT_EXTRA = "detdemo.json"


# -- recognising files -------------------------------------------------------------------------------------------


def _looks_like_onnx(path: Path) -> bool:
    """A serialised ModelProto starts with field 1 (ir_version, a small varint) then the next field's tag."""
    with open(path, "rb") as f:
        head = f.read(3)
    return len(head) == 3 and head[0] == 0x08 and 1 <= head[1] <= 64 and head[2] in (0x12, 0x1A, 0x22, 0x28,
                                                                                      0x32, 0x3A)


def file_kind(path: str | Path) -> str:
    """``checkpoint``, ``safetensors``, ``torchscript``, ``onnx``, ``openvino``, ``pt2`` or ``aoti``, from the file's
    bytes; DetDemoError naming the file otherwise."""
    from detdemo.models.portable import looks_like_safetensors

    path = Path(path)
    if not path.is_file():
        raise DetDemoError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise DetDemoError(f"{path}: model file is empty (0 bytes)")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DetDemoError(f"{path}: damaged zip archive ({exc})") from None
        kind = archive_kind(names)
        if kind:
            return kind
        load_checkpoint(path, mmap=True)  # CheckpointError says what it is instead (a plain state dict, ...)
        return "checkpoint"
    if _looks_like_onnx(path):
        return "onnx"
    if looks_like_safetensors(path):
        return "safetensors"
    with open(path, "rb") as f:
        head = f.read(512)
    if head.lstrip().startswith(b"<?xml") and b"<net " in head:
        return "openvino"
    if path.suffix.lower() in (".pt", ".pth", ".ckpt"):  # named like a checkpoint, but not a zip archive
        raise CheckpointError(f"{path}: cannot read checkpoint: the file is truncated or corrupt (not a zip "
                              "archive): neither a detdemo checkpoint, a TorchScript file nor an ONNX model")
    raise DetDemoError(f"{path}: not a model detdemo can run (expected a detdemo checkpoint, safetensors weights, a "
                       "TorchScript file, an ONNX model, an OpenVINO IR, an ExportedProgram .pt2 or an AOTInductor "
                       "package)")


def folder_files(folder: str | Path, partial: bool = False) -> dict[str, Path]:
    """Format name -> file ("eager" for the checkpoint or safetensors weights) of an export folder (through its
    manifest), or {"eager": best.pt or last.pt} of a training run folder. ``partial``: leave out listed files that
    are absent (a Hub snapshot where only some backends' files were downloaded) instead of refusing the folder."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    exported = [f.file for f in FORMATS.values()]
    if manifest is None:
        if (folder / PORTABLE_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            return {"eager": folder / PORTABLE_FILE}  # safetensors + config.json, as on the Hub
        if any((folder / n).is_file() for n in exported):
            raise DetDemoError(f"{folder}: exported files without {MANIFEST}: an export was interrupted or the "
                               "folder was assembled by hand; re-run `detdemo export`")
        run = next((folder / n for n in RUN_CHECKPOINTS if (folder / n).is_file()), None)
        if run is None:
            raise DetDemoError(f"{folder}: no model files in this folder (expected an export folder from "
                               f"`detdemo export` or a run folder with {' or '.join(RUN_CHECKPOINTS)})")
        return {"eager": run}
    listed = {fmt: member(folder, n) for fmt, n in (manifest.get("files") or {}).items()}
    present = {fmt: p for fmt, p in listed.items()
               if all((folder / n).is_file() for n in (p.name, *companions(p.name)))}
    missing = sorted(n for p in listed.values() for n in (p.name, *companions(p.name)) if not (folder / n).is_file())
    if missing and not partial:
        raise DetDemoError(f"{folder}: {MANIFEST} lists {', '.join(missing)}, which is missing; re-run "
                           "`detdemo export`")
    for fmt in list(present):  # the same file run another way (openvino's IR as openvino-bf16)
        present.update({other: present[fmt] for other in run_as(fmt)})
    order = ["eager", *FORMATS]
    return {fmt: present[fmt] for fmt in order if fmt in present}


def check_export_id(path: Path, file_id: str | None) -> None:
    """Refuse a file that belongs to another export than its folder's manifest says."""
    manifest = read_manifest(path.parent)
    if manifest is None or "export_id" not in manifest:
        return
    if file_id != manifest["export_id"]:
        raise DetDemoError(f"{path.parent}: a mixture of two exports ({path.name} is from export "
                           f"{file_id or 'unknown'}, {MANIFEST} says {manifest['export_id']}); an export was "
                           "interrupted: re-run `detdemo export`")


# -- runtimes ----------------------------------------------------------------------------------------------------


class TorchScriptPredictor(HostPipeline):
    """Loading a TorchScript file runs code from it: only load files you trust (docs/export.md)."""

    backend = "torchscript"
    uses_torch_threads = True

    def __init__(self, path: str | Path, device="auto") -> None:
        super().__init__()
        self._device = resolve_device(device)
        self.device = str(self._device)
        extra = {TORCHSCRIPT_EXTRA: ""}
        try:
            with torchscript_quiet():
                self.module = torch.jit.load(str(path), map_location=self._device, _extra_files=extra)
        except Exception as exc:  # noqa: BLE001 - a damaged file, or a PyTorch without torch.jit
            raise DetDemoError(f"{path}: cannot load TorchScript file ({first_line(exc)})") from None
        self.meta = json.loads(extra[TORCHSCRIPT_EXTRA] or "{}")
        init_from_meta(self, Path(path))
        self.precision = "fp32"

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torchscript_quiet():  # the scripted detector's first call warns about its (losses, detections) tuple
            out = self.module(x.to(self._device))
        return {k: v.cpu() for k, v in out.items()}


def init_from_meta(predictor: HostPipeline, path: Path) -> None:
    meta = predictor.meta
    if "transform" not in meta:
        raise DetDemoError(f"{path}: exported without detdemo metadata; re-export with `detdemo export`")
    check_export_id(path, meta.get("export_id"))
    predictor.class_names = meta.get("class_names", [])
    predictor.transform = transform_from_spec(meta["transform"])
    predictor.path = path


CUDA_PROVIDER_OPTIONS = {
    # With dynamic height and width, the default EXHAUSTIVE search re-benchmarks cuDNN algorithms for every new
    # image size; HEURISTIC picks one at once.
    "cudnn_conv_algo_search": "HEURISTIC",
    "arena_extend_strategy": "kSameAsRequested",
}


def onnx_session(path: str | Path, device="auto", threads: int | None = None):
    """One tuned session per file. Returns (session, notes): notes say when the session did not get the device
    that was asked for (onnxruntime silently falls back to the CPU when CUDA libraries are missing)."""
    import onnxruntime as ort

    target = resolve_device(device) if str(device) != "auto" or torch.cuda.is_available() else torch.device("cpu")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or usable_cpus()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op workers sleep instead of spinning for the next task (ONNX Runtime's default spins): the host
    # pipeline around the graph (pre-processing, mask pasting; a video's decoding, drawing and encoding on their
    # own threads) and other requests share the same cores. Measured on the 2-core CPU with other jobs running
    # (load ~10): the bundled model's graph alone, 2 threads, median 68 ms spinning vs 41 ms not (docs/benchmarks.md,
    # section 8, with the video pipeline it is part of).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list = ["CPUExecutionProvider"]
    if target.type == "cuda":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": target.index or 0, **CUDA_PROVIDER_OPTIONS}))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # noqa: BLE001
        raise DetDemoError(f"{path}: cannot load ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    notes = []
    got = session.get_providers()
    if target.type == "cuda" and "CUDAExecutionProvider" not in got:
        notes.append(f"ONNX Runtime could not use CUDA for {Path(path).name} and runs on the CPU (providers "
                     f"available: {', '.join(ort.get_available_providers())}; install onnxruntime-gpu with "
                     "CUDA/cuDNN libraries that match it)")
    return session, notes, ("cuda:" + str(target.index or 0)) if "CUDAExecutionProvider" in got else "cpu"


class OnnxPredictor(HostPipeline):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, device="auto", threads: int | None = None, precision: str = "auto") -> None:
        super().__init__()
        self.session, notes, self.device = onnx_session(path, device, threads)
        self.notes.extend(notes)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        custom = self.session.get_modelmeta().custom_metadata_map
        self.meta = json.loads(custom.get("detdemo", "{}"))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_name = self.session.get_inputs()[0].name
        init_from_meta(self, Path(path))
        self.precision = "int8" if self.meta.get("format") == "onnx-int8" else "fp32"  # the file decides

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.session.run(None, {self.input_name: x.cpu().numpy()})
        return {name: torch.from_numpy(v) for name, v in zip(self.output_names, outs)}


# -- one entry point ---------------------------------------------------------------------------------------------


def resolve_model_file(path: str | Path, backend: str | None = None,
                       precision: str | None = None) -> tuple[Path, str]:
    """(file, backend) for a model file or folder. ``backend`` None picks the file's own runtime (a folder: its
    checkpoint); in a folder, ``precision`` int8 picks the INT8 file of the backend, bf16 its bf16 file where it has
    one (AOTInductor), anything else the full one."""
    path = Path(path).expanduser()
    if backend is not None and backend not in BACKENDS:
        raise DetDemoError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    hub = False
    if not path.exists():
        from export.hub_files import fetch_model, is_repo_reference

        if not is_repo_reference(str(path)):
            raise DetDemoError(f"{path}: model path not found")
        path, hub = fetch_model(str(path), {backend} if backend else None), True
    if path.is_dir():
        files = folder_files(path, partial=hub)
        if hub:
            from export.hub_files import servable

            files = servable(files, {backend} if backend else None)
        backend = backend or format_backend(next(iter(files)))
        mine = [fmt for fmt in files if format_backend(fmt) == backend]
        if not mine:
            raise DetDemoError(f"{path}: has no file for the {BACKENDS[backend].label} backend (holds: "
                               f"{', '.join(p.name for p in files.values())})")
        int8 = [fmt for fmt in mine if format_precision(fmt) == "int8"]
        if precision == "int8" and not int8:
            raise DetDemoError(f"{path}: has no INT8 file for {BACKENDS[backend].label} (export --format onnx-int8)")
        full = [fmt for fmt in mine if fmt not in int8]
        bf16 = [fmt for fmt in full if format_precision(fmt) == "bf16"]  # a bf16 file of its own (aoti-bf16)
        path = files[int8[0] if precision == "int8" else (bf16 if precision == "bf16" and bf16 else full or mine)[0]]
    kind = file_kind(path)
    backend = backend or DEFAULT_BACKEND_FOR_KIND[kind]
    if kind not in BACKENDS[backend].reads:
        raise DetDemoError(f"{path}: is a {kind} file; the {BACKENDS[backend].label} backend runs "
                           f"{' or '.join(BACKENDS[backend].reads)} files")
    return path, backend


def load_predictor(path: str | Path, backend: str | None = None, device="auto", precision: str | None = None,
                   **options) -> Predictor:
    """A ``Predictor`` for any model detdemo writes: a checkpoint, safetensors weights with their config.json, a
    TorchScript, ONNX, OpenVINO, ExportedProgram or AOTInductor file (any name), an export folder, a training run
    folder, or a Hugging Face Hub model repo as ``USER/NAME[@REVISION]`` (``export.hub_files``). ``device``: auto,
    cpu, cuda or cuda:N. ``precision``: bf16 runs PyTorch under autocast and OpenVINO in bf16; int8 picks a
    folder's INT8 file; None/auto: the file's own (OpenVINO's float IR:
    fp32; its INT8 IR: float layers in bf16 where the CPU has it). ``options``:
    runtime settings."""
    file, backend = resolve_model_file(path, backend, precision)
    module, _, name = BACKENDS[backend].runtime.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise DetDemoError(f"the {BACKENDS[backend].label} backend needs a package that is not installed "
                           f"({exc.name}): pip install {exc.name}") from None
    if backend == "pytorch":
        load = cls.from_portable if file_kind(file) == "safetensors" else cls.from_checkpoint
        predictor = load(file, device=device, precision=precision or "fp32", **options)
        check_export_id(file, predictor.export_id)
        return predictor
    if backend == "openvino":
        return cls(file, device=device, precision=precision or "auto", **options)
    return cls(file, device=device, **options)


__all__ = ["EAGER_FILE", "OnnxPredictor", "TorchScriptPredictor", "file_kind", "folder_files", "format_backend",
           "format_precision", "load_predictor", "read_manifest", "resolve_model_file"]
