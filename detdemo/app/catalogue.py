"""The models the app offers and the predictors behind them, loaded once and shared by every request.

Three kinds of entry: a model on disk (the bundled default, or whatever ``--model`` names: an export folder, a
training run folder, a checkpoint, a TorchScript or an ONNX file), and torchvision's COCO-pretrained Mask R-CNN,
which comes from the torch cache or a download. A backend whose file is missing is reported as unavailable with
the reason instead of being offered and failing later.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from detdemo.errors import DetDemoError
from export.formats import (
    DEFAULT_BACKEND_FOR_KIND,
    EAGER_CHOICE,
    FORMATS,
    MANIFEST,
    REDUCED,
    choice_label,
    choice_of,
    format_of_choice,
)

CHOICES = [EAGER_CHOICE, *(f.choice for f in FORMATS.values())]  # backend choices, in the page's order
BACKEND_LABELS = {c: choice_label(c) for c in CHOICES}
BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "shapes"
BUNDLED_MODEL_NAME = "shapes (bundled maskrcnn_light)"
COCO_MODEL_NAME = "COCO Mask R-CNN R50-FPN (torchvision)"
DOWNLOAD_TIMEOUT_S = 20.0


@dataclass
class ModelEntry:
    name: str
    files: dict[str, Path] = field(default_factory=dict)  # backend choice -> file
    missing: dict[str, str] = field(default_factory=dict)  # backend choice -> why it cannot be offered
    description: str = ""
    loader: Callable[[], object] | None = None  # for entries not backed by files (torchvision's COCO model)
    verified: dict[str, dict] = field(default_factory=dict)  # backend choice -> check-export's accuracy figures

    @property
    def backends(self) -> list[str]:
        return list(self.files) + ([EAGER_CHOICE] if self.loader and EAGER_CHOICE not in self.files else [])

    def label(self, choice: str) -> str:
        """The backend's name, with its measured AP delta to eager when check-export --data recorded one."""
        figures = self.verified.get(choice)
        if not figures:
            return BACKEND_LABELS[choice]
        deltas = ", ".join(f"{v:+.3f}" for k, v in figures.items() if k.startswith("d") and k.endswith("_AP"))
        precision = f" {figures['precision']}" if figures.get("precision") not in (None, "fp32", "int8") else ""
        return f"{BACKEND_LABELS[choice]}{precision} (ΔAP {deltas})"


def _describe(folder: Path) -> str:
    """One line for the page: architecture, classes, and the recorded val AP when the checkpoint has one."""
    manifest = folder / MANIFEST
    info = {}
    if manifest.is_file():
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(manifest.read_text())
    metrics = info.get("metrics") or {}
    parts = []
    if info.get("arch"):
        parts.append(f"`{info['arch']}`")
    if info.get("class_names"):
        parts.append("classes: " + ", ".join(info["class_names"]))
    if metrics.get("bbox_AP") is not None:
        masks = f", mask AP {metrics['segm_AP']:.3f}" if metrics.get("segm_AP") is not None else ""
        parts.append(f"val bbox AP {metrics['bbox_AP']:.3f}{masks}")
    return "; ".join(parts)


def entry_from_path(path: str | Path, name: str | None = None) -> ModelEntry:
    """An export folder, a run folder (best.pt), or one model file (recognised by its content).

    Reduced-precision files (INT8, OpenVINO's bf16) are offered only when the folder's manifest holds their
    verified accuracy (``detdemo check-export DIR --data ...``) and it passed."""
    from export.runtime import file_kind, folder_files, format_precision, read_manifest

    path = Path(path).expanduser()
    if not path.exists():
        raise DetDemoError(f"{path}: model path not found")
    verified: dict[str, dict] = {}
    missing: dict[str, str] = {}
    if path.is_dir():
        by_format = folder_files(path)  # refuses an interrupted export's mixture of files
        manifest = read_manifest(path) or {}
        verified = {choice_of(fmt): v for fmt, v in (manifest.get("verified") or {}).items() if fmt in FORMATS}
        files = {}
        for fmt, file in by_format.items():
            choice = choice_of(fmt)
            figures = verified.get(choice)
            unverified = format_precision(fmt) in (*REDUCED, "auto") and not (figures and figures.get("passed"))
            if unverified:
                missing[choice] = ("failed its accuracy check on " + figures["data"] if figures else
                                   "reduced precision, not verified on labelled data yet (detdemo check-export "
                                   "DIR --data ...)")
            else:
                files[choice] = file
        folder = path
    else:
        kind = file_kind(path)
        files = {DEFAULT_BACKEND_FOR_KIND[kind] if kind != "checkpoint" else EAGER_CHOICE: path}
        folder = path.parent
    for choice in CHOICES:
        if choice not in files and choice not in missing:
            fmt = format_of_choice(choice)
            missing[choice] = f"no {FORMATS[fmt].file if fmt in FORMATS else 'model.pt'} in {folder.name or folder}"
    return ModelEntry(name or path.name, files, missing, _describe(folder), verified=verified)


def public(message: str) -> str:
    """A message fit for the page: the server's folders replaced by the names a user can act on."""
    import torch

    return message.replace(str(Path(torch.hub.get_dir())), "$TORCH_HOME/hub").replace(str(Path.home()), "~")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub downloads with urllib and no timeout; a firewalled machine would otherwise hang the request."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def coco_entry() -> ModelEntry:
    """torchvision's COCO Mask R-CNN: from ``$TORCH_HOME`` when cached, else downloaded on first use."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    from detdemo.models.weights import cache_path

    weights = MaskRCNN_ResNet50_FPN_Weights.DEFAULT
    target = cache_path(weights)

    def load():
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        from detdemo.inference.eager import EagerPredictor
        from detdemo.models.weights import weights_from

        with _socket_timeout(DOWNLOAD_TIMEOUT_S), weights_from(weights, None):
            model = maskrcnn_resnet50_fpn(weights=weights, progress=False)
        return EagerPredictor(model, weights.meta["categories"][1:], path=target)

    state = "in the torch cache" if target.is_file() else "not downloaded yet: downloads on first use (~170 MB)"
    reason = "torchvision's COCO model is offered in PyTorch only (export your own fine-tuned model for the others)"
    # The page names the file, never the server's folders (the log has the full path for the operator).
    return ModelEntry(COCO_MODEL_NAME, {}, {c: reason for c in CHOICES if c != EAGER_CHOICE},
                      f"80 COCO classes; weights {state} ({target.name})", loader=load)


class Catalogue:
    """Model entries by name, and one predictor per (model, backend), loaded on first use under a lock."""

    def __init__(self, entries: list[ModelEntry], device: str = "auto") -> None:
        if not entries:
            raise DetDemoError("no models to serve")
        self.device = device
        self.entries = {e.name: e for e in entries}
        self._predictors: dict[tuple[str, str], object] = {}
        self._failures: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> ModelEntry:
        if name not in self.entries:
            raise DetDemoError(f"unknown model {name!r}; available: {', '.join(self.entries)}")
        return self.entries[name]

    def predictor(self, name: str, backend: str):
        entry = self.entry(name)
        if backend not in BACKEND_LABELS:
            raise DetDemoError(f"unknown backend {backend!r}; choose from {', '.join(BACKEND_LABELS)}")
        if backend not in entry.backends:
            raise DetDemoError(f"{BACKEND_LABELS[backend]} is not available for {name}: "
                               f"{entry.missing.get(backend, 'no file')}")
        key = (name, backend)
        with self._lock:
            if key in self._predictors:
                return self._predictors[key]
            if key in self._failures:  # a failed download is not retried on every click
                raise DetDemoError(self._failures[key])
            try:
                if backend in entry.files:
                    from export.runtime import format_backend, format_precision, load_predictor

                    fmt = format_of_choice(backend)
                    precision = format_precision(fmt)
                    predictor = load_predictor(entry.files[backend], format_backend(fmt), self.device,
                                               precision=None if precision in ("fp32", "auto") else precision)
                else:
                    predictor = entry.loader()
            except DetDemoError as exc:
                print(f"detdemo app: {name} ({backend}): {exc}", file=sys.stderr)  # the operator's full story
                message = f"{name} ({BACKEND_LABELS[backend]}) is unavailable: {public(str(exc))}"
                if entry.loader is not None:
                    self._failures[key] = message
                raise DetDemoError(message) from None
            self._predictors[key] = predictor
            return predictor


def default_catalogue(model_path: str | Path | None = None, include_coco: bool = True,
                      bundled: Path = BUNDLED_MODEL_DIR, device: str = "auto") -> Catalogue:
    """``model_path`` (if given) first, then the bundled model, then torchvision's COCO model."""
    entries = []
    if model_path is not None:
        entries.append(entry_from_path(model_path))
    if bundled.is_dir() and (model_path is None or Path(model_path).resolve() != bundled.resolve()):
        entries.append(entry_from_path(bundled, BUNDLED_MODEL_NAME))
    if include_coco:
        entries.append(coco_entry())
    return Catalogue(entries, device)
