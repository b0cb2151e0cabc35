"""What an exported file says about itself: classes, architecture, thresholds, preprocessing, provenance."""

from __future__ import annotations

import json

import torch
import torchvision

from detdemo.models import ModelConfig, get_spec

PREPROCESSING = ("graph input: one RGB image (batch fixed at 1), float32 [3, h, w], already normalised with "
                 "'transform.image_mean'/'image_std' and resized as torchvision's GeneralizedRCNNTransform does with "
                 "'transform' (export.pipeline.preprocess); outputs are in the resized frame, masks are 28x28 "
                 "probabilities: export.pipeline.postprocess rescales boxes and pastes masks")


def build_metadata(cfg: ModelConfig, fmt: str, **extra) -> dict:
    spec = get_spec(cfg.arch)
    meta = {
        "detdemo_export": 1,
        "format": fmt,
        "arch": cfg.arch,
        "family": spec.family,
        "num_classes": cfg.num_classes,
        "class_names": cfg.class_names,
        "model_kwargs": cfg.kwargs,
        "outputs": list(spec.family_info.outputs),
        "preprocessing": PREPROCESSING,
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__)},
    }
    meta.update(extra)
    return meta


def dumps(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)


def stamp_onnx(proto, meta: dict) -> None:
    """Replace an ONNX model's metadata with detdemo's (``metadata_props["detdemo"]``), in place."""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "detdemo", dumps(meta)
