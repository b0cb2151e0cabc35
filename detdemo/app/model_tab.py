"""The page's Model tab: what the chosen model's own folder says about it, read from files (nothing runs).

The evaluation pictures (``evaluation/``, written by ``detdemo eval --out DIR/evaluation.json`` or by training
for best.pt; see ``detdemo.engine.eval_pictures``) with their headline numbers, and the parity and accuracy
reports ``detdemo check-export`` wrote (``parity.md``, ``accuracy.md``) rendered as Markdown.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from detdemo.engine.eval_pictures import (
    GALLERY_STYLES,
    MODEL_EVALUATION,
    MODEL_PICTURES_DIR,
    listed_pictures,
    pictures_dir,
    read_pictures,
)

REPORTS = (("parity.md", "Parity report"), ("accuracy.md", "Accuracy report"))
MODEL_TAB_FILES = [MODEL_EVALUATION, f"{MODEL_PICTURES_DIR}/*", *(name for name, _ in REPORTS)]  # from the Hub
# Gradio serves files only from the working folder and the temp folder: pictures of a model elsewhere (the Hub
# cache, a --model path) are copied here first.
SERVED_DIR = Path(tempfile.gettempdir()) / "detdemo-app" / "model-pictures"


@dataclass
class ModelPage:
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (file, caption), for a gr.Gallery
    figures: str = ""  # Markdown: where the pictures come from and their headline numbers, or why there are none
    reports: str = ""  # Markdown: the folder's parity and accuracy reports


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _figures(evaluation: dict, numbers: dict) -> str:
    lines = []
    stats = evaluation.get("stats") or {}
    where = " ".join(str(x) for x in (Path(str(evaluation.get("data", ""))).name, evaluation.get("split")) if x)
    if stats:
        headline = ", ".join(f"{t} AP {s['AP']:.3f} (AP50 {s['AP50']:.3f})" for t, s in stats.items())
        lines.append(f"**Evaluated on {where or 'its validation data'}** ({evaluation.get('num_images', '?')} "
                     f"images): {headline}.")
    confusion = numbers.get("confusion") or []
    if confusion:
        k = len(confusion) - 1
        found = sum(confusion[i][i] for i in range(k))
        missed = sum(confusion[i][k] for i in range(k))
        alarms = sum(confusion[k][j] for j in range(k))
        wrong = sum(confusion[i][j] for i in range(k) for j in range(k) if i != j)
        lines.append(f"At score ≥ {numbers['score_threshold']:g} and IoU ≥ {numbers['iou_threshold']:g} (boxes): "
                     f"{found} objects found, {wrong} with the wrong class, {missed} missed, {alarms} false alarms.")
    per_class = numbers.get("per_class_ap") or {}
    if per_class:
        types = list(per_class)
        rows = ["| class | " + " | ".join(f"{t} AP | {t} AP50" for t in types) + " |",
                "| --- |" + " --- | --- |" * len(types)]
        for name in numbers.get("class_names", []):
            cells = []
            for t in types:
                v = per_class[t].get(name, {})
                cells += ["—" if v.get(m) is None or math.isnan(v[m]) else f"{v[m]:.3f}" for m in ("AP", "AP50")]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("\n".join(rows))
    if numbers.get("gallery"):
        lines.append(f"The gallery shows the images with the most mistakes: {GALLERY_STYLES}.")
    return "\n\n".join(lines)


def model_page(entry) -> ModelPage:
    """The Model tab's content for a catalogue entry (``ModelEntry``; ``folder`` None: nothing on disk)."""
    folder = getattr(entry, "folder", None)
    if folder is None:
        return ModelPage(figures=f"**{entry.name}** has no folder of its own: no evaluation pictures or reports.")
    folder = Path(folder)
    pictures = pictures_dir(folder / MODEL_EVALUATION)
    numbers = read_pictures(pictures)
    page = ModelPage()
    if numbers is None:
        page.figures = (f"**{entry.name}** has no evaluation pictures (make them with `detdemo eval --model "
                        f"{folder.name or folder} --data DATA --out {folder.name or folder}/{MODEL_EVALUATION}`).")
    else:
        page.pictures = [(str(pictures / name), caption) for name, caption in listed_pictures(pictures)]
        page.figures = _figures(_read_json(folder / MODEL_EVALUATION), numbers)
    reports = [f"### {title}\n\n{(folder / name).read_text(encoding='utf-8', errors='replace')}"
               for name, title in REPORTS if (folder / name).is_file()]
    page.reports = "\n\n".join(reports) or f"No parity or accuracy report in {folder.name or folder}."
    return page


def servable(page: ModelPage) -> list[tuple[str, str]]:
    """The page's pictures as files Gradio will serve: those outside the working and temp folders are copied
    under the temp folder first (once per file content)."""
    from detdemo.fileio import atomic_path

    cwd, temp = Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()
    out = []
    for file, caption in page.pictures:
        path = Path(file).resolve()
        if path.is_relative_to(cwd) or path.is_relative_to(temp):
            out.append((str(path), caption))
            continue
        digest = hashlib.sha256(str(path).encode() + str(path.stat().st_mtime_ns).encode()).hexdigest()[:16]
        copy = SERVED_DIR / digest / path.name
        if not copy.is_file():
            with atomic_path(copy) as tmp:
                shutil.copyfile(path, tmp)
        out.append((str(copy), caption))
    return out
