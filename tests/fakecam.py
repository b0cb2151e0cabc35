"""A clip for chromium's fake camera (``--use-file-for-fake-video-capture``): YUV4MPEG2, 4:2:0, written with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _yuv420(rgb: np.ndarray) -> bytes:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = (b - y) * 0.564 + 128
    v = (r - y) * 0.713 + 128
    sub = (slice(None, None, 2), slice(None, None, 2))
    planes = [y, u[sub], v[sub]]
    return b"".join(np.clip(p, 0, 255).astype(np.uint8).tobytes() for p in planes)


def write_y4m(path: Path, images: list[Path], size: tuple[int, int] = (640, 480), fps: int = 10,
              seconds_per_image: float = 1.0) -> Path:
    """Each image letterboxed to ``size`` and shown for ``seconds_per_image``, sliding 2 px a frame so that no two
    frames are the same (as from a real camera); chromium loops the clip."""
    width, height = size
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for image in images:
            canvas = Image.new("RGB", size, (255, 255, 255))
            picture = Image.open(image).convert("RGB")
            picture.thumbnail(size)
            canvas.paste(picture, ((width - picture.width) // 2, (height - picture.height) // 2))
            pixels = np.asarray(canvas)
            for k in range(max(1, round(fps * seconds_per_image))):
                f.write(b"FRAME\n" + _yuv420(np.roll(pixels, 2 * k, axis=1)))
    return path
