"""Portable weights: ``model.safetensors`` plus a ``config.json`` that says how to rebuild the model.

What a Hugging Face model repo holds, and what can be loaded from a stranger: safetensors is raw tensors behind a
JSON header (nothing to unpickle) and the config is JSON, so loading runs no code from the files. The config
carries the architecture, classes and model options (``ModelConfig``), the preprocessing the model applies, and the
record of where it came from (val metrics, versions, the export id of the folder it belongs to).

The file names are module constants here, their one home; torch and safetensors are imported only when used, so
``export.formats`` (a leaf) can name these files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "detdemo-model"
VERSION = 1


def save_portable(folder: str | Path, checkpoint: dict, *, export_id: str | None = None) -> tuple[Path, Path]:
    """Write ``checkpoint`` (a loaded detdemo checkpoint dictionary) as safetensors + config.json in ``folder``."""
    from safetensors.torch import save

    from detdemo.fileio import atomic_write, write_json
    from detdemo.inference.pipeline import transform_spec
    from detdemo.models.build import model_from_checkpoint

    model, cfg = model_from_checkpoint(checkpoint)
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in checkpoint["state_dict"].items()}
    data = save(tensors, metadata={"format": "pt", "detdemo": FORMAT})
    atomic_write(folder / WEIGHTS_FILE, lambda f: f.write(data))
    config = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": cfg.arch,
        "class_names": cfg.class_names,
        "model_config": cfg.to_dict(),
        "preprocessing": transform_spec(model),
        "metrics": checkpoint.get("metrics") or {},
        "versions": checkpoint.get("versions") or {},
    }
    if export_id or checkpoint.get("export_id"):
        config["export_id"] = export_id or checkpoint["export_id"]
    return folder / WEIGHTS_FILE, write_json(folder / CONFIG_FILE, config)


def read_config(weights: str | Path) -> dict:
    """The config.json beside a safetensors file, checked; DetDemoError naming the file otherwise."""
    from detdemo.errors import CheckpointError

    path = Path(weights).parent / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{weights}: safetensors weights need their {CONFIG_FILE} beside them (architecture, "
                              "classes, options); none found")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable model config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("model_config"),
                                                                                          dict):
        raise CheckpointError(f"{path}: not a detdemo model config (expected \"format\": \"{FORMAT}\" and a "
                              "model_config section)")
    if config.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer detdemo (config version {config['version']})")
    return config


def load_portable(weights: str | Path) -> tuple[Any, Any, dict]:
    """(model in eval mode, ModelConfig, config dict) from safetensors + config.json, with no unpickling."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from detdemo.errors import CheckpointError, DetDemoError
    from detdemo.models.build import ModelConfig, rebuild

    weights = Path(weights)
    config = read_config(weights)
    try:
        cfg = ModelConfig.from_dict(config["model_config"])
        model = rebuild(cfg)
    except (TypeError, KeyError, ValueError, DetDemoError) as exc:
        raise CheckpointError(f"{weights.parent / CONFIG_FILE}: its model description cannot be rebuilt "
                              f"({exc})") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read safetensors weights ({str(exc)[:200]})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(str(exc).splitlines()[0:3])
        raise CheckpointError(f"{weights}: weights do not fit {cfg.arch} ({first})") from None
    return model.eval(), cfg, config


def looks_like_safetensors(path: str | Path) -> bool:
    """An 8-byte little-endian header length, then the JSON header itself."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    return 2 <= size <= Path(path).stat().st_size - 8
