"""Fetch and unpack a dataset archive (the official Penn-Fudan zip) safely and atomically.

The archive is streamed to a temporary file, checked to be a zip, and unpacked into a temporary folder beside
the destination that is renamed into place only once complete: an interrupted download never leaves a folder
that looks like a dataset. Members with absolute paths or ``..`` are refused (zip-slip).
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from detdemo.data.pennfudan import IMAGE_DIR, MASK_DIR
from detdemo.errors import DataError

PENNFUDAN_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"


def _download(url: str, dest: Path, timeout: float, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataError(f"cannot download {url} ({exc}); download it by hand and pass --zip FILE") from None


def _safe_extract(archive: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (into / member).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise DataError(f"{archive}: refusing unsafe path {member!r} in archive")
            zf.extractall(into)
    except zipfile.BadZipFile:
        raise DataError(f"{archive}: not a zip archive (corrupt or incomplete download)") from None


def fetch_pennfudan(out: str | Path, url: str = PENNFUDAN_URL, zip_file: str | Path | None = None,
                    timeout: float = 60.0, progress: bool = True) -> Path:
    """Download (or take ``zip_file``) and unpack into ``out``; returns the dataset root (``out/PennFudanPed``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".download-") as tmp:
        tmp = Path(tmp)
        archive = Path(zip_file) if zip_file else tmp / "archive.zip"
        if zip_file is None:
            _download(url, archive, timeout, progress)
        elif not archive.is_file():
            raise DataError(f"{archive}: zip file not found")
        staging = tmp / "unpacked"
        staging.mkdir()
        _safe_extract(archive, staging)
        roots = [p.parent for p in staging.rglob(IMAGE_DIR) if (p.parent / MASK_DIR).is_dir()]
        if len(roots) != 1:
            raise DataError(f"{archive}: does not contain one Penn-Fudan folder ({IMAGE_DIR}/ and {MASK_DIR}/)")
        final = out / roots[0].name if roots[0] != staging else out / "PennFudanPed"
        if final.exists():
            raise DataError(f"{final}: already exists; remove it or choose another --out")
        shutil.move(str(roots[0]), final)
    return final
