"""Find out what a ``--data PATH`` is, and open the right split of it.

Users point at whatever they have: a COCO JSON file, a folder a labelling tool exported, VOC's root, or the
Penn-Fudan folder (often one level above the real root, straight out of a zip), or a YOLO folder with its
``data.yaml`` (or that YAML file itself). Detection looks at the folder and its direct children and refuses to guess
between two matches.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from detdemo.data.base import DetectionDataset
from detdemo.data.coco import CocoDataset
from detdemo.data.pennfudan import IMAGE_DIR, MASK_DIR, PennFudanDataset
from detdemo.data.voc import VOCDataset
from detdemo.data.yolo import YAML_SUFFIXES, YoloDataset, find_data_yaml
from detdemo.errors import DataError

LAYOUTS = ("coco", "voc", "pennfudan", "yolo")  # the one list every --layout option offers
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation", "test")}


def coco_jsons(folder: Path) -> list[Path]:
    found = sorted(folder.glob("annotations/*.json")) + sorted(folder.glob("*.json"))
    found += sorted(folder.glob("*/_annotations.coco.json"))  # Roboflow: train/_annotations.coco.json
    return found


def _match(folder: Path) -> str | None:
    if (folder / IMAGE_DIR).is_dir() and (folder / MASK_DIR).is_dir():
        return "pennfudan"
    if (folder / "Annotations").is_dir() and any((folder / "Annotations").glob("*.xml")):
        return "voc"
    if find_data_yaml(folder):  # before COCO: any stray .json beside a data.yaml would otherwise read as COCO
        return "yolo"
    if coco_jsons(folder):
        return "coco"
    return None


def detect_layout(path: str | Path) -> tuple[str, Path]:
    """(layout, root) for a path, looking one folder down when the path itself is a wrapper."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset path not found")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco", path
        if path.suffix.lower() in YAML_SUFFIXES:
            return "yolo", path
        raise DataError(f"{path}: a dataset is a folder, a COCO .json file or a YOLO data .yaml file")
    layout = _match(path)
    if layout:
        return layout, path
    children = [(c, _match(c)) for c in sorted(path.iterdir()) if c.is_dir()]
    hits = [(layout, c) for c, layout in children if layout]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise DataError(f"{path}: several datasets inside ({', '.join(str(c) for _, c in hits)}); pick one")
    raise DataError(
        f"{path}: no dataset layout recognised (expected a COCO .json, VOC Annotations/*.xml, "
        f"Penn-Fudan {IMAGE_DIR}/ + {MASK_DIR}/, or a YOLO data.yaml)"
    )


def coco_json_for_split(root: Path, split: str) -> Path | None:
    jsons = coco_jsons(root)
    for alias in SPLIT_ALIASES.get(split, (split,)):
        for j in jsons:
            name = j.stem.removeprefix("instances_").lower()
            if name.startswith(alias) or (j.name == "_annotations.coco.json" and j.parent.name.lower() == alias):
                return j
    return None


def holdout_indices(n: int, split: str, val_fraction: float, seed: int) -> list[int]:
    """A fixed random split for datasets that ship none (the tutorial holds out images the same way)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    chosen = order[n - n_val :] if split == "val" else order[: n - n_val]
    return sorted(chosen)


def open_dataset(
    path: str | Path,
    split: str = "train",
    layout: str | None = None,
    transforms: Callable | None = None,
    classes: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> DetectionDataset:
    """Open one split of a dataset; ``split='all'`` skips splitting. Datasets without splits are held out."""
    if layout is not None and layout not in LAYOUTS:
        raise DataError(f"unknown dataset layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    found, root = detect_layout(path)
    layout = layout or found
    if layout == "coco":
        json_file = root if root.is_file() else coco_json_for_split(root, split)
        if json_file is None:
            jsons = coco_jsons(root)
            if len(jsons) != 1:
                names = ", ".join(j.name for j in jsons)
                raise DataError(f"{root}: no COCO annotation file for split {split!r} among: {names}")
            json_file = jsons[0]
            ds: DetectionDataset = CocoDataset(json_file, transforms=transforms, classes=classes)
            return _subset(ds, split, val_fraction, seed)
        ds = CocoDataset(json_file, transforms=transforms, classes=classes)
        ds.split_source = json_file.name if root.is_file() else str(json_file.relative_to(root))
        return ds
    if layout == "voc":
        ids, source = voc_split_ids(root, split)
        if ids is not None:
            ds = VOCDataset(root, transforms=transforms, classes=classes, ids=ids)
            ds.split_source = source
            return ds
        return _subset(VOCDataset(root, transforms=transforms, classes=classes), split, val_fraction, seed)
    if layout == "yolo":
        return _open_yolo(root, split, transforms, classes, val_fraction, seed)
    ds = PennFudanDataset(root, transforms=transforms)
    return _subset(ds, split, val_fraction, seed)


def _open_yolo(root: Path, split: str, transforms: Callable | None, classes: list[str] | None,
               val_fraction: float, seed: int) -> DetectionDataset:
    """The YAML's entry for the split (``val`` also answers to ``valid``/``test``); no val entry: a hold-out."""
    yaml_path = root if root.is_file() else find_data_yaml(root)
    if yaml_path is None:
        raise DataError(f"{root}: no YOLO data.yaml here")
    keys = YoloDataset.split_keys(yaml_path)
    if split == "all":
        return YoloDataset(yaml_path, "all", transforms, classes)
    has_val = any(a in keys for a in SPLIT_ALIASES["val"])
    if split in ("train", "val") and "train" in keys and not has_val:
        return _subset(YoloDataset(yaml_path, "train", transforms, classes), split, val_fraction, seed)
    key = next((a for a in SPLIT_ALIASES.get(split, (split,)) if a in keys), None)
    if key is not None:
        return YoloDataset(yaml_path, key, transforms, classes)
    raise DataError(f"{yaml_path}: no {split!r} split (it has {', '.join(keys)})")


VOC_SPLITS = Path("ImageSets") / "Main"
VOC_COMPLEMENT = {"train": "val", "val": "train"}  # a split without its file: every image the other does not list


def _listed_ids(split_file: Path) -> list[str]:
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def voc_split_ids(root: Path, split: str) -> tuple[list[str] | None, str]:
    """(image ids, where they come from) of a VOC split: its ``ImageSets/Main/<split>.txt``; without one, when the
    other split is listed, every image that one does not list (a seeded hold-out would overlap it: training on
    the images ``eval`` then scores); (None, "") when no split is listed (the seeded hold-out applies)."""
    own = root / VOC_SPLITS / f"{split}.txt"
    if own.is_file():
        return _listed_ids(own), str(VOC_SPLITS / own.name)
    other = root / VOC_SPLITS / f"{VOC_COMPLEMENT.get(split, '')}.txt"
    if split not in VOC_COMPLEMENT or not other.is_file():
        return None, ""
    taken = set(_listed_ids(other))
    ids = sorted(xml.stem for xml in (root / "Annotations").glob("*.xml") if xml.stem not in taken)
    if not ids:
        raise DataError(f"{other}: lists every image in {root / 'Annotations'}, so none is left for split "
                        f"{split!r}; add {root / VOC_SPLITS / (split + '.txt')}")
    return ids, f"all images not in {VOC_SPLITS / other.name}"


def _subset(ds: DetectionDataset, split: str, val_fraction: float, seed: int) -> DetectionDataset:
    """Keep a held-out part in place, so the result is still a DetectionDataset with all its metadata."""
    if split == "all":
        return ds
    if split not in ("train", "val"):
        raise DataError(f"{ds.root}: has no predefined splits; use 'train', 'val' or 'all', not {split!r}")
    keep = holdout_indices(len(ds), split, val_fraction, seed)
    ds.split_source = (f"seeded hold-out of all images: {1 - val_fraction:.0%} train / {val_fraction:.0%} val, "
                       f"seed {seed}")
    return keep_images(ds, keep)


def keep_images(ds: DetectionDataset, keep: list[int]) -> DetectionDataset:
    """``ds`` reduced, in place, to the images at ``keep`` (in that order), with their annotations: still a
    DetectionDataset with all its metadata."""
    for attr in ("records", "annotations", "objects", "mask_paths"):
        if hasattr(ds, attr):
            values = getattr(ds, attr)
            setattr(ds, attr, [values[i] for i in keep])
    return ds


def collate(batch):
    """Detection batches are lists: images differ in size and targets in length."""
    return tuple(zip(*batch))


__all__ = ["open_dataset", "detect_layout", "collate", "holdout_indices", "keep_images", "LAYOUTS"]
