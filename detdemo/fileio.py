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
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp")


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


class JsonArrayStream:
    """One JSON object whose ``key`` array is written an item at a time (see ``json_array_stream``)."""

    def __init__(self, file, key: str) -> None:
        self._file, self._key, self._count = file, key, 0
        self.tail: dict[str, Any] = {}  # keys written after the array, when the stream closes

    def append(self, item: Any) -> None:
        self._file.write(("\n" if self._count == 0 else ",\n") + json.dumps(item))
        self._count += 1

    def __len__(self) -> int:
        return self._count


@contextlib.contextmanager
def json_array_stream(path: str | Path, head: dict[str, Any], key: str) -> Iterator[JsonArrayStream]:
    """``{**head, key: [items...], **tail}`` written as the items come, so a long video's per-frame records are
    never all held in memory; the file appears (atomically) only when the block ends without an error."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        opening = json.dumps(head, indent=1)[:-1].rstrip()
        f.write(opening + ("," if head else "") + f"\n {json.dumps(key)}: [")
        stream = JsonArrayStream(f, key)
        yield stream
        f.write("\n ]" + "".join(f",\n {json.dumps(k)}: {json.dumps(v)}" for k, v in stream.tail.items()) + "\n}\n")
        f.flush()


def require_free_space(folder: str | Path, needed_bytes: int, what: str) -> None:
    """Refuse before writing rather than half way: on a full disk torch.jit.save/load end the whole process with a
    C++ terminate (pytorch/pytorch#156955) instead of raising, so no clean-up would run and a temp file would stay."""
    from detdemo.errors import DetDemoError

    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise DetDemoError(f"{folder}: not enough free disk space for {what}: about {needed_bytes / 1e6:,.0f} MB "
                           f"needed, {free / 1e6:,.0f} MB free")


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
