"""Fetch and unpack a dataset archive (the official Penn-Fudan zip) safely and atomically.

The archive is streamed to a temporary file, checked to be a zip, and unpacked into a temporary folder beside
the destination that is renamed into place only once complete: an interrupted download never leaves a folder
that looks like a dataset. Members with absolute paths or ``..`` are refused (zip-slip).
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

from tqdm import tqdm

from detdemo.data.pennfudan import IMAGE_DIR, MASK_DIR
from detdemo.errors import DataError

PENNFUDAN_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
# The official archive's checksum could not be confirmed from where detdemo was built (no network); until it is,
# downloads print their MD5 and `--md5` verifies against a value the user trusts.
PENNFUDAN_MD5: str | None = None


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


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _safe_extract(archive: Path, into: Path) -> None:
    """Refuse members that would land outside ``into`` (zip-slip) and symbolic links (a dataset holds none; a
    link followed by a member "under" it is how archives write outside their folder)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = (into / info.filename).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise DataError(f"{archive}: refusing unsafe path {info.filename!r} in archive")
                if _is_symlink(info):
                    raise DataError(f"{archive}: refusing symbolic link {info.filename!r} in archive")
            zf.extractall(into)
    except zipfile.BadZipFile:
        raise DataError(f"{archive}: not a zip archive (corrupt or incomplete download)") from None
    except OSError as exc:  # e.g. a file member under a path another member made a file
        raise DataError(f"{archive}: cannot unpack ({type(exc).__name__}: {exc.strerror or exc})") from None


def verify_md5(archive: Path, md5: str | None) -> str:
    """The archive's MD5; DataError when ``md5`` is given and differs (torchvision's own integrity check)."""
    from torchvision.datasets.utils import calculate_md5, check_integrity

    actual = calculate_md5(str(archive))
    if md5 and not check_integrity(str(archive), md5.lower()):
        raise DataError(f"{archive}: checksum mismatch (MD5 {actual}, expected {md5.lower()}): a corrupt or "
                        "tampered download; nothing was unpacked")
    return actual


def fetch_pennfudan(out: str | Path, url: str = PENNFUDAN_URL, zip_file: str | Path | None = None,
                    timeout: float = 60.0, progress: bool = True, md5: str | None = PENNFUDAN_MD5) -> Path:
    """Download (or take ``zip_file``), verify its MD5 when one is known, and unpack into ``out``; returns the
    dataset root (``out/PennFudanPed``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".download-") as tmp:
        tmp = Path(tmp)
        archive = Path(zip_file) if zip_file else tmp / "archive.zip"
        if zip_file is None:
            _download(url, archive, timeout, progress)
        elif not archive.is_file():
            raise DataError(f"{archive}: zip file not found")
        digest = verify_md5(archive, md5)
        if not md5:
            warnings.warn(f"{archive.name}: MD5 {digest} (no checksum was given to verify it against; pass "
                          "--md5 to pin this download)", stacklevel=2)
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
