"""Ultralytics YOLO layout: a ``data.yaml`` naming the classes and the split folders, one ``.txt`` per image.

The label file of ``.../images/<sub>/x.jpg`` is ``.../labels/<sub>/x.txt`` (the last ``images`` folder of the path
becomes ``labels``, as Ultralytics does it). Each line is one object, coordinates normalised to [0, 1]:
``class cx cy w h`` for a box, or ``class x1 y1 x2 y2 x3 y3 ...`` for a polygon (segmentation; the box is then the
polygon's extent). An image without a label file, or with an empty one, is a negative: YOLO datasets mark
background images that way, so it is not an error.

Masks: a split has masks only when every object line in it is a polygon. One box line among polygons makes the
whole split a detection split (boxes only, one warning), because a mask target must exist for every object or none.

Labels are read and checked when the dataset is opened, every problem at once (file and line named), so a bad line
is not found mid-epoch inside a loader worker. A label file beside the images that no image matches is reported too:
it usually means the images were renamed or deleted and the labels silently stopped counting. (LabelImg's
``classes.txt`` in a labels folder is not a label file and is left alone.)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from pycocotools import mask as mask_utils

from detdemo.data.base import (
    Annotation,
    DetectionDataset,
    ImageRecord,
    OffImageBoxes,
    Problems,
    clip_boxes,
    degenerate,
    warn_degenerate,
)
from detdemo.errors import DataError
from detdemo.fileio import IMAGE_EXTENSIONS

DATA_YAML = "data.yaml"  # the name Ultralytics, Roboflow and CVAT exports use, and the one convert writes
YAML_SUFFIXES = (".yaml", ".yml")
SPLIT_KEYS = ("train", "val", "test")
NOT_LABEL_FILES = ("classes.txt",)  # LabelImg writes the class list into the labels folder
COORD_EPS = 1e-6  # normalised coordinates written with rounding may overshoot 1.0 by this much
MAX_YAML_BYTES = 1 << 20  # a data.yaml is a few lines; bigger files in a folder are something else


def _read_yaml(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise DataError(f"{path}: malformed YAML ({problem}{where})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _looks_like_data_yaml(path: Path) -> bool:
    """A YAML file with ``names`` and a ``train`` or ``val`` entry: the least a YOLO dataset file has."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            return False
        data = _read_yaml(path)
    except (DataError, OSError):
        return False
    return isinstance(data, dict) and "names" in data and ("train" in data or "val" in data)


def find_data_yaml(folder: Path) -> Path | None:
    """The dataset YAML of a folder: ``data.yaml`` if present, else the one other YAML that reads like one.

    Other YAML files (a training config, a CI file) are only taken when they hold ``names`` and a split, so a
    folder of unrelated YAML is not mistaken for a dataset; two candidates are refused rather than guessed between.
    """
    if (folder / DATA_YAML).is_file():
        return folder / DATA_YAML
    candidates = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in YAML_SUFFIXES and p.is_file()
                  and _looks_like_data_yaml(p)]
    if len(candidates) > 1:
        raise DataError(f"{folder}: several dataset YAML files ({', '.join(p.name for p in candidates)}); "
                        "pass the one to use as --data")
    return candidates[0] if candidates else None


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        head, tail = text.rsplit(sa, 1)
        text = head + sb + tail
    return Path(text).with_suffix(".txt")


def _class_names(data: dict, where: str) -> list[str]:
    if "names" not in data:
        raise DataError(f"{where}: no 'names' (the class list) in the dataset YAML")
    names = data["names"]
    if isinstance(names, dict):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be class indices 0, 1, 2, ...") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise DataError(f"{where}: 'names' indices must run 0..{len(by_index) - 1} without gaps, "
                            f"got {sorted(by_index)}")
        names = [by_index[i] for i in range(len(by_index))]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise DataError(f"{where}: 'names' must be a list or an {{index: name}} mapping, not {type(names).__name__}")
    if not names:
        raise DataError(f"{where}: 'names' is empty")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{where}: class name(s) {dup} appear twice in 'names'")
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DataError(f"{where}: 'nc' is {nc} but 'names' lists {len(names)} classes")
    return names


@dataclass
class YoloSpec:
    """What a dataset YAML says: the classes and, per split key, the image entries (folders, lists, files)."""

    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, list[str]]

    @staticmethod
    def read(yaml_path: Path) -> YoloSpec:
        where = str(yaml_path)
        data = _read_yaml(yaml_path)
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a mapping with 'names' and 'train'/'val' entries")
        if "kpt_shape" in data:
            raise DataError(f"{where}: YOLO pose (keypoint) datasets are not supported; boxes and polygons only")
        names = _class_names(data, where)
        # 'path' is the root the split entries are relative to; relative to the YAML here. Ultralytics resolves it
        # against its own datasets folder, so a copied 'path: ../datasets/x' often points nowhere: fall back to
        # the YAML's folder, where such datasets are actually unpacked.
        root = yaml_path.parent
        if data.get("path"):
            given = Path(str(data["path"])).expanduser()
            given = given if given.is_absolute() else yaml_path.parent / given
            if given.is_dir():
                root = given
        splits = {}
        for key in SPLIT_KEYS:
            entry = data.get(key)
            if entry in (None, ""):
                continue
            entries = entry if isinstance(entry, list) else [entry]
            if not all(isinstance(e, str) for e in entries):
                raise DataError(f"{where}: '{key}' must be a path or a list of paths")
            splits[key] = entries
        if "train" not in splits and "val" not in splits:
            raise DataError(f"{where}: neither 'train' nor 'val' is given")
        return YoloSpec(yaml_path, root, names, splits)

    def resolve(self, entry: str, key: str) -> Path:
        """An entry as a path; Roboflow's exports write ``../train/images`` meaning ``train/images``."""
        path = Path(entry).expanduser()
        if path.is_absolute():
            candidates = [path]
        else:
            candidates = [self.root / path]
            if entry.startswith("../"):
                candidates.append(self.root / entry[3:])
        for c in candidates:
            if c.exists():
                return c
        raise DataError(f"{self.yaml_path}: '{key}' path {entry!r} does not exist (looked for {candidates[0]})")

    def images(self, key: str) -> tuple[list[Path], list[Path]]:
        """(images of a split in order, the image folders named directly, whose labels folders are checked)."""
        images, folders = [], []
        for entry in self.splits[key]:
            path = self.resolve(entry, key)
            if path.is_dir():
                folders.append(path)
                images += _images_under(path)
            elif path.suffix.lower() == ".txt":
                images += _image_list(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                raise DataError(f"{self.yaml_path}: '{key}' entry {entry!r} is not a folder, an image list (.txt) "
                                "or an image")
        return list(dict.fromkeys(images)), folders


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _image_list(txt: Path) -> list[Path]:
    """An image list: one path a line, relative ones (``./images/x.jpg``) relative to the list's folder."""
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{txt}: cannot read the image list ({exc})") from None
    images, problems = [], Problems(str(txt))
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line).expanduser()
        path = path if path.is_absolute() else txt.parent / line.removeprefix("./")
        if not path.is_file():
            problems.add(f"line {n}: image {line!r} not found")
        images.append(path)
    problems.raise_if_any()
    return images


@dataclass
class LabelLines:
    """One label file, parsed: class indices and normalised geometry (a box, or a polygon's points)."""

    classes: np.ndarray  # (N,) int64, 0-based YOLO indices
    boxes: np.ndarray  # (N, 4) float32, normalised XYXY (a polygon's extent)
    polygons: list[np.ndarray | None]  # per object: (P, 2) normalised points, None for a box line

    @staticmethod
    def empty() -> LabelLines:
        return LabelLines(np.zeros((0,), np.int64), np.zeros((0, 4), np.float32), [])


def parse_label_file(path: Path, num_classes: int, problems: Problems) -> LabelLines:
    """Every line of one label file; what is wrong goes to ``problems`` as ``file:line: what``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"{path}: cannot read ({exc})")
        return LabelLines.empty()
    classes, boxes, polygons = [], [], []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{n}"
        try:
            values = [float(f) for f in fields]
        except ValueError:
            problems.add(f"{where}: not a number in {line.strip()[:60]!r}")
            continue
        cls, coords = values[0], np.array(values[1:], np.float64)
        if not cls.is_integer():
            problems.add(f"{where}: class index {fields[0]!r} is not a whole number")
            continue
        if cls < 0 or cls >= num_classes:
            problems.add(f"{where}: class index {int(cls)} is outside 'names' (0..{num_classes - 1})")
            continue
        if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
            problems.add(f"{where}: {len(fields)} fields; expected 5 (class cx cy w h) or a polygon of at least 3 "
                         "points (class x1 y1 x2 y2 x3 y3 ...)")
            continue
        if not np.isfinite(coords).all() or coords.min() < -COORD_EPS or coords.max() > 1 + COORD_EPS:
            problems.add(f"{where}: coordinates must be normalised to [0, 1]")
            continue
        coords = coords.clip(0, 1)
        if len(coords) == 4:
            cx, cy, w, h = coords
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            # Centre and size are rounded separately, so an edge box may overshoot by a rounding step: not an
            # overhang. A real one is clipped and counted (one warning) like VOC's and COCO's.
            rounding = (box > -COORD_EPS) & (box < 1 + COORD_EPS)
            boxes.append(np.where(rounding, box.clip(0, 1), box))
            polygons.append(None)
        else:
            points = coords.reshape(-1, 2)
            boxes.append(np.concatenate([points.min(0), points.max(0)]))
            polygons.append(points.astype(np.float32))
        classes.append(int(cls))
    if not classes:
        return LabelLines.empty()
    return LabelLines(np.array(classes, np.int64), np.array(boxes, np.float32).reshape(-1, 4), polygons)


def orphan_labels(folders: Sequence[Path], images: Sequence[Path]) -> list[Path]:
    """Label files in the labels folders of ``folders`` that match none of ``images``."""
    expected = {label_path(p) for p in images}
    orphans = []
    for folder in folders:
        labels = label_path(folder / "x.jpg").parent
        if labels == folder or not labels.is_dir():
            continue
        orphans += [t for t in sorted(labels.rglob("*.txt")) if t not in expected and t.name not in NOT_LABEL_FILES]
    return orphans


def polygon_mask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """(N, H, W) uint8 masks from normalised polygons, rasterised by pycocotools as COCO polygons are."""
    if not polygons:
        return np.zeros((0, height, width), np.uint8)
    scale = np.array([width, height], np.float64)
    rles = [mask_utils.frPyObjects([(p * scale).ravel().tolist()], height, width)[0] for p in polygons]
    return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


class YoloDataset(DetectionDataset):
    """One split (``train``, ``val`` or ``test``; ``all`` for every split together) of a YOLO dataset YAML."""

    layout = "yolo"

    def __init__(
        self,
        yaml_path: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        yaml_path = Path(yaml_path)
        self.spec = YoloSpec.read(yaml_path)
        super().__init__(self.spec.root, transforms)
        self.yaml_path, self.split = yaml_path, split
        names = self.spec.names
        if classes is not None:  # a fixed class list, e.g. the one a checkpoint was trained with
            unknown = [n for n in names if n not in classes]
            if unknown:
                raise DataError(f"{yaml_path}: classes {unknown} are not among the expected classes {list(classes)}")
            self.classes.extend(classes)
        else:
            self.classes.extend(names)
        self.index_to_label = np.array([self.classes.index(n) for n in names], np.int64)

        keys = list(self.spec.splits) if split == "all" else [split]
        missing = [k for k in keys if k not in self.spec.splits]
        if missing:
            raise DataError(f"{yaml_path}: no '{missing[0]}' split (it has {', '.join(self.spec.splits)})")
        images, folders = [], []
        for key in keys:
            found, dirs = self.spec.images(key)
            images += found
            folders += dirs
        images = list(dict.fromkeys(images))
        if not images:
            raise DataError(f"{yaml_path}: split {split!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")

        problems = Problems(str(yaml_path))
        for orphan in orphan_labels(folders, images):
            problems.add(f"{orphan}: label file with no image")
        self.objects: list[LabelLines] = []
        dropped, dropped_files = 0, []
        off_image = OffImageBoxes()
        for i, image in enumerate(images):
            label = label_path(image)
            lines = parse_label_file(label, len(names), problems) if label.is_file() else LabelLines.empty()
            off_image.add(label.name, lines.boxes, 1, 1)  # normalised: the image is 1 x 1
            lines.boxes = clip_boxes(lines.boxes, 1, 1)
            bad = degenerate(lines.boxes)
            if bad.any():
                dropped += int(bad.sum())
                dropped_files.append(label.name)
                keep = ~bad
                lines = LabelLines(lines.classes[keep], lines.boxes[keep],
                                   [p for p, k in zip(lines.polygons, keep) if k])
            self.records.append(ImageRecord(image, i + 1))
            self.objects.append(lines)
        problems.raise_if_any()
        warn_degenerate(str(yaml_path), dropped, dropped_files)
        off_image.warn(str(yaml_path))
        kinds = [p is not None for lines in self.objects for p in lines.polygons]
        self.has_masks = bool(kinds) and all(kinds)
        if any(kinds) and not self.has_masks:
            warnings.warn(f"{yaml_path}: split {split!r} mixes box and polygon lines; loading boxes only",
                          stacklevel=2)

    @staticmethod
    def split_keys(yaml_path: str | Path) -> list[str]:
        """The splits the YAML names (``train``, ``val``, ``test``), in that order."""
        return list(YoloSpec.read(Path(yaml_path)).splits)

    def num_objects(self) -> int:
        return sum(len(o.classes) for o in self.objects)

    def annotation(self, idx: int, height: int, width: int) -> Annotation:
        lines = self.objects[idx]
        if not len(lines.classes):
            return Annotation.empty(self.has_masks, height, width)
        scale = np.array([width, height, width, height], np.float32)
        ann = Annotation(
            boxes=lines.boxes * scale,
            labels=self.index_to_label[lines.classes],
            iscrowd=np.zeros(len(lines.classes), np.int64),
        )
        if self.has_masks:
            ann.masks = polygon_mask(lines.polygons, height, width)
        return ann
