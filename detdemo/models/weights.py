"""Pretrained weights through torchvision's own weights API and cache, with a useful offline failure.

``torchvision`` downloads ``WeightsEnum.url`` into ``$TORCH_HOME/hub/checkpoints/<file name>`` and reads it from
there afterwards. Offline users get told exactly which file to put where. A local file given instead of "DEFAULT"
is fed through the very same builder path, so the model is made exactly as with downloaded weights (frozen
BatchNorm, frozen early layers).
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import torch
from torchvision.models import WeightsEnum

from detdemo.checkpoint import load_error_reason
from detdemo.errors import CheckpointError, DetDemoError, WeightsUnavailableError


def cache_path(weights: WeightsEnum) -> Path:
    """Where torchvision looks for (and downloads) this weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def resolve_enum(enum_cls: type[WeightsEnum] | None, value: str, what: str, arch: str) -> WeightsEnum:
    """'DEFAULT' or a member name such as 'COCO_V1' -> the enum member."""
    if enum_cls is None:
        raise DetDemoError(
            f"{arch}: torchvision has no {what} weights for this architecture; train from scratch "
            f"(weights=None), start from a detdemo checkpoint, or pass a local state-dict file"
        )
    try:
        return enum_cls[value]
    except KeyError:
        names = ", ".join(["DEFAULT", *enum_cls.__members__])
        raise DetDemoError(f"{arch}: unknown {what} weights {value!r}; choose from {names} or a file") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict (or a detdemo checkpoint's weights) from a file, loaded without unpickling code."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean the same to the user
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({load_error_reason(exc)})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: does not contain a state dict (name -> tensor)")
    return data


@contextlib.contextmanager
def weights_from(weights: WeightsEnum, local_file: Path | None) -> Iterator[None]:
    """Make torchvision's builder read ``local_file`` instead of the URL, or turn download errors into advice."""
    if local_file is not None:
        state = read_state_dict(local_file)
        enum_cls = type(weights)
        original = enum_cls.get_state_dict
        enum_cls.get_state_dict = lambda self, *a, **k: state if self is weights else original(self, *a, **k)
        try:
            yield
        finally:
            enum_cls.get_state_dict = original
        return
    try:
        yield
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        target = cache_path(weights)
        if isinstance(exc, FileNotFoundError) and target.exists():
            raise
        raise WeightsUnavailableError(
            f"could not download {weights} from {weights.url} ({exc}). Offline? Download that file elsewhere "
            f"and put it at {target} (set TORCH_HOME to change the folder), or pass the local file as weights"
        ) from None
    except RuntimeError as exc:
        if "invalid hash" in str(exc) or "PytorchStreamReader" in str(exc) or "zip archive" in str(exc):
            raise CheckpointError(f"{cache_path(weights)}: cached weights file is corrupt ({exc}); delete it "
                                  "and try again") from None
        raise
