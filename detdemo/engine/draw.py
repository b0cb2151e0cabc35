"""Drawing detections with torchvision's own utilities: boxes, semi-transparent masks, ``label: score``."""

from __future__ import annotations

import colorsys
import functools
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from detdemo.inference.detections import Detections


def class_colour(label: int) -> tuple[int, int, int]:
    """A stable, well-spread colour per class (golden-ratio hue steps)."""
    h = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


@functools.cache
def label_font() -> str | None:
    """A scalable TrueType font for labels: matplotlib (a dependency) ships DejaVu Sans."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return str(path) if path.exists() else None
    except ImportError:
        return None


def draw_detections(
    image: torch.Tensor,
    det: Detections,
    *,
    boxes: bool = True,
    masks: bool = True,
    labels: bool = True,
    mask_alpha: float = 0.45,
    matched: np.ndarray | None = None,
    unmatched_colour: tuple[int, int, int] = (255, 0, 0),
    track_ids: np.ndarray | None = None,
) -> torch.Tensor:
    """``image`` uint8 CHW; returns a new uint8 CHW image. Colours come from the class label (``class_colour``), so
    they are the same on every backend and every frame. ``matched`` (bool per detection), when given, draws
    unmatched detections in ``unmatched_colour`` (the app's compare view). ``track_ids`` (int per detection, -1 for
    a detection no track holds yet), when given, puts ``#id`` beside each tracked detection's label."""
    out = image
    n = len(det)
    if n == 0:
        return out.clone()
    ids = det.labels.tolist()
    colours = [class_colour(i) for i in ids]
    if masks and det.has_masks:
        out = _blend_masks(out, det, colours, mask_alpha)
    if boxes or labels:
        names = [f"{name}: {s:.2f}" for name, s in zip(det.names(), det.scores.tolist())]
        if track_ids is not None:
            names = [f"#{t} {text}" if t >= 0 else text for t, text in zip(track_ids.tolist(), names)]
        width = max(1, round(max(image.shape[1:]) / 300))
        font = label_font()
        font_size = max(10, round(max(image.shape[1:]) / 45)) if font else None
        box_t = torch.from_numpy(np.ascontiguousarray(det.boxes, dtype=np.float32))
        if matched is not None:
            colours = [c if ok else unmatched_colour for c, ok in zip(colours, matched.tolist())]
        out = draw_bounding_boxes(out, box_t, labels=names if labels else None, colors=colours,
                                  width=width if boxes else 0, font=font, font_size=font_size)
    return out


def _blend_masks(image: torch.Tensor, det: Detections, colours: list, alpha: float) -> torch.Tensor:
    """What ``draw_segmentation_masks`` draws (each mask coloured in turn, later ones on top, blended once, in
    float32), with one mask pasted at a time: a 6000x4000 photo with many detections never holds them all.

    Only the pixels under a mask are blended (torchvision blends the whole image, where unmasked pixels come out
    unchanged or, by float rounding, one level darker), in numpy, and only inside the rectangle each mask occupies
    (and, for the blend, the rectangle around them all): on a 640x480 video frame torchvision's whole-image blend in
    torch's thread pool took most of the frame's drawing time on a busy 2-core CPU, and indexing the whole frame by
    each mask most of what remained. The blend gathers only covered pixels (no float copy of the image: a large
    photo's masks may span all of it)."""
    arr = image.permute(1, 2, 0).numpy()
    coloured = arr.copy()
    covered = np.zeros(arr.shape[:2], dtype=bool)
    top, left, bottom, right = arr.shape[0], arr.shape[1], 0, 0
    for i, colour in enumerate(colours):
        mask = det.mask(i)
        rows = np.flatnonzero(mask.any(axis=1))
        if not len(rows):
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        region = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        inside = mask[region]
        np.copyto(coloured[region], np.asarray(colour, dtype=arr.dtype), where=inside[..., None])
        covered[region] |= inside
        top, left = min(top, rows[0]), min(left, cols[0])
        bottom, right = max(bottom, rows[-1] + 1), max(right, cols[-1] + 1)
    out = arr.copy()
    if bottom > top:
        region = np.s_[top:bottom, left:right]
        under = covered[region]
        a = np.float32(alpha)
        out[region][under] = (arr[region][under].astype(np.float32) * (np.float32(1) - a)
                              + coloured[region][under].astype(np.float32) * a).astype(arr.dtype)
    return torch.from_numpy(out).permute(2, 0, 1)


def image_to_tensor(image) -> torch.Tensor:
    """A PIL image or HxWx3 uint8 array as the uint8 CHW tensor torchvision's drawing utilities take."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def to_pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
