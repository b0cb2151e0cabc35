"""Every file detdemo writes goes through here: a temporary file in the target's folder, fsynced, then renamed.

A crash or ``kill -9`` at any moment leaves either the previous file or the new one, never half of one. Temporary
files are named ``.<name>.<random>.tmp`` so that ``remove_stale_temps`` can clean those of a killed run without
ever touching a real output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")  # preferred first


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would have given; mkstemp's 0600 would hide outputs from other users


def temp_path_for(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (by any library); it replaces ``path`` on success.

    For writers that want a file name rather than a handle (``torch.jit.save``, ``onnx.save``, ``PIL.Image.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = True) -> Path:
    """``write(file_object)`` fills the new content; ``path`` is replaced only once it is complete and on disk."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
        write(f)
        f.flush()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_torch(path: str | Path, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temporary files a killed writer left in ``folder``; returns how many."""
    removed = 0
    for stale in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed += 1
    return removed


def list_images(path: str | Path) -> list[Path]:
    """An image file, or the images in a folder (by extension), sorted; DataError when there are none."""
    from detdemo.errors import DataError

    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: input not found")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder")
    return images
