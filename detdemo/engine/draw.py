"""Drawing detections with torchvision's own utilities: boxes, semi-transparent masks, ``label: score``."""

from __future__ import annotations

import colorsys
import functools
from pathlib import Path

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks


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
    detections: dict[str, torch.Tensor],
    class_names: list[str],
    *,
    boxes: bool = True,
    masks: bool = True,
    labels: bool = True,
    mask_alpha: float = 0.45,
    mask_threshold: float = 0.5,
) -> torch.Tensor:
    """``image`` uint8 CHW; returns a new uint8 CHW image."""
    out = image
    n = len(detections["boxes"])
    if n == 0:
        return out.clone()
    ids = detections["labels"].tolist()
    colours = [class_colour(i) for i in ids]
    if masks and "masks" in detections:
        m = detections["masks"]
        m = (m[:, 0] if m.dim() == 4 else m) > mask_threshold
        out = draw_segmentation_masks(out, m.cpu(), alpha=mask_alpha, colors=colours)
    if boxes or labels:
        names = [
            f"{class_names[i - 1] if 0 < i <= len(class_names) else i}: {s:.2f}"
            for i, s in zip(ids, detections["scores"].tolist())
        ]
        width = max(1, round(max(image.shape[1:]) / 300))
        font = label_font()
        out = draw_bounding_boxes(out, detections["boxes"].cpu(), labels=names if labels else None,
                                  colors=colours, width=width if boxes else 0, font=font,
                                  font_size=max(10, round(max(image.shape[1:]) / 45)) if font else None)
    return out


def to_pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
