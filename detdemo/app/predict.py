"""What one request does, without any Gradio: decode, scale, detect (``detect``), then draw and tabulate
(``render``), timing each stage.

The two halves are separate so that the page redraws from the last raw detections when only the view changes
(threshold, boxes/masks/labels, class filter) without running the model again: ``detect`` keeps every detection the
model returns, ``render`` filters and draws. Kept free of UI code so it is tested directly and reused by the
benchmark. Every user-facing failure is a ``DetDemoError`` with a message meant for the page.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from detdemo.app.catalogue import BACKEND_LABELS, Catalogue
from detdemo.data.images import open_image
from detdemo.engine.draw import draw_detections, image_to_tensor, to_pil
from detdemo.errors import DetDemoError
from detdemo.inference.detections import Detections

# Larger uploads are scaled down before inference: every detector here resizes to at most 1333 px anyway, and
# full-resolution masks of a 24-Mpx photo would need gigabytes (N x H x W floats). Boxes are mapped back.
MAX_INFERENCE_SIDE = 1600
MASK_COLUMN = "mask px"
TABLE_COLUMNS = ["#", "label", "score", "x1", "y1", "x2", "y2", MASK_COLUMN]  # a box-only model's table: no mask px
TIMING_COLUMNS = ["stage", "ms"]


@dataclass
class View:
    """How detections are shown: changing any of these redraws without running the model."""

    score_threshold: float = 0.5
    boxes: bool = True
    masks: bool = True
    labels: bool = True
    classes: list[str] | None = None  # None: every class


@dataclass
class PredictRequest:
    image_path: str | Path | Image.Image | np.ndarray | None  # a file, a decoded data URL, or a webcam frame
    model: str
    backend: str
    score_threshold: float = 0.5
    boxes: bool = True
    masks: bool = True
    labels: bool = True
    classes: list[str] | None = None

    @property
    def view(self) -> View:
        return View(self.score_threshold, self.boxes, self.masks, self.labels, self.classes)


@dataclass
class Raw:
    """One model run: the (scaled) image and every detection the model returned, for redraws."""

    image: Image.Image  # at inference size
    scale: float  # inference size / uploaded size
    original_size: tuple[int, int]  # (width, height) as uploaded
    det: Detections
    model: str
    backend: str
    stages: dict[str, float]
    notes: list[str] = field(default_factory=list)


@dataclass
class PredictResult:
    image: Image.Image  # annotated, at inference size
    rows: list[list]  # ``columns``; boxes in the uploaded image's pixels
    timings: list[list]  # TIMING_COLUMNS
    summary: str
    scale: float = 1.0  # inference size / uploaded size
    shown: Detections | None = None  # the detections drawn (after threshold and class filter)
    extras: dict = field(default_factory=dict)
    columns: list[str] = field(default_factory=lambda: list(TABLE_COLUMNS))  # the rows' headers

    @property
    def table(self) -> dict:
        """The table as Gradio's Dataframe takes it, headers included (a box-only model's has no mask column)."""
        return {"headers": self.columns, "data": self.rows}


def _decode(path) -> Image.Image:
    if isinstance(path, Image.Image):  # a data URL, already decoded by detdemo's decoder (app.upload)
        return path
    if isinstance(path, np.ndarray):  # a webcam frame
        return Image.fromarray(np.ascontiguousarray(path[..., :3]).astype(np.uint8))
    if path is None or str(path) == "":
        raise DetDemoError("No image: upload an image (or pick an example) first.")
    path = Path(path)
    try:
        return open_image(path)
    except DetDemoError as exc:  # name the file as the user knows it, not Gradio's temporary path
        raise DetDemoError(str(exc).replace(str(path), f"'{path.name}'")) from None


def _scale_down(image: Image.Image) -> tuple[Image.Image, float]:
    side = max(image.size)
    if side <= MAX_INFERENCE_SIDE:
        return image, 1.0
    scale = MAX_INFERENCE_SIDE / side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale


def table_columns(masks: bool) -> list[str]:
    return TABLE_COLUMNS if masks else [c for c in TABLE_COLUMNS if c != MASK_COLUMN]


def _rows(det: Detections, scale: float) -> list[list]:
    """One row per detection; the mask area only when the model segments (``det.has_masks``)."""
    names = det.names()
    boxes = det.boxes / scale
    areas = det.mask_areas()
    if areas is not None:
        areas = areas / (scale * scale)
    return [[i + 1, names[i], round(float(det.scores[i]), 3), *[round(float(v), 1) for v in boxes[i]],
             *([int(round(float(areas[i])))] if areas is not None else [])] for i in range(len(det))]


def _check_threshold(value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise DetDemoError(f"score threshold must be between 0 and 1, got {value}")
    return value


def detect(catalogue: Catalogue, image, model: str, backend: str) -> Raw:
    """Run the model once and keep everything it found (the view filters later)."""
    predictor = catalogue.predictor(model, backend)  # fails early on a bad model/backend
    stages: dict[str, float] = {}
    start = time.perf_counter()
    decoded = _decode(image)
    stages["decode"] = time.perf_counter() - start
    t = time.perf_counter()
    small, scale = _scale_down(decoded)
    if scale != 1.0:
        stages["scale down"] = time.perf_counter() - t
    inner: dict[str, float] = {}
    det = predictor.predict(small, timings=inner, score_threshold=0.0)
    catalogue.count_model_call()
    stages.update(inner)
    return Raw(small, scale, decoded.size, det, model, backend, stages, list(predictor.notes))


def shown_detections(raw: Raw, view: View) -> Detections:
    det = raw.det.filter(_check_threshold(view.score_threshold))
    return det if view.classes is None else det.only_classes(view.classes)


def render(raw: Raw, view: View, *, redraw: bool = False) -> PredictResult:
    """Draw and tabulate ``raw`` as ``view`` says; ``redraw`` says the model did not run for this result."""
    t = time.perf_counter()
    det = shown_detections(raw, view)
    annotated = to_pil(draw_detections(image_to_tensor(raw.image), det, boxes=view.boxes, masks=view.masks,
                                       labels=view.labels))
    draw = time.perf_counter() - t
    stages = {"redraw": draw} if redraw else {**raw.stages, "draw": draw}
    total = sum(stages.values())
    stages["total"] = total
    timings = [[name, round(seconds * 1000, 1)] for name, seconds in stages.items()]
    width, height = raw.original_size
    scaled = f", scaled to {raw.image.width}x{raw.image.height} for inference" if raw.scale != 1.0 else ""
    filtered = f" in {len(view.classes)} selected class(es)" if view.classes is not None else ""
    how = (f"redrawn in {total * 1000:.0f} ms without running the model" if redraw else
           f"in {total * 1000:.0f} ms")
    summary = (f"**{len(det)}** detection{'s' if len(det) != 1 else ''} with score >= {view.score_threshold:.2f}"
               f"{filtered} from *{raw.model}* on {BACKEND_LABELS[raw.backend]} {how} "
               f"(image {width}x{height}{scaled}).")
    for note in raw.notes:  # e.g. ONNX Runtime asked for CUDA and got the CPU: never silent
        summary += f"\n\n**Note:** {note}"
    return PredictResult(annotated, _rows(det, raw.scale), timings, summary, raw.scale, det,
                         columns=table_columns(raw.det.has_masks))


def run_prediction(catalogue: Catalogue, request: PredictRequest) -> PredictResult:
    _check_threshold(request.score_threshold)
    return render(detect(catalogue, request.image_path, request.model, request.backend), request.view)


class SessionResults:
    """The last raw result of each browser session, for redraws; at most ``capacity`` sessions are kept (least
    recently used dropped first), so memory is bounded: each entry is one image of at most MAX_INFERENCE_SIDE px
    and the model's low-resolution outputs."""

    def __init__(self, capacity: int = 32, on_evict=None) -> None:
        self.capacity = capacity
        self.on_evict = on_evict  # called with a session's key when it is dropped (its files go too)
        self._items: OrderedDict[str, Raw] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, session: str, raw: Raw) -> None:
        with self._lock:
            self._items[session] = raw
            self._items.move_to_end(session)
            evicted = []
            while len(self._items) > self.capacity:
                evicted.append(self._items.popitem(last=False)[0])
        for key in evicted:
            if self.on_evict is not None:
                self.on_evict(key)

    def get(self, session: str) -> Raw | None:
        with self._lock:
            raw = self._items.get(session)
            if raw is not None:
                self._items.move_to_end(session)
            return raw

    def drop(self, session: str) -> None:
        with self._lock:
            self._items.pop(session, None)

    def __len__(self) -> int:
        return len(self._items)
