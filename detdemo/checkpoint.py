"""Self-describing checkpoints: one file holds the weights and everything needed to rebuild the model.

A checkpoint is a ``torch.save`` of plain containers and tensors only, so ``torch.load(weights_only=True)``
reads it without unpickling code. Writes go to a temporary file in the same folder, are fsynced, then renamed
over the target: a crash or ``kill -9`` at any moment leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from detdemo.errors import CheckpointError
from detdemo.models.build import ModelConfig, rebuild

FORMAT = "detdemo-checkpoint"
VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    *,
    train_config: dict | None = None,
    metrics: dict | None = None,
    training_state: dict | None = None,
) -> Path:
    """``training_state`` (optimizer, scheduler, scaler, epoch, RNG) is what ``--resume`` needs; omit it to ship."""
    from detdemo import __version__

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
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The validated checkpoint dictionary; CheckpointError naming the file for anything else."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt", "model.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path}: folder holds no checkpoint (best.pt, last.pt or model.pt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types; all mean "unreadable file" to a user
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text:
            reason = "it contains Python objects that cannot be loaded safely (refusing to unpickle)"
        elif "zip" in text or "PytorchStreamReader" in text or "EOF" in text or "truncated" in text:
            reason = "the file is truncated or corrupt"
        else:
            reason = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        raise CheckpointError(f"{path}: cannot read checkpoint: {reason}") from None
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
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def model_from_checkpoint(data: dict) -> tuple[nn.Module, ModelConfig]:
    where = data.get("path", "checkpoint")
    try:
        cfg = ModelConfig.from_dict(data["model_config"])
        model = rebuild(cfg)
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{where}: its model description cannot be rebuilt ({exc})") from None
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"{where}: weights do not fit {cfg.arch} ({' '.join(first)})") from None
    return model.eval(), cfg


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode. No flags to repeat."""
    model, cfg = model_from_checkpoint(load_checkpoint(path))
    return model.to(device), cfg
