"""Self-describing checkpoints: one file holds the weights and everything needed to rebuild the model.

A checkpoint is a ``torch.save`` of plain containers and tensors only, so ``torch.load(weights_only=True)``
reads it without unpickling code. Writes go through ``detdemo.fileio`` (temporary file, fsync, rename): a crash
or ``kill -9`` at any moment leaves either the old file or the new one, never half.

This module knows the file format only; ``detdemo.models.build`` turns a loaded checkpoint into a model.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from detdemo.errors import CheckpointError
from detdemo.fileio import write_torch
from detdemo.version import __version__

FORMAT = "detdemo-checkpoint"
VERSION = 1
BEST, LAST = "best.pt", "last.pt"  # a training run folder's checkpoints
RUN_CHECKPOINTS = (BEST, LAST)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Any,
    *,
    train_config: dict | None = None,
    metrics: dict | None = None,
    training_state: dict | None = None,
    export_id: str | None = None,
    dataset: dict | None = None,
) -> Path:
    """``config`` is the model's ``ModelConfig``; ``training_state`` (optimizer, scheduler, scaler, epoch, RNG) is
    what ``--resume`` needs: omit it to ship. ``dataset``: what the training data states about itself (its name and
    licence, ``detdemo.data.provenance``), which ``detdemo publish`` describes the model with."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_config": train_config or {},
        "metrics": metrics or {},
        "versions": {  # plain str: TorchVersion objects would not load under weights_only
            "detdemo": __version__,
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
        },
    }
    if training_state is not None:
        payload["training_state"] = training_state
    if dataset:
        payload["dataset"] = dict(dataset)
    if export_id is not None:  # the export folder this copy belongs to (export.exporters)
        payload["export_id"] = export_id
    return write_torch(path, payload)


def resolve_checkpoint_path(path: str | Path, names: tuple[str, ...] = RUN_CHECKPOINTS) -> Path:
    """A checkpoint file, or the best checkpoint of a folder (``names`` in order of preference)."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: folder holds no checkpoint ({' or '.join(names)})")
    return path


def _read(path: Path, map_location, mmap: bool) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises many types; all mean "unreadable file" to a user
        raise CheckpointError(f"{path}: cannot read checkpoint: {load_error_reason(exc)}") from None


def load_error_reason(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words. torch's own text advises retrying with
    ``weights_only=False``, i.e. unpickling whatever the file holds: advice we must never pass on."""
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text or "Weights only load failed" in text:
        return "it contains Python objects that cannot be loaded safely (refusing to unpickle)"
    if "zip" in text or "PytorchStreamReader" in text or "EOF" in text or "truncated" in text:
        return "the file is truncated or corrupt"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """The validated checkpoint dictionary; CheckpointError naming the file for anything else.

    ``mmap=True`` maps the tensors instead of reading them: cheap when only the description is needed."""
    path = resolve_checkpoint_path(path)
    data = _read(path, map_location, mmap)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        hint = ""
        if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
            hint = " It looks like a plain state dict: pass it as --weights to a model builder instead."
        raise CheckpointError(f"{path}: not a detdemo checkpoint.{hint}")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer detdemo (format version {data['version']})")
    for key in ("model_config", "state_dict"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint is missing its {key!r} section")
    data["path"] = str(path)
    return data


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a detdemo checkpoint, from its description alone (tensors are mapped, not read)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        load_checkpoint(path, mmap=True)
    except CheckpointError:
        return False
    return True
