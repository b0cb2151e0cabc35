"""What one request does, without any Gradio: decode, scale, detect, draw, tabulate, time each stage.

Kept free of UI code so it is tested directly and reused by the benchmark. Every user-facing failure is a
``DetDemoError`` with a message meant for the page; the UI layer turns it into ``gr.Error``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from detdemo.app.catalogue import BACKEND_LABELS, Catalogue
from detdemo.data.images import open_image
from detdemo.engine.draw import draw_detections, image_to_tensor, to_pil
from detdemo.errors import DetDemoError

# Larger uploads are scaled down before inference: every detector here resizes to at most 1333 px anyway, and
# full-resolution masks of a 24-Mpx photo would need gigabytes (N x H x W floats). Boxes are mapped back.
MAX_INFERENCE_SIDE = 1600
TABLE_COLUMNS = ["#", "label", "score", "x1", "y1", "x2", "y2", "mask px"]
TIMING_COLUMNS = ["stage", "ms"]


@dataclass
class PredictRequest:
    image_path: str | Path | Image.Image | None  # a file, or an image decoded from a data URL
    model: str
    backend: str
    score_threshold: float = 0.5
    boxes: bool = True
    masks: bool = True
    labels: bool = True


@dataclass
class PredictResult:
    image: Image.Image  # annotated, at inference size
    rows: list[list]  # TABLE_COLUMNS; boxes in the uploaded image's pixels
    timings: list[list]  # TIMING_COLUMNS
    summary: str
    scale: float = 1.0  # inference size / uploaded size
    extras: dict = field(default_factory=dict)


def _decode(path: str | Path | Image.Image | None) -> Image.Image:
    if isinstance(path, Image.Image):  # a data URL, already decoded by detdemo's decoder (app.upload)
        return path
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


def _rows(det, scale: float) -> list[list]:
    names = det.names()
    boxes = det.boxes / scale
    areas = det.mask_areas()
    if areas is not None:
        areas = areas / (scale * scale)
    return [[i + 1, names[i], round(float(det.scores[i]), 3), *[round(float(v), 1) for v in boxes[i]],
             int(round(float(areas[i]))) if areas is not None else None] for i in range(len(det))]


def run_prediction(catalogue: Catalogue, request: PredictRequest) -> PredictResult:
    if not 0.0 <= float(request.score_threshold) <= 1.0:
        raise DetDemoError(f"score threshold must be between 0 and 1, got {request.score_threshold}")
    predictor = catalogue.predictor(request.model, request.backend)  # fails early on a bad model/backend
    stages: dict[str, float] = {}
    start = time.perf_counter()
    image = _decode(request.image_path)
    stages["decode"] = time.perf_counter() - start
    t = time.perf_counter()
    small, scale = _scale_down(image)
    if scale != 1.0:
        stages["scale down"] = time.perf_counter() - t
    inner: dict[str, float] = {}
    det = predictor.predict(small, timings=inner, score_threshold=float(request.score_threshold))
    stages.update(inner)
    t = time.perf_counter()
    annotated = to_pil(draw_detections(image_to_tensor(small), det, boxes=request.boxes, masks=request.masks,
                                       labels=request.labels))
    stages["draw"] = time.perf_counter() - t
    total = time.perf_counter() - start
    stages["total"] = total
    timings = [[name, round(seconds * 1000, 1)] for name, seconds in stages.items()]
    scaled = f", scaled to {small.width}x{small.height} for inference" if scale != 1.0 else ""
    summary = (f"**{len(det)}** detection{'s' if len(det) != 1 else ''} with score >= {request.score_threshold:.2f} "
               f"from *{request.model}* on {BACKEND_LABELS[request.backend]} in {total * 1000:.0f} ms "
               f"(image {image.width}x{image.height}{scaled}).")
    for note in predictor.notes:  # e.g. ONNX Runtime asked for CUDA and got the CPU: never silent
        summary += f"\n\n**Note:** {note}"
    return PredictResult(annotated, _rows(det, scale), timings, summary, scale)
