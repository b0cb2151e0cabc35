"""The app's line-up: ``--model`` first, then the bundled models that are present, then torchvision's COCO model;
which of them the page starts on, and the guide that says which model suits which images.

A visitor's first upload is usually an everyday photo, and a model trained on shapes answers it with confident
nonsense. So the page starts on the COCO model whenever it can run (cached, or downloadable: a Space is online),
says which model is for which images, and, when only the bundled models can run, says plainly what they know.
"""

from __future__ import annotations

from pathlib import Path

from detdemo.app.catalogue import BUNDLED_MODELS, BUNDLED_SUITS, Catalogue, ModelEntry, entry_from_path
from detdemo.app.coco import coco_entry, unavailable_note
from export.formats import MANIFEST

BUNDLED_ONLY = ("**The bundled models know only synthetic shapes (circles, squares, triangles) and blood cells** "
                "(microscope images): an everyday photo gets confident nonsense from them.")


def guide(entries: list[ModelEntry], coco: ModelEntry | None, model_given: bool) -> str:
    """Markdown for the top of the page: each model with the images it suits; what the bundled models know when
    nothing else can run."""
    suited = [f"- {e.suits}: **{e.name}**" for e in entries if e.suits and e.available]
    if not suited:
        return ""
    lines = ["**Which model for which image?** A model finds only the kinds of objects it was trained on; on other "
             "images it still answers, confidently and wrongly.", *suited]
    bundled_only = not model_given and (coco is None or not coco.available)
    if bundled_only and any(e.name in BUNDLED_SUITS for e in entries):
        lines += ["", BUNDLED_ONLY + (" " + unavailable_note() if coco is not None else "")]
    return "\n".join(lines)


def default_catalogue(model_path: str | Path | None = None, include_coco: bool = True,
                      bundled: list[tuple[Path, str]] | None = None, device: str = "auto",
                      backend: str | None = None, examples: str | Path | None = None) -> Catalogue:
    """``model_path`` (if given) first, then the bundled models that are present, then torchvision's COCO model.
    The page starts on ``model_path``, else on the COCO model when it can run, else on the first bundled model."""
    entries = []
    if model_path is not None:
        entries.append(entry_from_path(model_path, backend=backend, examples=examples))
    given = Path(model_path).resolve() if model_path is not None and Path(model_path).exists() else None
    for folder, name in BUNDLED_MODELS if bundled is None else bundled:
        if (folder / MANIFEST).is_file() and folder.resolve() != given:
            entry = entry_from_path(folder, name)
            entry.suits = BUNDLED_SUITS.get(name, "")
            entries.append(entry)
    coco = coco_entry() if include_coco else None
    if coco is not None:
        entries.append(coco)
    default = coco.name if model_path is None and coco is not None and coco.available else None
    return Catalogue(entries, device, default=default, guide=guide(entries, coco, model_path is not None))
