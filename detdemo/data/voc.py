"""Pascal VOC XML: ``Annotations/*.xml`` beside ``JPEGImages/``, optional ``ImageSets/Main/<split>.txt``.

``difficult`` objects become ``iscrowd=1``: VOC's own protocol ignores them in evaluation, and COCOeval does the
same with crowd regions, so they neither count as misses nor reward detections.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from detdemo.data.base import (
    Annotation,
    DetectionDataset,
    ImageRecord,
    OffImageBoxes,
    Problems,
    degenerate,
    warn_degenerate,
)
from detdemo.errors import DataError
from detdemo.fileio import IMAGE_EXTENSIONS


def parse_voc_xml(path: Path) -> tuple[str, int | None, int | None, list[tuple[str, list[float], int]]]:
    """(filename, height, width, [(class, xyxy, difficult)]) with errors that name the file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}: malformed XML ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read annotation ({exc})") from None
    filename = (root.findtext("filename") or "").strip()
    size = root.find("size")
    height = width = None
    if size is not None:
        try:
            height, width = int(float(size.findtext("height"))), int(float(size.findtext("width")))
        except (TypeError, ValueError):
            height = width = None
        if not height or not width:
            height = width = None
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if not name or bnd is None:
            raise DataError(f"{path}: object #{i} has no <name> or <bndbox>")
        try:
            box = [float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise DataError(f"{path}: object #{i} ({name}) has a missing or non-numeric box coordinate") from None
        difficult = int((obj.findtext("difficult") or "0").strip() or 0)
        objects.append((name, box, difficult))
    return filename, height, width, objects


class VOCDataset(DetectionDataset):
    layout = "voc"

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transforms: Callable | None = None,
        classes: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> None:
        super().__init__(root, transforms)
        ann_dir, img_dir = self.root / "Annotations", self.root / "JPEGImages"
        if not ann_dir.is_dir():
            raise DataError(f"{self.root}: not a VOC folder (missing Annotations/)")
        if ids is None and split is not None:
            split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
            if not split_file.exists():
                raise DataError(f"{self.root}: split file {split_file} not found")
            ids = [s.split()[0] for s in split_file.read_text().splitlines() if s.strip()]
        xml_files = [ann_dir / f"{i}.xml" for i in ids] if ids is not None else sorted(ann_dir.glob("*.xml"))
        if not xml_files:
            raise DataError(f"{ann_dir}: no .xml annotation files")
        parsed, problems = [], Problems(str(ann_dir))
        for xml in xml_files:
            if not xml.exists():
                problems.add(f"{xml.name} is listed in the split but not found")
                continue
            parsed.append((xml, *parse_voc_xml(xml)))
        found = sorted({name for *_, objs in parsed for name, _, _ in objs})
        if classes is None:
            classes = found
        else:
            missing = [n for n in found if n not in classes]
            if missing:
                where = next(x for x, *_, objs in parsed if any(o[0] in missing for o in objs))
                raise DataError(f"{where}: class {missing[0]!r} is not among the given classes {list(classes)}")
        self.classes.extend(classes)
        label = {n: i for i, n in enumerate(self.classes)}
        self.objects: list[Annotation] = []
        dropped, dropped_files = 0, []
        off_image = OffImageBoxes()
        for i, (xml, filename, height, width, objs) in enumerate(parsed):
            image = self._image_path(img_dir, xml, filename)
            if image is None:
                problems.add(f"{xml.name}: its image {filename or xml.stem + '.*'} is not in {img_dir}")
                continue
            boxes = np.array([o[1] for o in objs], np.float32).reshape(-1, 4)
            bad = degenerate(boxes)
            if bad.any():
                dropped += int(bad.sum())
                dropped_files.append(xml.name)
            keep = ~bad
            off_image.add(xml.name, boxes[keep], height, width)
            self.records.append(ImageRecord(image, i, height, width))
            self.objects.append(
                Annotation(
                    boxes=boxes[keep],
                    labels=np.array([label[o[0]] for o in objs], np.int64).reshape(-1)[keep],
                    iscrowd=np.array([o[2] for o in objs], np.int64).reshape(-1)[keep],
                )
            )
        problems.raise_if_any()
        warn_degenerate(str(ann_dir), dropped, dropped_files)
        off_image.warn(str(ann_dir))

    @staticmethod
    def _image_path(img_dir: Path, xml: Path, filename: str) -> Path | None:
        if filename and (img_dir / filename).exists():
            return img_dir / filename
        for ext in IMAGE_EXTENSIONS:  # <filename> is often stale or missing; fall back to the XML's stem
            candidate = img_dir / f"{xml.stem}{ext}"
            if candidate.exists():
                return candidate
        return None

    def num_objects(self) -> int:
        return sum(len(o.boxes) for o in self.objects)

    def annotation(self, idx: int, height: int, width: int) -> Annotation:
        return self.objects[idx]
