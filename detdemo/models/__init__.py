"""The model zoo: every torchvision detector family plus the tutorial's custom-backbone recipes.

Importing the package registers every family and architecture (``families``, ``zoo``, ``custom``); the registry
itself is a leaf, so nothing below imports this package back.
"""

from detdemo.models import custom, families, zoo  # noqa: F401  (registration)
from detdemo.models.build import ModelConfig, build_model, load_model, model_from_checkpoint, rebuild
from detdemo.models.registry import Family, ModelSpec, get_family, get_spec, list_models


def replace_heads(model, arch: str, num_classes: int, num_keypoints: int | None = None):
    """Replace every class-dependent head of ``model`` (an ``arch``) for ``num_classes``: fine-tuning's core."""
    return get_spec(arch).family_info.replace_heads(model, num_classes, num_keypoints)


__all__ = ["Family", "ModelConfig", "ModelSpec", "build_model", "get_family", "get_spec", "list_models",
           "load_model", "model_from_checkpoint", "rebuild", "replace_heads"]
