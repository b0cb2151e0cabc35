"""What an exported file says about itself: classes, architecture, thresholds, preprocessing, provenance."""

from __future__ import annotations

import json

import torch
import torchvision

from detdemo.models import ModelConfig, get_spec

PREPROCESSING = ("one RGB image, float32 tensor [3, H, W] with values in [0, 1] (batch fixed at 1); the model "
                 "normalises (ImageNet mean/std) and resizes internally, and returns boxes in input pixels")


def build_metadata(cfg: ModelConfig, fmt: str, **extra) -> dict:
    spec = get_spec(cfg.arch)
    from export.wrappers import OUTPUTS

    meta = {
        "detdemo_export": 1,
        "format": fmt,
        "arch": cfg.arch,
        "family": spec.family,
        "num_classes": cfg.num_classes,
        "class_names": cfg.class_names,
        "model_kwargs": cfg.kwargs,
        "outputs": list(OUTPUTS[spec.family]),
        "preprocessing": PREPROCESSING,
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__)},
    }
    meta.update(extra)
    return meta


def dumps(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)
