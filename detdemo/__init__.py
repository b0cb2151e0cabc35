"""detdemo: fine-tune torchvision detectors on your own images, export them with verified parity, demo them."""

from detdemo.checkpoint import load_checkpoint, save_checkpoint
from detdemo.models import ModelConfig, build_model, list_models, load_model
from detdemo.version import __version__

__all__ = ["__version__", "build_model", "list_models", "load_model", "load_checkpoint", "save_checkpoint",
           "ModelConfig"]
