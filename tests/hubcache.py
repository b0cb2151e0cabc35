"""A Hugging Face Hub cache laid out by hand, as ``huggingface_hub`` leaves it after a download, for offline tests.

Layout: ``<cache>/models--USER--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
refs/main}``. Nothing is fetched: tests set ``HF_HUB_CACHE`` to the cache and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def populate(cache: Path, repo_id: str, folder: Path, commit: str | None = None, ref: str = "main") -> str:
    """Put every file of ``folder`` into the cache as repo ``repo_id`` at ``commit``; returns the commit id."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    commit = commit or hashlib.sha1("".join(str(p.relative_to(folder)) for p in files).encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    for file in files:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = blobs / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(file.read_bytes())
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit
