"""The app's line-up: ``--model`` first, then the bundled models that are present, then torchvision's COCO model."""

from __future__ import annotations

from pathlib import Path

from detdemo.app.catalogue import BUNDLED_MODELS, Catalogue, entry_from_path
from detdemo.app.coco import coco_entry
from export.formats import MANIFEST


def default_catalogue(model_path: str | Path | None = None, include_coco: bool = True,
                      bundled: list[tuple[Path, str]] | None = None, device: str = "auto",
                      backend: str | None = None, examples: str | Path | None = None) -> Catalogue:
    """``model_path`` (if given) first, then the bundled models that are present, then torchvision's COCO model."""
    entries = []
    if model_path is not None:
        entries.append(entry_from_path(model_path, backend=backend, examples=examples))
    given = Path(model_path).resolve() if model_path is not None and Path(model_path).exists() else None
    for folder, name in BUNDLED_MODELS if bundled is None else bundled:
        if (folder / MANIFEST).is_file() and folder.resolve() != given:
            entries.append(entry_from_path(folder, name))
    if include_coco:
        entries.append(coco_entry())
    return Catalogue(entries, device)
