"""The model zoo: every torchvision detector family plus the tutorial's custom-backbone recipes."""

from detdemo.models.build import ModelConfig, build_model, rebuild
from detdemo.models.heads import replace_heads
from detdemo.models.registry import ModelSpec, get_spec, list_models

__all__ = ["ModelConfig", "ModelSpec", "build_model", "rebuild", "replace_heads", "get_spec", "list_models"]
