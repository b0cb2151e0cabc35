"""The registry: a leaf that imports nothing from detdemo but its errors, in the style of timm's and torchvision's.

Builders register themselves where they are defined (``zoo``, ``custom``), and each model family's knowledge
(output names, class-dependent heads, where its thresholds live) is declared once, in ``families``, as a
``Family``. Adding an architecture or a family is a change in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detdemo.errors import DetDemoError


@dataclass(frozen=True)
class Family:
    """What detdemo needs to know about a torchvision detector family, beyond its builders."""

    name: str
    outputs: tuple[str, ...]  # per-image detection keys, in the order exported graphs return them
    replace_heads: Callable[..., Any]  # (model, num_classes, num_keypoints) -> model: the fine-tuning step
    thresholds_on: str = ""  # attribute holding score_thresh / nms_thresh / detections_per_img ("" = the model)
    # builder keyword -> attribute on ``thresholds_on``: lets a built model take new inference settings
    threshold_kwargs: dict[str, str] = field(default_factory=lambda: {
        "score_thresh": "score_thresh", "nms_thresh": "nms_thresh", "detections_per_img": "detections_per_img"})
    # modules (dotted paths) that INT8 quantisation must leave in float: the layers whose outputs are the answers
    # (box regression, class scores, mask logits), where 8-bit steps move boxes and scores visibly
    keep_float: tuple[str, ...] = ()

    @property
    def masks(self) -> bool:
        return "masks" in self.outputs

    @property
    def keypoints(self) -> bool:
        return "keypoints" in self.outputs

    def _owner(self, model: Any) -> Any:
        return getattr(model, self.thresholds_on) if self.thresholds_on else model

    def score_floor(self, model: Any) -> float:
        """The lowest score the model itself keeps (detections below it never leave the graph)."""
        return float(getattr(self._owner(model), "score_thresh", 0.0))

    def detection_cap(self, model: Any) -> int | None:
        return getattr(self._owner(model), "detections_per_img", None)

    def nms_threshold(self, model: Any) -> float | None:
        return getattr(self._owner(model), "nms_thresh", None)

    def apply_thresholds(self, model: Any, kwargs: dict) -> None:
        owner = self._owner(model)
        for key, attr in self.threshold_kwargs.items():
            if key in kwargs and hasattr(owner, attr):
                setattr(owner, attr, kwargs[key])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable  # (*, weights, weights_backbone, num_classes, trainable_backbone_layers, **kw) -> nn.Module
    coco_weights: Any  # a torchvision WeightsEnum class, or None
    backbone_weights: Any
    summary: str
    fixed_size: bool = False  # SSD models resize to a fixed square; min_size/max_size do not apply
    options: tuple[str, ...] = ()  # builder keyword arguments particular to this architecture (head widths)

    @property
    def family_info(self) -> Family:
        return get_family(self.family)

    @property
    def masks(self) -> bool:
        return self.family_info.masks

    @property
    def keypoints(self) -> bool:
        return self.family_info.keypoints


_FAMILIES: dict[str, Family] = {}
_MODELS: dict[str, ModelSpec] = {}


def register_family(family: Family) -> Family:
    _FAMILIES[family.name] = family
    return family


def register(spec: ModelSpec) -> ModelSpec:
    if spec.family not in _FAMILIES:
        raise ValueError(f"{spec.name}: unknown family {spec.family!r}; register the family first")
    _MODELS[spec.name] = spec
    return spec


def get_family(name: str) -> Family:
    return _FAMILIES[name]


def get_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DetDemoError(f"unknown model {name!r}{hint}; `detdemo models` lists them") from None


def list_models() -> list[ModelSpec]:
    return list(_MODELS.values())
