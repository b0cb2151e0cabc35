"""detdemo: fine-tune torchvision detectors on your own images, export them with verified parity, demo them."""

__version__ = "0.1.0"

from detdemo.checkpoint import load_checkpoint, load_model, save_checkpoint  # noqa: E402
from detdemo.models import ModelConfig, build_model, list_models  # noqa: E402

__all__ = ["__version__", "build_model", "list_models", "load_model", "load_checkpoint", "save_checkpoint",
           "ModelConfig"]
