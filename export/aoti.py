"""The ``aoti`` format: an AOTInductor package (``torch._inductor.aoti_compile_and_package``), run by the
``inductor`` backend (``torch._inductor.aoti_load_package``).

The ExportedProgram of ``export.torch_export`` compiled ahead of time by Inductor into a shared library with the
weights inside, for one device: the CPU (default) or CUDA (``detdemo export --format aoti --device cuda``, on a
machine with a GPU; the program is moved there before compiling). A CPU package is also compiled for this CPU's
vector instructions (AVX2, AVX-512, ... recorded in the package as ``AOTI_CPU_ISA``): it runs on CPUs that have
them, and the loader refuses it with a clear message on one that does not, instead of letting the library die on
an illegal instruction. detdemo's metadata travels in the package's metadata (``aot_inductor.metadata``), read
from the zip before the library is loaded.

``aoti-bf16`` is the same package computing in bf16 on CPUs with AVX512-BF16/AMX: the backbone and heads traced
under CPU bf16 autocast (``export.wrappers.autocast_parts``; anchors, box decoding, RoIAlign's boxes, NMS and the
mask probabilities stay float32) and compiled with Inductor's freezing (weights become constants, so their bf16
copies are made once at compile time instead of at every call). Its precision is recorded in the metadata; it is
judged by AP, like every reduced-precision file. A CPU without bf16 neither makes nor runs one.

**Loading runs native code from the file** (it loads a shared library): only load packages you made or trust;
from the Hub one is fetched only when asked for by name.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch

from detdemo.errors import DetDemoError
from detdemo.fileio import atomic_write
from detdemo.inference.device import resolve_device
from detdemo.inference.eager import bf16_supported
from detdemo.inference.pipeline import HostPipeline, transform_spec
from detdemo.models import ModelConfig
from export.archives import read_zip_json
from export.errors import ExportError, first_line
from export.formats import FORMATS
from export.metadata import build_metadata, dumps
from export.patches import export_patches
from export.torch_export import export_program

EXPORTER = "torch._inductor.aoti_compile_and_package"
META_KEY = "detdemo"
METADATA_SUFFIX = ".wrapper_metadata.json"
ISA_RANK = {"DEFAULT": 0, "AVX2": 1, "AVX512": 2}  # torch.backends.cpu.get_cpu_capability()'s names
# Inductor's layout optimisation (convolutions in channels-last) computes the Mask R-CNN mask head wrong in an
# AOTInductor package on the CPU in torch 2.14.1: the RoIAlign features going in are right (1.8e-5), the mask head's
# output is off by up to 11.6 and the mask probabilities by 0.96, while torch.compile of the same program is right
# (7.9e-6). Measured on the bundled model; with it off, masks agree within 8.6e-6. Boxes and scores were right
# either way.
INDUCTOR_CONFIGS = {"layout_optimization": False}
# Freezing folds the weights (and, in bf16, their casts) into constants at compile time, so Inductor can pre-pack
# them for its convolution kernels. Measured on the bundled model (2 shared cores): the bf16 package ran 2.6x faster
# with it than without (54 vs 142 ms at 320x416), the fp32 one 1.8-2.4x (119-123 vs 208-294 ms, bench/aoti_bf16.py),
# its detections still within the fp32 parity tolerances (box 2.4e-4 px over 251 detections).
PRECISION_CONFIGS = {"fp32": {**INDUCTOR_CONFIGS, "freezing": True}, "bf16": {**INDUCTOR_CONFIGS, "freezing": True}}
NO_BF16 = "this CPU has no bf16 instructions (AVX512-BF16 or AMX; /proc/cpuinfo flags avx512_bf16, amx_bf16)"


def format_for(precision: str) -> str:
    """The AOTInductor format of a precision ("aoti", "aoti-bf16"): the row in ``export.formats``."""
    return next(f.name for f in FORMATS.values() if f.backend == "inductor" and f.precision == precision)


def bf16_problem(device: str = "cpu") -> str | None:
    """Why an ``aoti-bf16`` package cannot be made or run here (None: it can)."""
    if resolve_device(device).type != "cpu":
        return f"aoti-bf16 is compiled for the CPU only (bf16 autocast on the CPU), not {device}"
    return None if bf16_supported(torch.device("cpu")) else NO_BF16


def export_aoti(model: torch.nn.Module, cfg: ModelConfig, path: Path, export_id: str = "", device: str = "cpu",
                precision: str = "fp32", freezing: bool | None = None) -> Path:
    """Compile the model's program into an AOTInductor package at ``path``; ``precision`` "bf16": the
    ``aoti-bf16`` format (CPU only, on a CPU with bf16). ``freezing``: overrides the precision's default (bf16 on,
    fp32 off), for measuring (``bench/aoti_bf16.py``); recorded in the metadata either way."""
    if precision not in PRECISION_CONFIGS:
        raise ExportError(f"AOTInductor precision must be {' or '.join(PRECISION_CONFIGS)}, got {precision!r}")
    problem = bf16_problem(device) if precision == "bf16" else None
    if problem:
        raise ExportError(f"{cfg.arch}: cannot make an aoti-bf16 package: {problem}")
    target = resolve_device(device)
    program = export_program(model, cfg, precision=precision)
    if target.type != "cpu":
        program = torch.export.passes.move_to_device_pass(program, target)
    configs = {**PRECISION_CONFIGS[precision], **({} if freezing is None else {"freezing": freezing})}
    meta = build_metadata(cfg, format_for(precision), exporter=EXPORTER, device=target.type, precision=precision,
                          transform=transform_spec(model), inductor_configs=configs, export_id=export_id)
    buffer = io.BytesIO()  # the packager wants a name ending in .pt2 or a buffer; the file is then written atomically
    # Inductor freezes only a program compiled with gradients off
    grad = torch.no_grad() if configs.get("freezing") else contextlib.nullcontext()
    try:
        with export_patches(), grad:  # Inductor re-traces the program: the same fake NMS kernel
            torch._inductor.aoti_compile_and_package(
                program, package_path=buffer,
                inductor_configs={**configs, "aot_inductor.metadata": {META_KEY: dumps(meta)}})
    except Exception as exc:  # noqa: BLE001 - Inductor raises many types (compiler errors included)
        raise ExportError(f"{cfg.arch}: AOTInductor compilation failed ({first_line(exc)})") from None
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def package_metadata(path: Path) -> dict:
    """The package's AOTI metadata (device, CPU ISA, and detdemo's entry), from the zip alone."""
    return read_zip_json(path, METADATA_SUFFIX)


def isa_problem(required: str) -> str | None:
    """Why this CPU cannot run a package compiled for ``required`` (AOTI_CPU_ISA, e.g. "AVX512 AVX512_VNNI")."""
    need = max((ISA_RANK[k] for k in ISA_RANK if any(t.startswith(k) for t in required.split())), default=0)
    have = torch.backends.cpu.get_cpu_capability()
    if ISA_RANK.get(have, 0) < need:
        return f"it was compiled for a CPU with {required}, this one offers {have}: re-export it here"
    return None


class InductorPredictor(HostPipeline):
    """Runs an AOTInductor package on the device it was compiled for (``auto``: that device)."""

    backend = "inductor"

    def __init__(self, path: str | Path, device="auto") -> None:
        from export.runtime import init_from_meta

        super().__init__()
        path = Path(path)
        aoti = package_metadata(path)
        self.meta = json.loads(aoti.get(META_KEY) or "{}")
        init_from_meta(self, path)
        built_for = aoti.get("AOTI_DEVICE_KEY", "cpu")
        self._device = resolve_device(built_for if str(device) == "auto" else device)
        if self._device.type != built_for:
            raise DetDemoError(f"{path}: an AOTInductor package compiled for {built_for} cannot run on "
                               f"{self._device.type}; re-export it with --format aoti --device {self._device.type}")
        problem = isa_problem(aoti.get("AOTI_CPU_ISA", "")) if built_for == "cpu" else None
        self.precision = self.meta.get("precision", "fp32")  # the file decides (made before bf16: fp32)
        if self.precision == "bf16" and not problem:
            problem = bf16_problem(str(self._device))
        if problem:
            raise DetDemoError(f"{path}: cannot run this AOTInductor package here: {problem}")
        self.device = str(self._device)
        self.outputs = list(self.meta.get("outputs") or [])
        try:
            index = self._device.index if self._device.type == "cuda" and self._device.index is not None else -1
            self.runner = torch._inductor.aoti_load_package(str(path), device_index=index)
        except Exception as exc:  # noqa: BLE001
            raise DetDemoError(f"{path}: cannot load AOTInductor package ({first_line(exc)})") from None

    def _run_graph(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.runner(x.to(self._device).contiguous())
        return {name: t.cpu() for name, t in zip(self.outputs, out)}


__all__ = ["EXPORTER", "InductorPredictor", "bf16_problem", "export_aoti", "format_for", "isa_problem",
           "package_metadata"]
