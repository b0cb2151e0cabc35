"""``build_model``: any registered architecture, for any number of classes, from scratch or fine-tuned.

A model is fully described by ``ModelConfig`` (architecture, classes, keyword arguments, and which modules were
frozen when it was made), which is what a checkpoint stores, so ``rebuild`` reproduces the exact module tree
(FrozenBatchNorm where there was one, the same trainable parameters) without any weights download.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detdemo.checkpoint import CheckpointError, is_checkpoint, load_checkpoint
from detdemo.errors import DetDemoError
from detdemo.models.registry import ModelSpec, get_spec
from detdemo.models.weights import resolve_enum, weights_from

# Keyword arguments users may set; everything else a builder takes is fixed by the architecture.
TUNABLE_KWARGS = (
    "min_size", "max_size", "box_score_thresh", "box_nms_thresh", "box_detections_per_img", "score_thresh",
    "nms_thresh", "detections_per_img", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
    "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_batch_size_per_image", "box_batch_size_per_image",
    "topk_candidates", "image_mean", "image_std",
)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's module tree; stored in every checkpoint."""

    arch: str
    num_classes: int  # including background
    class_names: list[str]  # foreground names, label i -> class_names[i - 1]
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_keypoints: int | None = None
    frozen_batchnorm: list[str] = field(default_factory=list)  # module names that are FrozenBatchNorm2d
    frozen_parameters: list[str] = field(default_factory=list)  # parameter names with requires_grad=False
    pretrained: str | None = None  # where the starting weights came from, for the record

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _kwargs_for(spec: ModelSpec, min_size, max_size, extra: dict) -> dict:
    allowed = TUNABLE_KWARGS + spec.options
    unknown = sorted(set(extra) - set(allowed))
    if unknown:
        raise DetDemoError(f"{spec.name}: unsupported model option(s) {unknown}; allowed: {', '.join(allowed)}")
    kwargs = dict(extra)
    if min_size is not None:
        kwargs["min_size"] = min_size
    if max_size is not None:
        kwargs["max_size"] = max_size
    if spec.fixed_size and ({"min_size", "max_size"} & set(kwargs)):
        raise DetDemoError(f"{spec.name}: resizes to a fixed square input; min_size/max_size do not apply")
    return kwargs


def _backbone_arg(spec: ModelSpec, weights_backbone):
    if weights_backbone is None:
        return None, None
    local = _as_file(weights_backbone)
    if local is not None:
        return resolve_enum(spec.backbone_weights, "DEFAULT", "backbone", spec.name), local
    return resolve_enum(spec.backbone_weights, str(weights_backbone), "backbone", spec.name), None


def _as_file(value: str | Path | None) -> Path | None:
    """A weights argument that names a file rather than an enum member ('DEFAULT', 'COCO_V1')."""
    if value is None:
        return None
    if isinstance(value, Path) or any(c in value for c in "/\\.") or Path(value).exists():
        return Path(value)
    return None


def describe_frozen(model: nn.Module) -> tuple[list[str], list[str]]:
    bn = [n for n, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    params = [n for n, p in model.named_parameters() if not p.requires_grad]
    return bn, params


def build_model(
    arch: str,
    num_classes: int,
    class_names: list[str] | None = None,
    *,
    weights: str | Path | None = None,
    weights_backbone: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    num_keypoints: int | None = None,
    **kwargs: Any,
) -> tuple[nn.Module, ModelConfig]:
    """Make ``arch`` for ``num_classes`` (background included).

    ``weights``: None (from scratch), "DEFAULT"/an enum name (COCO weights through torchvision's cache), or a
    file: a torchvision-format state dict of the COCO model, or a detdemo checkpoint. With weights, every
    class-dependent head is replaced for ``num_classes``. ``weights_backbone`` likewise for ImageNet backbones.
    """
    spec = get_spec(arch)
    if num_classes < 2:
        raise DetDemoError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
    class_names = list(class_names) if class_names else [f"class_{i}" for i in range(1, num_classes)]
    if len(class_names) != num_classes - 1:
        raise DetDemoError(f"{len(class_names)} class names given for num_classes={num_classes} (expects "
                           f"num_classes - 1, background excluded)")
    kw = _kwargs_for(spec, min_size, max_size, kwargs)
    if spec.keypoints:
        kw["num_keypoints"] = num_keypoints or 17
    elif num_keypoints is not None:
        raise DetDemoError(f"{arch}: num_keypoints only applies to keypoint models")

    weights_file = _as_file(weights)
    if weights_file is not None and is_checkpoint(weights_file):
        return _from_checkpoint(Path(weights), spec, num_classes, class_names, kw, num_keypoints)

    bb_member, bb_file = _backbone_arg(spec, weights_backbone)
    with warnings.catch_warnings():
        # torchvision warns that trainable_backbone_layers is ignored without weights; we document that instead
        warnings.filterwarnings("ignore", message=".*trainable_backbone_layers.*")
        if weights is None:
            with weights_from(bb_member, bb_file) if bb_member else contextlib.nullcontext():
                model = spec.builder(weights=None, weights_backbone=bb_member, num_classes=num_classes,
                                     trainable_backbone_layers=trainable_backbone_layers, **kw)
            source = f"backbone {bb_file or bb_member}" if bb_member else None
        else:
            local = weights_file
            member = resolve_enum(spec.coco_weights, "DEFAULT" if local else str(weights), "COCO", spec.name)
            with weights_from(member, local):
                model = spec.builder(weights=member, weights_backbone=None,
                                     trainable_backbone_layers=trainable_backbone_layers,
                                     **{k: v for k, v in kw.items() if k != "num_keypoints"})
            spec.family_info.replace_heads(model, num_classes, kw.get("num_keypoints"))
            source = str(local or member)
    bn, frozen = describe_frozen(model)
    cfg = ModelConfig(arch, num_classes, class_names, {k: v for k, v in kw.items() if k != "num_keypoints"},
                      kw.get("num_keypoints"), bn, frozen, source)
    return model, cfg


def _from_checkpoint(path: Path, spec: ModelSpec, num_classes: int, class_names: list[str], kw: dict,
                     num_keypoints: int | None) -> tuple[nn.Module, ModelConfig]:
    """Fine-tune from one of our own checkpoints: same architecture, heads replaced for the new classes."""
    model, old = load_model(path)
    if old.arch != spec.name:
        raise DetDemoError(f"{path}: is a {old.arch} checkpoint, cannot start {spec.name} from it")
    if old.num_classes != num_classes or old.class_names != class_names:
        spec.family_info.replace_heads(model, num_classes, num_keypoints)
    kwargs = {**old.kwargs, **{k: v for k, v in kw.items() if k != "num_keypoints"}}
    _apply_kwargs(model, spec, kwargs)
    bn, frozen = describe_frozen(model)
    return model, ModelConfig(spec.name, num_classes, class_names, kwargs, old.num_keypoints, bn, frozen, str(path))


def _apply_kwargs(model: nn.Module, spec: ModelSpec, kwargs: dict) -> None:
    """Change inference-time settings on a built model (sizes, thresholds), as the builders would have set them."""
    t = getattr(model, "transform", None)
    if t is not None and "min_size" in kwargs:
        t.min_size = tuple(kwargs["min_size"]) if isinstance(kwargs["min_size"], list | tuple) \
            else (kwargs["min_size"],)
    if t is not None and "max_size" in kwargs:
        t.max_size = kwargs["max_size"]
    spec.family_info.apply_thresholds(model, kwargs)


def rebuild(cfg: ModelConfig) -> nn.Module:
    """The module tree ``cfg`` describes, with fresh weights and no downloads (a checkpoint fills them)."""
    spec = get_spec(cfg.arch)
    kw = dict(cfg.kwargs)
    if spec.keypoints:
        kw["num_keypoints"] = cfg.num_keypoints or 17
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trainable_backbone_layers.*")
        model = spec.builder(weights=None, weights_backbone=None, num_classes=cfg.num_classes, **kw)
    _freeze_like(model, cfg)
    return model


def _freeze_like(model: nn.Module, cfg: ModelConfig) -> None:
    for name in cfg.frozen_batchnorm:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        bn = getattr(parent, child)
        if isinstance(bn, nn.BatchNorm2d):
            setattr(parent, child, FrozenBatchNorm2d(bn.num_features, eps=bn.eps))
    frozen = set(cfg.frozen_parameters)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)


def model_from_checkpoint(data: dict) -> tuple[nn.Module, ModelConfig]:
    """The model a loaded checkpoint dictionary describes, with its weights, in eval mode."""
    where = data.get("path", "checkpoint")
    try:
        cfg = ModelConfig.from_dict(data["model_config"])
        model = rebuild(cfg)
    except (TypeError, KeyError, ValueError, DetDemoError) as exc:
        raise CheckpointError(f"{where}: its model description cannot be rebuilt ({exc})") from None
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"{where}: weights do not fit {cfg.arch} ({' '.join(first)})") from None
    return model.eval(), cfg


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode. No flags to repeat."""
    model, cfg = model_from_checkpoint(load_checkpoint(path))
    return model.to(device), cfg
