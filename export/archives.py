"""Telling zip-archive model files apart, and reading their JSON members, without loading them.

A detdemo checkpoint, a TorchScript file, an ExportedProgram (``.pt2``) and an AOTInductor package are all zip
archives; what they contain differs (``code/``; ``archive_format`` and ``models/*.json``; ``data/aotinductor/``).
Reading a member is plain zip reading: nothing is unpickled, nothing is loaded, so the metadata of a file that runs
code when loaded can be checked first.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from detdemo.errors import DetDemoError


def archive_kind(names: list[str]) -> str | None:
    """"torchscript", "pt2" (an ExportedProgram archive), "aoti" (an AOTInductor package) or None (another zip:
    a checkpoint), from a zip's member names."""
    if any("/code/" in n for n in names):
        return "torchscript"
    if any("/data/aotinductor/" in n for n in names):
        return "aoti"
    if any(n.endswith("/archive_format") for n in names) and any("/models/" in n and n.endswith(".json")
                                                                  for n in names):
        return "pt2"
    return None


def read_zip_json(path: Path, suffix: str) -> dict:
    """The JSON object in the archive member whose name ends with ``suffix`` ({} when there is none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(suffix)), None)
            return json.loads(archive.read(name)) if name else {}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DetDemoError(f"{path}: unreadable archive ({exc})") from None
