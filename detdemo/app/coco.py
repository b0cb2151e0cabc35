"""torchvision's COCO Mask R-CNN in the app: from the torch cache (or a download on first use), then exported to
the default formats (ONNX and the ExportedProgram) into the cache and checked against PyTorch, so the real-world
model offers every backend.

The export happens once, in the background after the first PyTorch request (about a minute on two CPU cores), into
``$TORCH_HOME/detdemo/<weights file>-export``; later starts find it there. An exported backend is offered only if
it passed the parity checker; one that failed is listed as unavailable with the reason. Offline with no cached
weights, the model is a clear "unavailable" note, never a crash.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from detdemo.app.catalogue import CHOICES, ModelEntry, entry_from_path
from detdemo.errors import DetDemoError
from export.formats import DEFAULT_FORMATS, EAGER_CHOICE, MANIFEST, choice_label, choice_of, format_of_choice

COCO_MODEL_NAME = "COCO Mask R-CNN R50-FPN (torchvision)"
COCO_ARCH = "maskrcnn_resnet50_fpn"
COCO_SUITS = "everyday photos: people, animals, vehicles, furniture, food (COCO's 80 classes)"
DOWNLOAD_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 1.5  # the start-up check that the weights could be downloaded: one TCP connection, no more


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub downloads with urllib and no timeout; a firewalled machine would otherwise hang the request."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def can_download(url: str) -> bool:
    """Whether the weights at ``url`` could be downloaded now, cheaply enough for every start: one TCP connection to
    the host torch.hub downloads from (a short timeout; nothing is requested). ``HF_HUB_OFFLINE=1`` means offline
    without trying; a configured HTTPS proxy counts as online (torch.hub's urllib goes through it)."""
    import os
    import urllib.parse
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    if urllib.request.getproxies().get("https"):
        return True
    host = urllib.parse.urlparse(url).hostname
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def unavailable_note() -> str:
    """What the page says when the COCO model can be neither read from the cache nor downloaded."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    from detdemo.models.weights import cache_path

    name = cache_path(MaskRCNN_ResNet50_FPN_Weights.DEFAULT).name
    return (f"**Offline:** torchvision's COCO model is not in the torch cache and cannot be downloaded from here. To "
            f"add it, download `{name}` on a machine that is online, put it in `$TORCH_HOME/hub/checkpoints/` "
            "(default `~/.cache/torch/hub/checkpoints/`) and restart.")


def export_folder(weights_file: Path) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "detdemo" / f"{weights_file.stem}-export"


def _checked_entry(folder: Path, description: str) -> ModelEntry | None:
    """The cached export as an entry, its backends limited to those whose parity check passed."""
    import json

    try:
        entry = entry_from_path(folder, COCO_MODEL_NAME)
    except DetDemoError:
        return None  # damaged or interrupted: exported again on first use
    try:
        parity = json.loads((folder / "parity.json").read_text())["backends"]
    except (OSError, ValueError, KeyError):
        return None
    for choice in [c for c in entry.files if c != EAGER_CHOICE]:
        report = parity.get(format_of_choice(choice))
        if not report or not report.get("passed"):
            entry.files.pop(choice)
            entry.missing[choice] = "failed its parity check against PyTorch (see parity.md in the cache)"
    entry.description = description
    return entry


def _export_and_check(model, class_names: list[str], weights_file: Path, entry: ModelEntry) -> None:
    """Checkpoint, export, parity check; then offer each backend that passed. Runs in a background thread."""
    from detdemo.checkpoint import save_checkpoint
    from detdemo.inference.eager import EagerPredictor
    from detdemo.models.build import ModelConfig, describe_frozen
    from export.exporters import export_checkpoint
    from export.parity import Tolerances, default_probes, family_limits, run_parity, write_reports
    from export.runtime import load_predictor

    folder = export_folder(weights_file)
    try:
        frozen_bn, frozen = describe_frozen(model)
        cfg = ModelConfig(COCO_ARCH, len(class_names) + 1, class_names, {}, None, frozen_bn, frozen, weights_file.name)
        checkpoint = save_checkpoint(folder / "coco.pt", model, cfg)
        paths = export_checkpoint(checkpoint, DEFAULT_FORMATS, folder)
        checkpoint.unlink()
        reference = EagerPredictor.from_checkpoint(paths["eager"])
        candidates = [(fmt, load_predictor(path)) for fmt, path in paths.items() if fmt != "eager"]
        report = run_parity(reference, candidates, default_probes(extras=False), Tolerances(),
                            **family_limits(COCO_ARCH, reference.model))
        write_reports(report, folder)
    except Exception as exc:  # noqa: BLE001 - a failed export leaves the model in PyTorch only, with the reason
        print(f"detdemo app: exporting {COCO_MODEL_NAME} failed: {exc}", file=sys.stderr)
        for choice in CHOICES:
            if choice != EAGER_CHOICE:
                entry.missing[choice] = f"export failed ({type(exc).__name__})"
        return
    checked = _checked_entry(folder, entry.description)
    if checked is None:
        return
    entry.missing = {**{c: why for c, why in entry.missing.items() if c not in checked.files}, **checked.missing}
    entry.files = checked.files  # PyTorch now from the exported checkpoint too: the same weights


def coco_entry() -> ModelEntry:
    """torchvision's COCO Mask R-CNN: from ``$TORCH_HOME`` when cached, else downloaded on first use."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    from detdemo.models.weights import cache_path

    weights = MaskRCNN_ResNet50_FPN_Weights.DEFAULT
    target = cache_path(weights)
    classes = list(weights.meta["categories"][1:])
    cached_weights = target.is_file()
    state = "in the torch cache" if cached_weights else "not downloaded yet: downloads on first use (~170 MB)"
    # The page names the file, never the server's folders (the log has the full path for the operator).
    description = f"80 COCO classes; weights {state} ({target.name})"
    folder = export_folder(target)
    if cached_weights and (folder / MANIFEST).is_file():
        cached = _checked_entry(folder, description)
        if cached is not None:
            cached.available, cached.suits, cached.class_names = True, COCO_SUITS, classes
            return cached
    entry = ModelEntry(COCO_MODEL_NAME, {}, {}, description, masks=True, class_names=classes, suits=COCO_SUITS,
                       available=cached_weights or can_download(weights.url))
    formats = " and ".join(choice_label(choice_of(f)) for f in DEFAULT_FORMATS)
    reason = f"exported to {formats}, and checked, after its first use in PyTorch (select it again then)"
    entry.missing = {c: reason for c in CHOICES if c != EAGER_CHOICE}

    def load():
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        from detdemo.inference.eager import EagerPredictor
        from detdemo.models.weights import weights_from

        with _socket_timeout(DOWNLOAD_TIMEOUT_S), weights_from(weights, None):
            model = maskrcnn_resnet50_fpn(weights=weights, progress=False)
        entry.background = threading.Thread(target=_export_and_check, args=(model, classes, target, entry),
                                            name="coco-export", daemon=True)
        entry.background.start()
        return EagerPredictor(model, classes, path=target)

    entry.loader = load
    return entry
