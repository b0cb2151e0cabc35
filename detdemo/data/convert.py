"""Write any dataset ``--data`` reads in another layout (COCO or YOLO), so users can move between tools.

The source is read through the same ``open_dataset`` and ``load_target`` as training, so the output holds exactly
what detdemo would train on: boxes clipped to the image, degenerate boxes dropped, labels named. Every split the
source has is written (``train`` and ``val``; a source without splits gets the seeded hold-out training uses).

Decisions a converter has to make, made here:

- Masks become polygons: the contours of each mask, traced by scikit-image (``find_contours`` at the 0.5 level, so
  a contour runs along pixel edges) and simplified by at most ``POLYGON_TOLERANCE`` (0.3) pixels, keeping the extreme
  points so the polygon's extent is still the box. A hole (an object seen around an occluder) is joined into its
  part by a zero-width bridge; readers fill polygons by the even-odd rule, so it stays a hole.
- YOLO has one polygon per line, so a mask in several parts (an occluded object) becomes one polygon whose parts
  are joined by zero-width bridges, the way Ultralytics' own COCO converter joins them. COCO keeps one polygon
  per part.
- YOLO has no crowd notion: crowd objects (COCO ``iscrowd=1``, VOC ``difficult``) are skipped, with one warning
  that counts them. COCO output keeps them with ``iscrowd=1``.
- Category ids in COCO output are 1..K in class order; the class list is the union over splits, first split first.
- Images are hard-linked where the filesystem allows it (no copy of a large dataset), copied otherwise.
- Nothing half-written: everything goes into a temporary folder beside ``out`` that is renamed at the end, and an
  existing non-empty ``out`` is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from detdemo.data.base import DetectionDataset
from detdemo.data.layout import open_dataset
from detdemo.data.yolo import DATA_YAML
from detdemo.errors import DataError
from detdemo.fileio import FILE_MODE, TEMP_SUFFIX, write_text

TARGETS = ("coco", "yolo")
SPLITS = ("train", "val", "test")  # the names both layouts read back (YOLO's data.yaml has no others)
DEFAULT_SPLITS = ("train", "val")
# Pixels a simplified polygon may stray from the traced contour. Pixel centres lie >= 0.35 px from it (0.5 / sqrt 2
# at a cut corner), so under that no pixel changes side: masks come back exactly (round trip IoU 1.0 on shapes).
POLYGON_TOLERANCE = 0.3
DECIMALS = 6  # YOLO's normalised coordinates: 1e-6 of a side is far below a pixel for any real image


@dataclass
class SplitSummary:
    name: str
    images: int = 0
    objects: int = 0
    crowd_skipped: int = 0
    empty_masks_skipped: int = 0


@dataclass
class ConvertSummary:
    layout: str
    out: Path
    splits: list[SplitSummary] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"{s.name} {s.images} images, {s.objects} objects" for s in self.splits]
        return f"wrote {self.layout} dataset to {self.out}: " + "; ".join(parts)


# -- masks to polygons ---------------------------------------------------------------------------------------------
def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """A binary mask as (P, 2) float XY polygons in pixel-edge coordinates, one per part, largest first.

    Holes are kept: each is joined into the part around it by a zero-width bridge, and both COCO (pycocotools)
    and Ultralytics (``cv2.fillPoly``) fill a polygon by the even-odd rule, so the hole stays empty.
    """
    from skimage.measure import find_contours, points_in_poly

    padded = np.pad(np.asarray(mask, bool), 1)  # so contours touching the image edge still close
    rings = []
    for contour in find_contours(padded.astype(np.float32), 0.5, positive_orientation="high"):
        xy = _simplify(contour[:-1])[:, ::-1] - 0.5  # (row, col) of the padded array -> x, y; pixel i spans [i, i+1]
        if len(xy) >= 3:
            rings.append((_signed_area(xy), xy))
    if not rings:
        return []
    rings.sort(key=lambda r: -abs(r[0]))
    outer_sign = np.sign(rings[0][0])  # the largest ring is an outer one; holes wind the other way
    parts = [[xy] for area, xy in rings if np.sign(area) == outer_sign]
    for area, hole in rings:
        if np.sign(area) != outer_sign:
            # the smallest part around the hole: parts are largest first, so the last one that contains it
            around = [p for p in parts if points_in_poly(hole[:1], p[0])[0]]
            if around:
                around[-1].append(hole)
    return [join_polygons(p) for p in parts]


def _simplify(ring: np.ndarray) -> np.ndarray:
    """Douglas-Peucker (scikit-image) on a closed ring, piecewise between its extreme points, so the polygon's
    extent, which is the box a YOLO reader derives, stays the mask's box exactly."""
    from skimage.measure import approximate_polygon

    if len(ring) < 4:
        return ring
    cuts = sorted({int(f(ring[:, axis])) for axis in (0, 1) for f in (np.argmin, np.argmax)})
    pieces = [ring[a : b + 1] for a, b in zip(cuts, cuts[1:])]
    pieces.append(np.concatenate([ring[cuts[-1] :], ring[: cuts[0] + 1]]))  # the piece across the ring's start
    return np.concatenate([approximate_polygon(p, POLYGON_TOLERANCE)[:-1] for p in pieces])


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def join_polygons(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One polygon visiting every part: each extra part hangs off one point of the first by a bridge walked out
    and back, which encloses no area. Filled by the even-odd rule, disjoint parts come out as their union and a
    part inside another (a hole) as a hole."""
    if len(parts) == 1:
        return parts[0]
    base = parts[0]
    i = int(np.argmin(((base[:, None, :] - parts[1][None, :, :]) ** 2).sum(-1).min(1)))
    anchor = base[i : i + 1]
    joined = [np.roll(base, -i, axis=0)]  # starts at the anchor, so the closing edge ends there too
    for part in parts[1:]:
        part = np.roll(part, -int(np.argmin(((part - anchor) ** 2).sum(-1))), axis=0)
        joined += [anchor, part, part[:1]]  # anchor -> round the part -> its first point; then back
    return np.concatenate(joined)


# -- output folder ----------------------------------------------------------------------------------------------
def _temporary_folder(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: output folder exists and is not empty; choose a new or empty one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent))
    os.chmod(tmp, FILE_MODE | (FILE_MODE & 0o444) >> 2)  # mkdtemp's 0700 would hide the output from others
    return tmp


def _place_image(src: Path, dst: Path) -> None:
    """Hard link (instant, no space) where allowed; a copy across filesystems or where linking is refused."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Base names, with ``_<n>`` added where two images of a split share a stem (sub-folders in the source, or
    ``x.jpg`` beside ``x.png``: YOLO's label file is named by the stem alone)."""
    seen: set[str] = set()
    names = []
    for n, p in enumerate(paths, start=1):
        stem = p.stem if p.stem.lower() not in seen else f"{p.stem}_{n}"
        seen.add(stem.lower())
        names.append(stem + p.suffix)
    return names


# -- the two writers ------------------------------------------------------------------------------------------------
def _instances(ds: DetectionDataset, idx: int, names: list[str], summary: SplitSummary):
    """(class index in ``names``, XYXY box, iscrowd, area, polygons or None) per object of one image."""
    height, width = ds.get_height_and_width(idx)
    target = ds.load_target(idx, height, width)
    boxes = target["boxes"].numpy().astype(np.float64)
    masks = target["masks"].numpy() if "masks" in target else None
    out = []
    for k, label in enumerate(target["labels"].tolist()):
        polygons = None
        if masks is not None:
            polygons = mask_polygons(masks[k])
            if not polygons:
                summary.empty_masks_skipped += 1
                continue
        area = float(masks[k].sum()) if masks is not None else float(target["area"][k])
        out.append((names.index(ds.class_names[label - 1]), boxes[k], int(target["iscrowd"][k]), area, polygons))
    return height, width, out


def _write_coco_split(ds: DetectionDataset, split: str, names: list[str], tmp: Path, progress: bool) -> SplitSummary:
    summary = SplitSummary(split)
    images, annotations = [], []
    files = _unique_names([r.path for r in ds.records])
    for idx in tqdm(range(len(ds)), desc=f"coco {split}", disable=not progress, unit="img"):
        height, width, objects = _instances(ds, idx, names, summary)
        _place_image(ds.records[idx].path, tmp / split / files[idx])
        images.append({"id": idx + 1, "file_name": files[idx], "width": width, "height": height})
        for cls, (x0, y0, x1, y1), crowd, area, polygons in objects:
            ann = {"id": len(annotations) + 1, "image_id": idx + 1, "category_id": cls + 1,
                   "bbox": [round(v, 3) for v in (x0, y0, x1 - x0, y1 - y0)], "area": round(area, 3),
                   "iscrowd": crowd}
            if polygons is not None:
                ann["segmentation"] = [np.round(p, 2).ravel().tolist() for p in polygons]
            annotations.append(ann)
    summary.images, summary.objects = len(images), len(annotations)
    coco = {"info": {"description": f"converted by detdemo from {ds.root} ({split})"}, "licenses": [],
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    write_text(tmp / "annotations" / f"instances_{split}.json", json.dumps(coco))
    return summary


def _yolo_line(cls: int, box: np.ndarray, polygons: list[np.ndarray] | None, height: int, width: int) -> str:
    scale = np.array([width, height], np.float64)
    if polygons is not None:
        points = (join_polygons(polygons) / scale).clip(0, 1).ravel()
    else:
        x0, y0, x1, y1 = box
        points = np.array([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height])
    return " ".join([str(cls)] + [f"{v:.{DECIMALS}f}" for v in points])


def _write_yolo_split(ds: DetectionDataset, split: str, names: list[str], tmp: Path, progress: bool) -> SplitSummary:
    summary = SplitSummary(split)
    files = _unique_names([r.path for r in ds.records])
    for idx in tqdm(range(len(ds)), desc=f"yolo {split}", disable=not progress, unit="img"):
        height, width, objects = _instances(ds, idx, names, summary)
        _place_image(ds.records[idx].path, tmp / "images" / split / files[idx])
        lines = []
        for cls, box, crowd, _, polygons in objects:
            if crowd:
                summary.crowd_skipped += 1
                continue
            lines.append(_yolo_line(cls, box, polygons, height, width))
        if lines:  # no label file is YOLO's way of saying "background image"
            write_text(tmp / "labels" / split / Path(files[idx]).with_suffix(".txt"), "\n".join(lines) + "\n")
        summary.objects += len(lines)
    summary.images = len(ds)
    return summary


def _write_data_yaml(tmp: Path, out: Path, splits: Sequence[str], names: list[str]) -> None:
    # An absolute 'path': Ultralytics resolves a relative one against its own datasets folder, not the YAML's.
    # detdemo falls back to the YAML's folder when this path is gone (the folder was moved).
    spec = {"path": str(out.resolve())} | {s: f"images/{s}" for s in splits} | {"names": dict(enumerate(names))}
    write_text(tmp / DATA_YAML, "# written by detdemo data convert\n" + yaml.safe_dump(spec, sort_keys=False))


# -- the entry point ------------------------------------------------------------------------------------------------
def convert_dataset(
    data: str | Path,
    to: str,
    out: str | Path,
    layout: str | None = None,
    splits: Sequence[str] = DEFAULT_SPLITS,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = False,
) -> ConvertSummary:
    """Write ``data``'s splits to ``out`` in layout ``to``; ``out`` must be new or empty."""
    if to not in TARGETS:
        raise DataError(f"cannot convert to {to!r}; choose from {', '.join(TARGETS)}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise DataError(f"cannot write split(s) {unknown}; choose from {', '.join(SPLITS)}")
    out = Path(out)
    sources = {}
    for split in splits:
        ds = open_dataset(data, split, layout, val_fraction=val_fraction, seed=seed)
        if len(ds):  # a one-image source has nothing to hold out
            sources[split] = ds
    if not sources:
        raise DataError(f"{data}: no images in split(s) {', '.join(splits)}")
    names: list[str] = []
    for ds in sources.values():
        names += [n for n in ds.class_names if n not in names]
    if to == "yolo" and any(ds.has_masks for ds in sources.values()) and not all(
            ds.has_masks for ds in sources.values()):
        warnings.warn(f"{data}: some splits have masks and some do not; each split is written as it is",
                      stacklevel=2)

    tmp = _temporary_folder(out)
    try:
        summary = ConvertSummary(to, out)
        write = _write_coco_split if to == "coco" else _write_yolo_split
        for split, ds in sources.items():
            summary.splits.append(write(ds, split, names, tmp, progress))
        if to == "yolo":
            _write_data_yaml(tmp, out, list(sources), names)
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a folder
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    crowd = sum(s.crowd_skipped for s in summary.splits)
    if crowd:
        warnings.warn(f"{data}: skipped {crowd} crowd/difficult object(s): YOLO labels have no crowd flag",
                      stacklevel=2)
    empty = sum(s.empty_masks_skipped for s in summary.splits)
    if empty:
        warnings.warn(f"{data}: skipped {empty} object(s) whose mask is empty (no polygon to write)", stacklevel=2)
    return summary
