"""What a dataset says about itself: the name people know it by and the licence it is shared under.

Training records this in the checkpoint so that ``detdemo publish`` can describe the model ("maskrcnn_light on
BCCD", licence MIT) from facts the data stated, instead of the folder's name ("… on data") and ``license: other``.
Only what the dataset itself states is read: a COCO file's ``info``/``licenses``, a ``LICENSE`` file at (or just
above) the dataset root, a YOLO ``data.yaml``'s ``license`` (Roboflow's exports carry one), VOC's ``<database>``.
A licence is recorded only when the dataset states one for all of it; a COCO file listing several per-image
licences (COCO itself) records none, and publish then asks for ``--license``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

GENERIC_FOLDER_NAMES = {"data", "dataset", "datasets", "images", "train", "val", "valid", "export", "annotations"}
_LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING")
_FIRST_LINE_LICENSES = (  # (pattern on a LICENSE file's first lines, Hub licence id)
    (r"\bMIT License\b", "mit"), (r"Apache License,? Version 2\.0", "apache-2.0"),
    (r"BSD 3-Clause|Redistribution and use in source and binary forms", "bsd-3-clause"),
    (r"GNU GENERAL PUBLIC LICENSE\s+Version 3", "gpl-3.0"), (r"CC0 1\.0", "cc0-1.0"),
)


@dataclass(frozen=True)
class Provenance:
    name: str | None = None  # the dataset's own name for itself (None: it states none)
    license: str | None = None  # a Hugging Face Hub licence id ("mit", "cc-by-4.0") for the whole dataset
    source: str = ""  # where these were read, for the messages that use them

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Provenance:
        data = data or {}
        return cls(data.get("name"), data.get("license"), data.get("source", ""))


def hub_license(text: str | None) -> str | None:
    """A Hub licence id from a Creative Commons URL, an SPDX-like name or a licence's usual title; None if unknown."""
    if not text:
        return None
    cc = re.search(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d\.\d)", text)
    if cc:
        kind, version = cc.group(2), cc.group(3)
        return f"cc0-{version}" if kind == "zero" else f"cc-{kind}-{version}"
    spdx = re.fullmatch(r"\s*(CC[- ]BY(?:[- ](?:NC|SA|ND))*|CC0)[- ](\d\.\d)\s*", text, re.IGNORECASE)
    if spdx:
        return f"{spdx.group(1).lower().replace(' ', '-')}-{spdx.group(2)}"
    for pattern, hub_id in _FIRST_LINE_LICENSES:
        if re.search(pattern, text, re.IGNORECASE):
            return hub_id
    simple = text.strip().lower()
    return simple if simple in {"mit", "apache-2.0", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "odbl"} else None


def _license_file(root: Path) -> tuple[str | None, str]:
    for folder in (root, root.parent, root.parent.parent):
        for name in _LICENSE_FILES:
            path = folder / name
            if path.is_file():
                head = path.read_text(encoding="utf-8", errors="replace")[:600]
                return hub_license(head), str(path)
    return None, ""


def _coco(json_file: Path) -> tuple[Provenance, bool]:
    """(what the file states, whether it lists licences at all: then a LICENSE file beside it does not override)."""
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Provenance(), False
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    licenses = [x for x in data.get("licenses") or [] if isinstance(x, dict)]
    used = {img.get("license") for img in data.get("images") or [] if isinstance(img, dict)} - {None}
    stated = [x for x in licenses if not used or x.get("id") in used]
    licence = hub_license(stated[0].get("url") or stated[0].get("name")) if len(stated) == 1 else None
    name = str(info.get("description") or "").strip() or None
    return Provenance(name, licence, f"{json_file.name} info/licenses"), bool(licenses)


def _yolo(yaml_file: Path) -> Provenance:
    import yaml

    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return Provenance()
    roboflow = data.get("roboflow") if isinstance(data.get("roboflow"), dict) else {}
    licence = hub_license(str(data.get("license") or roboflow.get("license") or ""))
    name = data.get("name") or roboflow.get("project")
    return Provenance(str(name) if name else None, licence, yaml_file.name)


def _voc_database(root: Path) -> str | None:
    first = next(iter(sorted((root / "Annotations").glob("*.xml"))), None)
    try:
        node = ET.parse(first).find("source/database") if first else None
    except (ET.ParseError, OSError):
        return None
    text = (node.text or "").strip() if node is not None else ""
    return text if text and text.lower() != "unknown" else None


def read_provenance(path: str | Path, layout: str | None = None, split: str = "train") -> Provenance:
    """The dataset's stated name and licence (each None where it states none); never raises for missing facts."""
    from detdemo.data.layout import coco_json_for_split, coco_jsons, detect_layout
    from detdemo.data.yolo import find_data_yaml

    found, root = detect_layout(path)
    layout = layout or found
    stated, licences_listed = Provenance(), False
    if layout == "coco":
        json_file = root if root.is_file() else coco_json_for_split(root, split) or next(iter(coco_jsons(root)), None)
        stated, licences_listed = _coco(json_file) if json_file else (stated, False)
    elif layout == "yolo":
        yaml_file = root if root.is_file() else find_data_yaml(root)
        stated = _yolo(yaml_file) if yaml_file else stated
    elif layout == "voc":
        stated = Provenance(_voc_database(root), None, "Annotations/*.xml <database>")
    folder = root.parent if root.is_file() else root
    licence, licence_source = ((stated.license, stated.source) if stated.license or licences_listed
                               else _license_file(folder))
    name = stated.name or (folder.name if folder.name.lower() not in GENERIC_FOLDER_NAMES else None)
    sources = [s for s in (stated.source if stated.name else "folder name" if name else "",
                           licence_source if licence else "") if s]
    return Provenance(name, licence, "; ".join(dict.fromkeys(sources)))
