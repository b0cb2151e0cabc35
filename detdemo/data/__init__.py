"""Datasets: every loader returns the tutorial's ``(image, target)`` pairs (see ``base.DetectionDataset``)."""

from detdemo.data.base import BACKGROUND, DetectionDataset
from detdemo.data.coco import CocoDataset
from detdemo.data.layout import LAYOUTS, collate, detect_layout, open_dataset
from detdemo.data.pennfudan import PennFudanDataset
from detdemo.data.shapes import SHAPES, ShapesConfig, generate_shapes
from detdemo.data.transforms import eval_transforms, train_transforms
from detdemo.data.voc import VOCDataset
from detdemo.data.yolo import YoloDataset

__all__ = [
    "BACKGROUND", "DetectionDataset", "CocoDataset", "VOCDataset", "YoloDataset", "PennFudanDataset", "open_dataset",
    "detect_layout", "collate", "LAYOUTS", "SHAPES", "ShapesConfig", "generate_shapes", "train_transforms",
    "eval_transforms",
]
