"""What a published model repo holds, staged from an export folder: safetensors + config.json (no pickle), the
exported files with their companions, the parity and accuracy reports, the evaluation pictures (``evaluation.json``
and ``evaluation/``, shown in the card), the model's examples, a model card, and a manifest that names the
safetensors file as the eager reference.

The export id travels on: config.json and every exported file carry the same id as the manifest, so a repo whose
files come from two exports is refused by the loaders, exactly as a local export folder is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from detdemo.engine.eval_pictures import MODEL_EVALUATION, listed_pictures, pictures_dir
from detdemo.errors import DetDemoError
from detdemo.fileio import write_json
from detdemo.hub.card import ModelFacts, write_card
from detdemo.models.portable import WEIGHTS_FILE, save_portable
from export.formats import BACKENDS, FORMATS, MANIFEST, backend_label, choice_label, choice_of, companions
from export.gate import INCONCLUSIVE, decide_text, interval_text, iou_types_of, verdict_of
from export.manifest import verified_of

REPORTS = ("parity.json", "parity.md", "accuracy.json", "accuracy.md")
EXAMPLES = "examples"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _label(name: str) -> str:
    """A report's backend key ("onnx", "onnx-int8", "eager", or a backend name) as people read it."""
    if name in FORMATS:
        return choice_label(choice_of(name))
    return backend_label(name)


def copy_evaluation(source: Path, dest: Path) -> list[tuple[str, str]]:
    """A model folder's evaluation (``evaluation.json`` and its pictures folder) copied into ``dest``; returns the
    pictures as (path relative to ``dest``, caption), empty when ``source`` has none."""
    pictures = pictures_dir(source / MODEL_EVALUATION)
    listed = listed_pictures(pictures)
    if not listed:
        return []
    if source.resolve() != dest.resolve():
        if (dest / pictures.name).exists():
            shutil.rmtree(dest / pictures.name)
        shutil.copytree(pictures, dest / pictures.name, ignore=shutil.ignore_patterns(".*"))
        if (source / MODEL_EVALUATION).is_file():
            shutil.copyfile(source / MODEL_EVALUATION, dest / MODEL_EVALUATION)
    return [(f"{pictures.name}/{name}", caption) for name, caption in listed]


def verification_lines(folder: Path, manifest: dict) -> list[str]:
    """One line per exported file: detection by detection from the folder's parity report, and by AP from the
    verified figures check-export recorded in the manifest (present whichever reports were kept beside it)."""
    lines = []
    parity = _read_json(folder / "parity.json")
    for name, b in ((parity or {}).get("backends") or {}).items():
        o = b.get("overall", {})
        verdict = ("PASS" if b.get("passed") else "FAIL") if b.get("gated", True) else "reported (judged by AP)"
        lines.append(f"{_label(name)} (`{Path(b.get('file', '')).name}`), detection by detection on "
                     f"{len(b.get('images', []))} probe images: **{verdict}** — max box difference "
                     f"{o.get('max_box_diff_px', 0):.2g} px, max score difference {o.get('max_score_diff', 0):.2g}")
    for name, f in verified_of(manifest).items():
        deltas = ", ".join(f"{t} {interval_text(f, t)}" for t in iou_types_of(f))
        verdict = verdict_of(f)
        why = f"; {decide_text(f)}" if verdict == INCONCLUSIVE else ""
        lines.append(f"{_label(name)}, AP on {Path(str(f.get('data', ''))).name} {f.get('split', '')} "
                     f"({f.get('images', '?')} images): **{verdict}** — {deltas} (limit ±{f.get('limit')}{why})")
    return lines


@dataclass(frozen=True)
class PublishNames:
    dataset: str
    license: str
    told: str  # where each came from, for the user: "dataset 'BCCD' (folder name); license mit (BCCD/LICENSE)"


def publish_names(checkpoint: dict, path: Path, dataset: str | None, license: str | None) -> PublishNames:
    """The dataset name and licence a card and a Space state: the flags, else what training recorded about the data
    (``detdemo.data.provenance``); DetDemoError asking for the flag where neither says, so a repo is never described
    by a folder's name ("… on data") or published under an unstated licence."""
    from detdemo.data.provenance import Provenance

    recorded = Provenance.from_dict(checkpoint.get("dataset"))
    missing = [(fact, flag) for fact, flag, given, known in (("name", "--dataset NAME", dataset, recorded.name),
                                                             ("licence", "--license ID", license, recorded.license))
               if not (given or known)]
    if missing:
        why = ("was trained before detdemo recorded its data's name and licence" if not checkpoint.get("dataset")
               else f"was trained on data that states no {' and no '.join(fact for fact, _ in missing)}")
        raise DetDemoError(f"{path}: the model {why}; pass {' and '.join(flag for _, flag in missing)} (a Hub "
                           f"licence id such as mit, apache-2.0, cc-by-4.0, or 'other')")
    source = f" ({recorded.source})" if recorded.source else ""
    told = (f"dataset {dataset or recorded.name!r}{'' if dataset else source}; "
            f"license {license or recorded.license}{'' if license else source}")
    return PublishNames(dataset or recorded.name, license or recorded.license, told)


def stage_model_repo(export_dir: str | Path, out: str | Path, repo_id: str, *, dataset: str | None = None,
                     license: str | None = None, examples: str | Path | None = None,
                     space_id: str | None = None) -> ModelFacts:
    """Write the model repo for ``export_dir`` into ``out`` (emptied first); returns what the card says.
    ``dataset``/``license``: None takes what the model recorded (``publish_names``)."""
    from detdemo.checkpoint import load_checkpoint
    from detdemo.models import get_spec
    from export.runtime import folder_files, read_manifest

    export_dir, out = Path(export_dir), Path(out)
    manifest = read_manifest(export_dir)
    if manifest is None:
        raise DetDemoError(f"{export_dir}: not an export folder (no {MANIFEST}); run `detdemo export` first")
    files = folder_files(export_dir)
    if "eager" not in files:
        raise DetDemoError(f"{export_dir}: holds no PyTorch checkpoint to publish as safetensors")
    checkpoint = load_checkpoint(files["eager"])
    names_told = publish_names(checkpoint, files["eager"], dataset, license)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_portable(out, checkpoint, export_id=manifest.get("export_id"))
    names = {"eager": WEIGHTS_FILE}
    for fmt, path in files.items():
        if fmt == "eager":
            continue
        for name in (path.name, *companions(path.name)):
            shutil.copyfile(export_dir / name, out / name)
        names[fmt] = path.name
    for report in REPORTS:
        if (export_dir / report).is_file():
            shutil.copyfile(export_dir / report, out / report)
    source = Path(examples) if examples else export_dir / EXAMPLES
    if source.is_dir():
        shutil.copytree(source, out / EXAMPLES, ignore=shutil.ignore_patterns(".*"))
    pictures = copy_evaluation(export_dir, out)
    published = {**manifest, "files": names, "source": Path(str(manifest.get("source", ""))).name}
    write_json(out / MANIFEST, published)
    cfg = checkpoint["model_config"]
    facts = ModelFacts(
        repo_id=repo_id, arch=cfg["arch"], class_names=list(cfg["class_names"]),
        dataset=names_told.dataset,
        metrics={k: v for k, v in (manifest.get("metrics") or {}).items() if k != "epoch"},
        files={"PyTorch (safetensors)": WEIGHTS_FILE, **{_label(fmt): name for fmt, name in names.items()
                                                         if fmt != "eager"}},
        verification=verification_lines(export_dir, manifest), license=names_told.license,
        masks=get_spec(cfg["arch"]).masks, space_id=space_id, pictures=pictures,
        runs_code=[name for fmt, name in names.items() if fmt in FORMATS and BACKENDS[FORMATS[fmt].backend].unsafe])
    write_card(facts, out)
    return facts
