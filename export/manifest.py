"""An export folder's manifest (``export.json``): reading it, and the file names it gives.

Kept apart from the runtimes so that everything reading manifests (the runtimes, Hub fetching, publishing) shares
one reader and one check that a listed name stays inside its folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from detdemo.errors import DetDemoError
from export.formats import FORMATS, MANIFEST


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DetDemoError(f"{path}: unreadable export manifest ({exc}); re-run `detdemo export`") from None


def member(folder: Path, name: object) -> Path:
    """``folder / name`` for a file name a manifest gives, refusing any name that would leave the folder (absolute,
    ``..``, a drive or a backslash): a downloaded repo's manifest is a stranger's text."""
    text = str(name)
    parts = text.split("/")
    if (not isinstance(name, str) or not text or text.startswith("/") or "\\" in text or ":" in text
            or any(p in ("", ".", "..") for p in parts)):
        raise DetDemoError(f"{folder / MANIFEST}: refusing file name {text!r} (it must stay inside {folder.name})")
    return folder / text


def verified_of(manifest: dict) -> dict:
    """The manifest's verified figures by format. Figures recorded under a file's format at another format's
    precision are that format's: before OpenVINO's float IR became two choices, "openvino" ran bf16 on CPUs with
    it, so an old folder's bf16 verdict is the openvino-bf16 choice's (and its fp32 one stays openvino's)."""
    verified = dict(manifest.get("verified") or {})
    for fmt in FORMATS.values():
        base = verified.get(fmt.runs) if fmt.runs else None
        if (base and fmt.name not in verified and base.get("precision") == fmt.precision
                and fmt.precision != FORMATS[fmt.runs].precision):
            verified[fmt.name] = verified.pop(fmt.runs)
    return verified
