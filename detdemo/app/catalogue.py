"""The models the app offers and the predictors behind them, loaded once and shared by every request.

Three kinds of entry: a model on disk (the bundled ones, or whatever ``--model`` names: an export folder, a
training run folder, a checkpoint, a TorchScript or an ONNX file), a model repo on the Hugging Face Hub
(``USER/NAME[@REVISION]``, through the Hub cache), and torchvision's COCO-pretrained Mask R-CNN, which comes from
the torch cache or a download. A backend whose file is missing is reported as unavailable with the reason instead
of being offered and failing later. Each model carries its own example images (its folder's ``examples/``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable
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
    format_backend,
    format_of_choice,
    format_precision,
)

CHOICES = [EAGER_CHOICE, *(f.choice for f in FORMATS.values())]  # backend choices, in the page's order
BACKEND_LABELS = {c: choice_label(c) for c in CHOICES}
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
BUNDLED_MODEL_DIR = MODELS_DIR / "shapes"
BUNDLED_MODEL_NAME = "shapes (bundled maskrcnn_light)"
BCCD_MODEL_NAME = "blood cells, BCCD (bundled fasterrcnn_light)"
BUNDLED_MODELS = [(BUNDLED_MODEL_DIR, BUNDLED_MODEL_NAME), (MODELS_DIR / "bccd", BCCD_MODEL_NAME)]
BUNDLED_SUITS = {  # what each bundled model was trained on: all it can recognise
    BUNDLED_MODEL_NAME: "synthetic images of circles, squares and triangles",
    BCCD_MODEL_NAME: "blood-smear microscope images (red and white blood cells, platelets)",
}
EXAMPLES_DIR = "examples"  # a model folder's own example images


@dataclass
class ModelEntry:
    name: str
    files: dict[str, Path] = field(default_factory=dict)  # backend choice -> file
    missing: dict[str, str] = field(default_factory=dict)  # backend choice -> why it cannot be offered
    description: str = ""
    loader: Callable[[], object] | None = None  # for entries not backed by files (torchvision's COCO model)
    verified: dict[str, dict] = field(default_factory=dict)  # backend choice -> check-export's accuracy figures
    examples: list[Path] = field(default_factory=list)  # images that show what this model is for
    checked: dict[str, str] = field(default_factory=dict)  # backend choice -> its parity check on the examples
    background: threading.Thread | None = None  # work started on first use (the COCO model's export)
    folder: Path | None = None  # where the model's own files are: its evaluation pictures and reports (Model tab)
    masks: bool | None = None  # whether the model segments, from its recorded architecture (None: not recorded)
    class_names: list[str] | None = None  # known without loading the model (the COCO model's 80 classes)
    suits: str = ""  # the images this model is for, in a visitor's words (the page's guide)
    available: bool = True  # False: offered, but it cannot load here (the COCO model, offline and not cached)

    @property
    def backends(self) -> list[str]:
        return list(self.files) + ([EAGER_CHOICE] if self.loader and EAGER_CHOICE not in self.files else [])

    def label(self, choice: str) -> str:
        """The backend's name, with its measured AP delta to eager when check-export --data recorded one: "box ΔAP
        -0.002 ± 0.004" (the range covers the 95 % interval; figures recorded before intervals show ΔAP alone),
        and the verdict when it is not a pass (a float32 file is offered on its parity check)."""
        from export.gate import IOU_NAMES, PASS, delta_text, iou_types_of, verdict_of

        figures = self.verified.get(choice)
        if not figures:
            return BACKEND_LABELS[choice]
        deltas = ", ".join(f"{IOU_NAMES.get(t, t)} ΔAP {delta_text(figures, t)}" for t in iou_types_of(figures))
        verdict = verdict_of(figures)
        if verdict != PASS:
            deltas += f", {verdict.lower()}"
        ran = figures.get("precision")  # what the CPU ran, where it differs (bf16 asked, fp32 run without AVX512-BF16)
        precision = f" (ran {ran})" if ran and ran != format_precision(format_of_choice(choice)) else ""
        return f"{BACKEND_LABELS[choice]}{precision} ({deltas})"


def _unverified_reason(figures: dict | None) -> str:
    """Why a reduced-precision file is not offered: never checked, failed, or checked on too few images to tell."""
    from export.gate import INCONCLUSIVE, decide_text, interval_text, iou_types_of, verdict_of

    if not figures:
        return "reduced precision, not verified on labelled data yet (detdemo check-export DIR --data ...)"
    deltas = ", ".join(f"{t} {interval_text(figures, t)}" for t in iou_types_of(figures))
    if verdict_of(figures) == INCONCLUSIVE:
        return (f"its accuracy check on {figures['data']} was inconclusive, and only a verified file is offered: "
                f"{deltas}; {decide_text(figures)}")
    return f"failed its accuracy check on {figures['data']}: {deltas}, limit ±{figures.get('limit')}"


def _recorded(folder: Path) -> dict:
    """What the folder's export manifest records (architecture, classes, metrics); {} when it has none."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(manifest.read_text())
    return {}


def segments(arch: str | None) -> bool | None:
    """Whether an architecture returns masks (None: not recorded, or not one detdemo knows)."""
    from detdemo.models import get_spec

    if not arch:
        return None
    try:
        return get_spec(arch).masks
    except DetDemoError:
        return None


def _describe(info: dict) -> str:
    """One line for the page: architecture, classes, and the recorded val AP when the checkpoint has one."""
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


def _examples(folder: Path | None) -> list[Path]:
    from detdemo.fileio import IMAGE_EXTENSIONS

    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def entry_from_path(path: str | Path, name: str | None = None, *, backend: str | None = None,
                    examples: str | Path | None = None) -> ModelEntry:
    """An export folder, a run folder (best.pt), one model file (recognised by its content), or a Hub model repo.

    Reduced-precision files (INT8, OpenVINO's bf16) are offered only when the folder's manifest holds their
    verified accuracy (``detdemo check-export DIR --data ...``) and it passed. From the Hub, every safe backend's
    files are fetched; those of a backend whose files run code when loaded (TorchScript, ExportedProgram,
    AOTInductor) only when ``backend`` names it."""
    from export.manifest import verified_of
    from export.runtime import file_kind, folder_files, read_manifest

    path = Path(path).expanduser()
    partial, wanted = False, set()
    if not path.exists():
        from export.hub_files import fetch_model, hub_backends, is_repo_reference

        if not is_repo_reference(str(path)):
            raise DetDemoError(f"{path}: model path not found")
        name = name or str(path).split("/")[-1].split("@")[0]
        wanted = hub_backends(format_backend(format_of_choice(backend)) if backend else None)
        from detdemo.app.model_tab import MODEL_TAB_FILES

        path, partial = fetch_model(str(path), wanted, extras=[f"{EXAMPLES_DIR}/*", *MODEL_TAB_FILES]), True
    verified: dict[str, dict] = {}
    missing: dict[str, str] = {}
    if path.is_dir():
        by_format = folder_files(path, partial=partial)  # refuses an interrupted export's mixture of files
        if partial:  # from the Hub: only what was asked for, whatever else an earlier download left in the cache
            from export.hub_files import not_fetched_reason, servable

            kept = servable(by_format, wanted)
            for fmt in set(by_format) - set(kept):
                missing[choice_of(fmt)] = not_fetched_reason(fmt)
            by_format = kept
        manifest = read_manifest(path) or {}
        verified = {choice_of(fmt): v for fmt, v in verified_of(manifest).items() if fmt in FORMATS}
        files = {}
        for fmt, file in by_format.items():
            choice = choice_of(fmt)
            figures = verified.get(choice)
            unverified = format_precision(fmt) in REDUCED and not (figures and figures.get("passed"))
            if unverified:
                missing[choice] = _unverified_reason(figures)
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
    shown = _examples(Path(examples) if examples else folder / EXAMPLES_DIR)
    info = _recorded(folder)
    return ModelEntry(name or path.name, files, missing, _describe(info), verified=verified, examples=shown,
                      masks=segments(info.get("arch")), folder=folder)


def public(message: str) -> str:
    """A message fit for the page: the server's folders replaced by the names a user can act on."""
    import torch

    return message.replace(str(Path(torch.hub.get_dir())), "$TORCH_HOME/hub").replace(str(Path.home()), "~")


class Catalogue:
    """Model entries by name, and one predictor per (model, backend), loaded on first use under a lock."""

    def __init__(self, entries: list[ModelEntry], device: str = "auto", default: str | None = None,
                 guide: str = "") -> None:
        if not entries:
            raise DetDemoError("no models to serve")
        self.device = device
        self.entries = {e.name: e for e in entries}
        self.default = default if default in self.entries else entries[0].name  # the page's model at start
        self.guide = guide  # Markdown for the page: which model suits which images (``lineup.guide``)
        self._predictors: dict[tuple[str, str], object] = {}
        self._failures: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self.model_calls = 0  # how many times any model ran: redraws must not add to it (tests, benchmark)
        self._verify_lock = threading.Lock()
        self._verified: set[str] = set()

    def count_model_call(self) -> None:
        with self._lock:
            self.model_calls += 1

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def class_names(self, name: str) -> list[str]:
        """The model's classes: recorded on the entry, or from its predictor (loaded now; [] if it cannot load)."""
        entry = self.entry(name)
        if entry.class_names is not None:
            return list(entry.class_names)
        try:
            return list(self.predictor(name, entry.backends[0]).class_names)
        except DetDemoError:
            return []

    def has_masks(self, name: str) -> bool:
        """Whether the page offers the Masks toggle: yes unless the recorded architecture is box-only."""
        return self.entry(name).masks is not False

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
                    from export.runtime import format_backend, load_predictor

                    fmt = format_of_choice(backend)
                    precision = format_precision(fmt)
                    predictor = load_predictor(entry.files[backend], format_backend(fmt), self.device,
                                               precision=None if precision == "fp32" else precision)
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


    def verify(self, name: str, examples: int = 4) -> None:
        """Once per model, on first use: each exported full-precision backend against PyTorch on the model's own
        examples, with the parity checker's tolerances. A backend that fails is withdrawn (listed as unavailable,
        with the reason) rather than offered. Reduced-precision files are judged by their recorded AP instead."""
        from detdemo.data.images import open_image
        from export.parity import Tolerances, compare

        entry = self.entry(name)
        with self._verify_lock:
            if name in self._verified:
                return
            self._verified.add(name)
            candidates = [c for c in entry.files if c != EAGER_CHOICE
                          and format_precision(format_of_choice(c)) not in REDUCED]
            if EAGER_CHOICE not in entry.files or not entry.examples or not candidates:
                return
            images = [(p.name, open_image(p)) for p in entry.examples[:examples]]
            reference = self.predictor(name, EAGER_CHOICE)
            expected = [reference.predict(image) for _, image in images]
            tol = Tolerances()
            for choice in candidates:
                try:
                    predictor = self.predictor(name, choice)
                except DetDemoError as exc:  # e.g. TorchScript on a PyTorch without torch.jit: withdrawn, says why
                    entry.checked[choice] = f"not loaded ({exc})"
                    entry.files.pop(choice)
                    entry.missing[choice] = f"cannot be loaded here ({exc})"
                    continue
                reports = [compare(probe, ref, predictor.predict(image), tol)
                           for (probe, image), ref in zip(images, expected)]
                failed = [f"{r.probe}: {'; '.join(r.reasons)}" for r in reports if not r.passed]
                worst = max(r.max_box_diff_px for r in reports)
                if failed:
                    entry.files.pop(choice)
                    entry.missing[choice] = f"failed the parity check on this model's examples ({failed[0]})"
                    with self._lock:
                        self._predictors.pop((name, choice), None)
                else:
                    entry.checked[choice] = (f"matches PyTorch on {len(images)} example(s) "
                                             f"(max box difference {worst:.2g} px)")
