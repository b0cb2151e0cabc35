"""A registry of detector builders, in the spirit of timm's: one small function per architecture.

Each entry knows its torchvision family (for head replacement and export), whether it predicts masks, its
COCO weights enum if torchvision has one, and the builder that makes it with a given ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torchvision.models import WeightsEnum

from detdemo.errors import DetDemoError

FAMILIES = ("faster_rcnn", "mask_rcnn", "keypoint_rcnn", "retinanet", "fcos", "ssd", "ssdlite")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable  # (*, weights, weights_backbone, num_classes, trainable_backbone_layers, **kw) -> nn.Module
    coco_weights: type[WeightsEnum] | None
    backbone_weights: type[WeightsEnum] | None
    summary: str
    fixed_size: bool = False  # SSD models resize to a fixed square; min_size/max_size do not apply
    options: tuple[str, ...] = ()  # builder keyword arguments particular to this architecture (head widths)

    @property
    def masks(self) -> bool:
        return self.family == "mask_rcnn"

    @property
    def keypoints(self) -> bool:
        return self.family == "keypoint_rcnn"


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.family not in FAMILIES:
        raise ValueError(f"unknown family {spec.family}")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DetDemoError(f"unknown model {name!r}{hint}; `detdemo models` lists them") from None


def list_models() -> list[ModelSpec]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def _ensure_loaded() -> None:
    # Importing the zoo modules registers their builders; done lazily to keep `import detdemo` cheap.
    from detdemo.models import custom, zoo  # noqa: F401
