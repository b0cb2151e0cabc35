"""Replace every class-dependent head with a fresh one for ``num_classes``: the core of fine-tuning.

Each family keeps its head's hyper-parameters (input channels, anchors per location, norm layer) so that only
the output size changes; everything learned before the last layers is kept.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.fcos import FCOSClassificationHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection.ssd import SSD, SSDClassificationHead
from torchvision.models.detection.ssdlite import SSDLiteClassificationHead


def _uses_groupnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.GroupNorm) for m in module.modules())


def replace_heads(model: nn.Module, num_classes: int, num_keypoints: int | None = None) -> nn.Module:
    """In place; returns the model. ``num_keypoints`` replaces the keypoint predictor when it differs."""
    if isinstance(model, FasterRCNN):  # also Mask R-CNN and Keypoint R-CNN
        heads = model.roi_heads
        heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, num_classes)
        if isinstance(model, MaskRCNN):
            old = heads.mask_predictor
            heads.mask_predictor = MaskRCNNPredictor(old.conv5_mask.in_channels, old.conv5_mask.out_channels,
                                                     num_classes)
        if isinstance(model, KeypointRCNN) and num_keypoints is not None:
            old = heads.keypoint_predictor
            if old.kps_score_lowres.out_channels != num_keypoints:
                heads.keypoint_predictor = KeypointRCNNPredictor(old.kps_score_lowres.in_channels, num_keypoints)
    elif isinstance(model, RetinaNet):
        old = model.head.classification_head
        norm = partial(nn.GroupNorm, 32) if _uses_groupnorm(old) else None
        model.head.classification_head = RetinaNetClassificationHead(
            old.conv[0][0].in_channels, old.num_anchors, num_classes, norm_layer=norm
        )
    elif isinstance(model, FCOS):
        old = model.head.classification_head
        model.head.classification_head = FCOSClassificationHead(
            old.conv[0].in_channels, old.num_anchors, num_classes, num_convs=len(old.conv) // 3
        )
    elif isinstance(model, SSD):
        old = model.head.classification_head
        anchors = model.anchor_generator.num_anchors_per_location()
        if isinstance(old, SSDLiteClassificationHead):
            norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
            in_channels = [m[0][0].in_channels for m in old.module_list]
            model.head.classification_head = SSDLiteClassificationHead(in_channels, anchors, num_classes, norm)
        else:
            in_channels = [m.in_channels for m in old.module_list]
            model.head.classification_head = SSDClassificationHead(in_channels, anchors, num_classes)
    else:
        raise TypeError(f"no head replacement rule for {type(model).__name__}")
    return model
