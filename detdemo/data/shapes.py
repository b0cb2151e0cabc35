"""A synthetic instance-segmentation dataset written to disk in COCO format.

It is what makes the project testable and demonstrable without downloads: exact masks, known classes, and
enough nuisance (textured noisy backgrounds, overlaps and occlusion, varied sizes and aspect ratios) that a
detector has to learn shape rather than colour. Every image is drawn from its own seed, ``(seed, split, index)``,
so a dataset is reproducible image by image regardless of how many images are asked for.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

from detdemo.errors import DetDemoError
from detdemo.fileio import atomic_path, write_text


def _regular(n: int, phase: float = 0.0):
    return lambda t: [(math.cos(phase + t + 2 * math.pi * k / n), math.sin(phase + t + 2 * math.pi * k / n))
                      for k in range(n)]


def _star(t: float):
    return [((1.0 if k % 2 == 0 else 0.45) * math.cos(t + math.pi * k / 5),
             (1.0 if k % 2 == 0 else 0.45) * math.sin(t + math.pi * k / 5)) for k in range(10)]


def _cross(t: float):
    a, b = 1.0, 0.35
    pts = [(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b), (-a, b), (-b, b),
           (-b, a)]
    c, s = math.cos(t), math.sin(t)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


def _ellipse(t: float):
    c, s = math.cos(t), math.sin(t)
    pts = [(math.cos(2 * math.pi * k / 40), 0.55 * math.sin(2 * math.pi * k / 40)) for k in range(40)]
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


# Unit outlines (radius 1, rotated by t). Rotation-symmetric shapes ignore t only in appearance.
SHAPES = {
    "circle": lambda t: _regular(48)(0.0),
    "square": _regular(4, math.pi / 4),
    "triangle": _regular(3, -math.pi / 2),
    "star": _star,
    "hexagon": _regular(6),
    "cross": _cross,
    "ellipse": _ellipse,
    "diamond": lambda t: [(0.6 * x, y) for x, y in _regular(4)(0.0)],
}
DEFAULT_CLASSES = ("circle", "square", "triangle")
SHAPES_NAME = "detdemo synthetic shapes"  # the COCO info a model trained on them records (detdemo.data.provenance)
SHAPES_LICENSE = {"id": 1, "name": "CC0 1.0 Universal", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}


@dataclass(frozen=True)
class ShapesConfig:
    classes: tuple[str, ...] = DEFAULT_CLASSES
    min_side: int = 224
    max_side: int = 416
    max_objects: int = 6
    min_visible_pixels: int = 40
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown:
            raise DetDemoError(f"unknown shape class(es) {unknown}; available: {', '.join(SHAPES)}")
        if not self.classes:
            raise DetDemoError("at least one shape class is needed")
        if not 16 <= self.min_side <= self.max_side:
            raise DetDemoError(f"image sides must satisfy 16 <= min_side <= max_side, got {self.min_side}, "
                               f"{self.max_side}")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradient + low-frequency blotches + stripes + pixel noise: texture the detector must learn to ignore."""
    base = rng.uniform(40, 215, size=3)
    tilt = rng.uniform(-60, 60, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(ang) * xx / w + np.sin(ang) * yy / h)[..., None]
    img = base + tilt * ramp
    coarse = rng.normal(0, 18, size=(h // 16 + 2, w // 16 + 2, 3))
    img += np.kron(coarse, np.ones((16, 16, 1)))[:h, :w]
    if rng.random() < 0.6:
        period = rng.uniform(6, 30)
        img += (rng.uniform(5, 20) * np.sin(2 * math.pi * (xx * np.cos(ang) - yy * np.sin(ang)) / period))[..., None]
    img += rng.normal(0, rng.uniform(3, 12), size=img.shape)
    return img


def draw_image(rng: np.random.Generator, cfg: ShapesConfig) -> tuple[Image.Image, list[dict]]:
    """One image and its visible instances: ``{"label": class index, "mask": bool HxW}``."""
    h, w = (int(rng.integers(cfg.min_side, cfg.max_side + 1)) for _ in range(2))
    img = _background(rng, h, w)
    instances: list[dict] = []
    for _ in range(int(rng.integers(1, cfg.max_objects + 1))):
        label = int(rng.integers(len(cfg.classes)))
        radius = rng.uniform(0.06, 0.22) * min(h, w)
        cx, cy = rng.uniform(0.05 * w, 0.95 * w), rng.uniform(0.05 * h, 0.95 * h)
        outline = SHAPES[cfg.classes[label]](rng.uniform(0, 2 * math.pi))
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon([(cx + radius * x, cy + radius * y) for x, y in outline], fill=1)
        mask = np.asarray(canvas, dtype=bool)
        colour = rng.uniform(0, 255, size=3)
        shade = rng.uniform(0.8, 1.2) + 0.15 * rng.normal(size=(h, w, 1))
        img[mask] = (colour * shade)[mask]
        for inst in instances:  # later shapes occlude earlier ones
            inst["mask"] &= ~mask
        instances.append({"label": label, "mask": mask})
    img += rng.normal(0, 4, size=img.shape)  # sensor noise over everything, shapes included
    visible = [i for i in instances if i["mask"].sum() >= cfg.min_visible_pixels]
    return Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB"), visible


def _annotation(ann_id: int, image_id: int, inst: dict) -> dict:
    mask = inst["mask"]
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": inst["label"] + 1,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": int(mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
    }


def write_split(out: Path, split: str, count: int, seed: int, cfg: ShapesConfig, progress: bool = True) -> Path:
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    split_key = sum(ord(c) * 31**i for i, c in enumerate(split)) % (2**31)
    images, annotations = [], []
    for i in tqdm(range(count), desc=f"shapes {split}", disable=not progress, unit="img"):
        rng = np.random.default_rng([seed, split_key, i])
        img, instances = draw_image(rng, cfg)
        name = f"{split}_{i:06d}.jpg"
        with atomic_path(image_dir / name) as tmp:
            img.save(tmp, format="JPEG", quality=cfg.jpeg_quality)
        images.append({"id": i + 1, "file_name": name, "width": img.width, "height": img.height,
                       "license": SHAPES_LICENSE["id"]})
        for inst in instances:
            annotations.append(_annotation(len(annotations) + 1, i + 1, inst))
    coco = {
        "info": {"description": SHAPES_NAME, "version": f"{split}, seed {seed}"},
        "licenses": [SHAPES_LICENSE],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(cfg.classes)],
    }
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    path = ann_dir / f"instances_{split}.json"
    return write_text(path, json.dumps(coco))


def generate_shapes(out: str | Path, train: int, val: int, seed: int = 0, cfg: ShapesConfig | None = None,
                    progress: bool = True) -> Path:
    """Write ``out/{train,val}/*.jpg`` and ``out/annotations/instances_{train,val}.json``."""
    cfg = cfg or ShapesConfig()
    if train < 0 or val < 0:
        raise DetDemoError("image counts must be >= 0")
    out = Path(out)
    for split, count in (("train", train), ("val", val)):
        if count:
            write_split(out, split, count, seed, cfg, progress)
    return out


def write_shapes_clip(path: str | Path, *, width: int = 160, height: int = 120, frames: int = 24, fps: int = 10,
                      rotation: int = 0, seed: int = 0) -> list[list[tuple[str, tuple[float, ...]]]]:
    """A short clip of a circle, a square and a triangle gliding across a textured background: what the tests and
    the video benchmark run the bundled shapes model on. ``rotation`` (degrees counter-clockwise) is stored as the
    stream's display matrix, as phones do, while the frames themselves stay ``width`` x ``height``. Returns each
    frame's true ``(class name, XYXY box)`` in the stored (unrotated) frame's pixels."""
    import av

    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    radius = 0.16 * min(width, height)
    starts = [(0.15 * width, 0.28 * height), (0.2 * width, 0.72 * height), (0.6 * width, 0.28 * height)]
    step = 0.25 * width / max(1, frames - 1)  # each shape travels a quarter of the frame, none leaves it
    truth: list[list[tuple[str, tuple[float, ...]]]] = []
    colours = [(230, 60, 50), (40, 90, 220), (250, 210, 40)]
    shades = [rng.uniform(0.8, 1.2) + 0.15 * rng.normal(size=(height, width, 1)) for _ in colours]  # as in training
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            img = background.copy()
            truth.append([])
            for k, (name, (x, y)) in enumerate(zip(DEFAULT_CLASSES, starts)):
                outline = [(x + step * i + radius * u, y + radius * v) for u, v in SHAPES[name](0.3)]
                canvas = Image.new("L", (width, height), 0)
                ImageDraw.Draw(canvas).polygon(outline, fill=1)
                mask = np.asarray(canvas, dtype=bool)
                ys, xs = np.nonzero(mask)
                truth[-1].append((name, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))))
                img[mask] = (np.asarray(colours[k]) * shades[k])[mask]
            frame = (img + rng.normal(0, 4, size=img.shape)).clip(0, 255).astype(np.uint8)  # sensor noise
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return truth
