"""Reading images the way real datasets need: EXIF orientation, odd modes, clear errors.

Photos from phones carry an EXIF rotation that browsers apply and annotation tools (CVAT, Label Studio) honour,
so boxes are drawn on the rotated image; ignoring it silently misaligns every box. Grayscale, palette, RGBA,
CMYK and 16-bit files all turn up in user folders; everything becomes 8-bit RGB here, once.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import tv_tensors

from detdemo.errors import DataError

# Pillow's own guard is a warning at ~89 Mpx and an error at twice that; we make the limit explicit and turn
# both into our error so a decompression bomb is reported, not decoded.
MAX_IMAGE_PIXELS = 100_000_000


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16/32-bit data rather than clipping it."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        lo = arr.min() if arr.size else 0.0
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = ((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent areas of screenshots and logos are meant as background.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """Open, fully decode, orient by EXIF and convert to RGB; raise DataError naming the file on any problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes)")
    return _open(path, str(path))


def decode_bytes(data: bytes, source: str = "image data") -> Image.Image:
    """``open_image`` for bytes in memory (a base64 data URL sent to the app): the same checks and conversions."""
    if not data:
        raise DataError(f"{source}: empty (0 bytes)")
    return _open(io.BytesIO(data), source)


def _open(fp, source: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                return decode_pil(img, source=source)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{source}: image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise DataError(f"{source}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{source}: image is truncated or corrupt ({exc})") from None


def decode_pil(img: Image.Image, source: str = "image") -> Image.Image:
    """Check the size limit, decode every byte now (so truncation is caught here), orient and convert."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise DataError(f"{source}: image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{source}: image is {width}x{height} = {width * height:,} pixels, over the "
            f"{MAX_IMAGE_PIXELS:,}-pixel limit (decompression-bomb guard)"
        )
    img.load()
    img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, read from the header without decoding pixels."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read image header ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
        width, height = height, width
    return height, width


def pil_to_tensor_image(img: Image.Image) -> tv_tensors.Image:
    """uint8 CHW tv_tensors.Image; the float conversion happens in the transform pipeline."""
    arr = np.asarray(img, dtype=np.uint8)
    return tv_tensors.Image(torch.from_numpy(arr.copy()).permute(2, 0, 1))
