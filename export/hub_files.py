"""Models by Hugging Face Hub repo id (``USER/NAME[@REVISION]``), fetched through ``huggingface_hub`` and its cache.

Only what the asked-for backends read is downloaded: the JSON first (the manifest and the model config), then the
files the manifest names for those backends, with their companions. Without a backend, a repo serves PyTorch from
safetensors when it has them, else its ONNX model. The formats whose loading runs code from the file
(``Backend.unsafe``: TorchScript, the ExportedProgram ``.pt2``, the AOTInductor package; docs/export.md) are
fetched only when their backend is asked for by name, and no pickled checkpoint is ever read (a repo's ``model.pt``
is never fetched). Every file name a manifest gives is checked to stay inside the snapshot folder.

``HF_HUB_OFFLINE=1`` serves from the cache; ``HF_HOME``/``HF_HUB_CACHE`` say where it is; ``HF_TOKEN`` or a saved
login opens private repos.
"""

from __future__ import annotations

import re
from pathlib import Path

from detdemo.errors import DetDemoError
from detdemo.models.portable import CONFIG_FILE, WEIGHTS_FILE
from export.formats import BACKENDS, FORMATS, MANIFEST, companions, format_backend
from export.manifest import member, read_manifest

REPO_REFERENCE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[\w./-]+))?$")
METADATA = [MANIFEST, CONFIG_FILE]
SAFE_DEFAULT = ("pytorch", "onnxruntime")  # what a repo serves when no backend is named, in order
SAFE_BACKENDS = tuple(name for name, b in BACKENDS.items() if not b.unsafe)  # loading them runs no code from a file


def hub_backends(asked: str | None) -> set[str]:
    """What a Hub model is served with when every safe backend is wanted (the app): the safe ones, plus a backend
    that runs code from its file only when ``asked`` names it."""
    return set(SAFE_BACKENDS) | ({asked} if asked in BACKENDS and BACKENDS[asked].unsafe else set())


def not_fetched_reason(fmt: str) -> str:
    """Why a file of a Hub repo was not fetched."""
    backend = format_backend(fmt)
    return f"not fetched from the Hub unless asked for (--backend {backend}): loading it runs code from the file"


def is_repo_reference(text: str) -> bool:
    return REPO_REFERENCE.match(text) is not None and ".." not in text


def parse_reference(text: str) -> tuple[str, str | None]:
    """("user/name", revision or None)."""
    match = REPO_REFERENCE.match(text)
    if match is None or ".." in text:
        raise DetDemoError(f"{text!r} is not a Hugging Face Hub model repo id (USER/NAME or USER/NAME@REVISION)")
    return match["repo"], match["revision"]


def _snapshot(repo: str, revision: str | None, patterns: list[str], reference: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
    except RevisionNotFoundError:
        raise DetDemoError(f"{reference}: the Hub repo {repo} has no revision {revision!r}") from None
    except GatedRepoError:
        raise DetDemoError(f"{reference}: the Hub repo {repo} is gated: accept its terms on the Hub and log in "
                           "(HF_TOKEN or `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise DetDemoError(f"{reference}: no such local file or folder, and no Hugging Face Hub model repo {repo} "
                           "(or it is private: set HF_TOKEN or run `hf auth login`)") from None
    except LocalEntryNotFoundError as exc:
        offline = "HF_HUB_OFFLINE" in str(exc) or "outgoing traffic" in str(exc).lower()
        why = ("offline (HF_HUB_OFFLINE=1) and the Hub cache holds no copy of it" if offline else
               "the Hub cannot be reached and the Hub cache holds no copy of it")
        raise DetDemoError(f"{reference}: no such local file or folder; as a Hub model repo: {why} (download it "
                           "once online, or point HF_HUB_CACHE at a cache that has it)") from None
    except HfHubHTTPError as exc:
        raise DetDemoError(f"{reference}: the Hub refused the download ({str(exc).splitlines()[0][:200]})") from None
    except OSError as exc:
        raise DetDemoError(f"{reference}: cannot download from the Hub ({exc})") from None


def _servable_file(fmt: str, name: str) -> bool:
    """Never a pickle: the eager reference only as safetensors; otherwise a format of ours."""
    return name == WEIGHTS_FILE if fmt == "eager" else fmt in FORMATS


def _names_for(manifest: dict | None, config_present: bool, backends: set[str] | None, folder: Path) -> list[str]:
    """The files to fetch for ``backends`` (None: the first of SAFE_DEFAULT the repo has), with companions."""

    listed = dict((manifest or {}).get("files") or {})
    if not listed and config_present:
        listed = {"eager": WEIGHTS_FILE}
    for name in listed.values():
        member(folder, name)  # a name that would leave the snapshot is refused before anything is fetched
    by_backend: dict[str, list[str]] = {}
    for fmt, name in listed.items():
        if _servable_file(fmt, name):
            by_backend.setdefault(format_backend(fmt), []).append(name)
    if not by_backend and (backends is None or "onnxruntime" in backends):
        return ["*.onnx"]  # a repo holding only an ONNX file: ours carry their metadata inside
    if backends is None:
        chosen = next((b for b in SAFE_DEFAULT if b in by_backend), None)
        if chosen is None:
            raise DetDemoError(f"the Hub repo holds neither safetensors weights nor an ONNX model (it has "
                               f"{', '.join(listed.values())}); name a backend (--backend) to use one of those")
        backends = {chosen}
    names = [n for b in sorted(backends) for n in by_backend.get(b, [])]
    if not names:
        wanted = ", ".join(BACKENDS[b].label for b in sorted(backends) if b in BACKENDS)
        raise DetDemoError(f"the Hub repo has no file for {wanted} (it has {', '.join(listed.values()) or 'none'})")
    return [m for n in names for m in (n, *companions(n))]


def servable(files: dict[str, Path], backends: set[str] | None) -> dict[str, Path]:
    """Of a snapshot's files (format -> path), those a Hub model may be served from: never a pickled checkpoint,
    an unsafe format only when its backend is asked for by name, and with no backend named the safe default's
    (whatever else an earlier download left in the cache)."""
    allowed = set(SAFE_DEFAULT) if backends is None else backends
    return {fmt: path for fmt, path in files.items()
            if _servable_file(fmt, path.name) and format_backend(fmt) in allowed}


def fetch_model(reference: str, backends: set[str] | None = None, extras: list[str] | None = None) -> Path:
    """The local snapshot folder of a Hub model repo, holding at least the files ``backends`` need (and whatever
    of ``extras``, glob patterns such as ``examples/*``, the repo has); for a repo holding only an ONNX file, that
    file."""
    repo, revision = parse_reference(reference)
    folder = _snapshot(repo, revision, METADATA, reference)
    manifest = read_manifest(folder)
    try:
        names = _names_for(manifest, (folder / CONFIG_FILE).is_file(), backends, folder)
    except DetDemoError as exc:
        raise DetDemoError(f"{reference}: {exc}") from None
    folder = _snapshot(repo, revision, names + list(extras or []), reference)
    if names == ["*.onnx"]:
        onnx = sorted(folder.glob("*.onnx"))
        if not onnx:
            raise DetDemoError(f"{reference}: the Hub repo holds no detdemo manifest, config.json or ONNX model")
        preferred = folder / FORMATS["onnx"].file
        return preferred if preferred.is_file() else onnx[0]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DetDemoError(f"{reference}: {', '.join(missing)} not in the downloaded copy (offline with an incomplete "
                           "cache, or the repo changed): download it again online")
    return folder
