"""Every torchvision detector family, declared once: outputs, thresholds, and which heads depend on the classes.

Fine-tuning replaces each class-dependent head with a fresh one for ``num_classes``; each rule keeps the head's
hyper-parameters (input channels, anchors per location, norm layer) so that only the output size changes and
everything learned before the last layers is kept.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.fcos import FCOSClassificationHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection.ssd import SSDClassificationHead
from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

from detdemo.models.registry import Family, register_family

BOXES = ("boxes", "labels", "scores")
RCNN_THRESHOLDS = {"box_score_thresh": "score_thresh", "box_nms_thresh": "nms_thresh",
                   "box_detections_per_img": "detections_per_img"}


def _uses_groupnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.GroupNorm) for m in module.modules())


def replace_rcnn_heads(model: FasterRCNN, num_classes: int, num_keypoints: int | None = None) -> nn.Module:
    """Box predictor always; mask predictor for Mask R-CNN; keypoint predictor when the keypoint count differs."""
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
    return model


def replace_retinanet_head(model, num_classes: int, num_keypoints: int | None = None) -> nn.Module:
    old = model.head.classification_head
    norm = partial(nn.GroupNorm, 32) if _uses_groupnorm(old) else None
    model.head.classification_head = RetinaNetClassificationHead(old.conv[0][0].in_channels, old.num_anchors,
                                                                 num_classes, norm_layer=norm)
    return model


def replace_fcos_head(model, num_classes: int, num_keypoints: int | None = None) -> nn.Module:
    old = model.head.classification_head
    model.head.classification_head = FCOSClassificationHead(old.conv[0].in_channels, old.num_anchors, num_classes,
                                                            num_convs=len(old.conv) // 3)
    return model


def replace_ssd_head(model, num_classes: int, num_keypoints: int | None = None) -> nn.Module:
    old = model.head.classification_head
    anchors = model.anchor_generator.num_anchors_per_location()
    model.head.classification_head = SSDClassificationHead([m.in_channels for m in old.module_list], anchors,
                                                           num_classes)
    return model


def replace_ssdlite_head(model, num_classes: int, num_keypoints: int | None = None) -> nn.Module:
    old = model.head.classification_head
    anchors = model.anchor_generator.num_anchors_per_location()
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    in_channels = [m[0][0].in_channels for m in old.module_list]
    model.head.classification_head = SSDLiteClassificationHead(in_channels, anchors, num_classes, norm)
    return model


RCNN_FLOAT = ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor")
ONE_STAGE_FLOAT = ("head.classification_head.cls_logits", "head.regression_head.bbox_reg",
                   "head.regression_head.bbox_ctrness")

for _family in (
    Family("faster_rcnn", BOXES, replace_rcnn_heads, "roi_heads", RCNN_THRESHOLDS, RCNN_FLOAT),
    Family("mask_rcnn", (*BOXES, "masks"), replace_rcnn_heads, "roi_heads", RCNN_THRESHOLDS,
           (*RCNN_FLOAT, "roi_heads.mask_predictor.mask_fcn_logits")),
    Family("keypoint_rcnn", (*BOXES, "keypoints", "keypoints_scores"), replace_rcnn_heads, "roi_heads",
           RCNN_THRESHOLDS, (*RCNN_FLOAT, "roi_heads.keypoint_predictor")),
    Family("retinanet", BOXES, replace_retinanet_head, keep_float=ONE_STAGE_FLOAT),
    Family("fcos", BOXES, replace_fcos_head, keep_float=ONE_STAGE_FLOAT),
    Family("ssd", BOXES, replace_ssd_head, keep_float=("head",)),
    Family("ssdlite", BOXES, replace_ssdlite_head, keep_float=("head",)),
):
    register_family(_family)
