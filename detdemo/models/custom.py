"""The tutorial's custom-backbone recipe, and a light variant that trains from scratch on a CPU.

Recipe: MobileNetV2's ``features`` (1280 channels, stride 32) as a single feature map, an AnchorGenerator with
five sizes and three aspect ratios at that one level, and MultiScaleRoIAlign on feature map ``'0'``.

The light variant cuts MobileNetV2 after its stride-16 stage (96 channels) and slims the box and mask heads, so a
Mask R-CNN has about 2.5 M parameters, runs at 320-512 px, and learns the synthetic shapes on two CPU cores.
Two options make it fit small objects and small files: ``fpn_channels`` adds a feature pyramid over the stride-8 and
stride-16 stages (a stride-8 level is what finds 20-pixel objects such as blood platelets, which the single stride-16
map all but missed), and ``width_mult`` thins MobileNetV2 (its parameters scale with the square).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import mobilenet_v2
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.models.mobilenetv2 import MobileNet_V2_Weights
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

import detdemo.models.families  # noqa: F401  (registers the families these models belong to)
from detdemo.models.registry import ModelSpec, register

LIGHT_STAGE_END = 14  # features[:14] ends at stride 16 with 96 channels


LIGHT_STRIDE8_END = 7  # features[:7] ends at stride 8 (32 channels at full width)


def _mobilenet_features(weights_backbone, trainable_backbone_layers: int | None, stop: int | None,
                        width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 features; frozen BatchNorm and frozen early blocks when starting from ImageNet weights."""
    pretrained = weights_backbone is not None
    if pretrained and width_mult != 1.0:
        raise ValueError("ImageNet weights exist for width_mult=1.0 only")
    norm = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    features = mobilenet_v2(weights=weights_backbone, norm_layer=norm, width_mult=width_mult).features
    if stop is not None:
        features = features[:stop]
    if pretrained:
        blocks = len(features)
        trainable = blocks if trainable_backbone_layers is None else trainable_backbone_layers
        for block in list(features)[: max(0, blocks - trainable)]:
            block.requires_grad_(False)
    return features


def _check_no_coco(weights) -> None:
    if weights is not None:  # registry callers never pass COCO weights here; guard direct use
        raise ValueError("no COCO weights exist for custom-backbone models")


def fasterrcnn_mobilenet_v2(*, weights=None, weights_backbone=None, num_classes: int = 91,
                            trainable_backbone_layers: int | None = None, **kwargs) -> FasterRCNN:
    _check_no_coco(weights)
    backbone = _mobilenet_features(weights_backbone, trainable_backbone_layers, stop=None)
    backbone.out_channels = 1280
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                      **kwargs)


def maskrcnn_mobilenet_v2(*, weights=None, weights_backbone=None, num_classes: int = 91,
                          trainable_backbone_layers: int | None = None, **kwargs) -> MaskRCNN:
    _check_no_coco(weights)
    backbone = _mobilenet_features(weights_backbone, trainable_backbone_layers, stop=None)
    backbone.out_channels = 1280
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    mask_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=2)
    return MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                    mask_roi_pool=mask_pool, **kwargs)


LIGHT_OPTIONS = ("representation_size", "mask_channels", "fpn_channels", "width_mult")
FASTER_LIGHT_OPTIONS = ("representation_size", "fpn_channels", "width_mult")


def _light_backbone(weights_backbone, trainable_backbone_layers, fpn_channels: int, width_mult: float):
    """(backbone, feature map names): one stride-16 map, or with ``fpn_channels`` a pyramid over strides 8, 16
    and a pooled 32."""
    features = _mobilenet_features(weights_backbone, trainable_backbone_layers, LIGHT_STAGE_END, width_mult)
    out = features[-1].out_channels
    if not fpn_channels:
        features.out_channels = out
        return features, ["0"], AnchorGenerator(sizes=((16, 32, 64, 128, 256),), aspect_ratios=((0.5, 1.0, 2.0),))
    stride8 = features[LIGHT_STRIDE8_END - 1].out_channels
    backbone = BackboneWithFPN(features, {str(LIGHT_STRIDE8_END - 1): "0", str(LIGHT_STAGE_END - 1): "1"},
                               [stride8, out], fpn_channels)
    anchors = AnchorGenerator(sizes=((16, 32), (64, 128), (192, 320)), aspect_ratios=((0.5, 1.0, 2.0),) * 3)
    return backbone, ["0", "1"], anchors


def _light_parts(weights_backbone, trainable_backbone_layers, kwargs: dict, representation_size: int,
                 fpn_channels: int = 0, width_mult: float = 1.0):
    backbone, maps, anchors = _light_backbone(weights_backbone, trainable_backbone_layers, fpn_channels, width_mult)
    kwargs.setdefault("min_size", 320)
    kwargs.setdefault("max_size", 512)
    for key, value in (("rpn_pre_nms_top_n_train", 600), ("rpn_post_nms_top_n_train", 300),
                       ("rpn_pre_nms_top_n_test", 300), ("rpn_post_nms_top_n_test", 150),
                       ("box_batch_size_per_image", 128)):
        kwargs.setdefault(key, value)
    roi_pool = MultiScaleRoIAlign(featmap_names=maps, output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, representation_size)
    return backbone, anchors, roi_pool, box_head


def fasterrcnn_light(*, weights=None, weights_backbone=None, num_classes: int = 91,
                     trainable_backbone_layers: int | None = None, representation_size: int = 256,
                     fpn_channels: int = 0, width_mult: float = 1.0, **kwargs) -> FasterRCNN:
    """``representation_size``: width of the two-layer box head (its first layer holds most parameters)."""
    _check_no_coco(weights)
    backbone, anchors, roi_pool, box_head = _light_parts(weights_backbone, trainable_backbone_layers, kwargs,
                                                         representation_size, fpn_channels, width_mult)
    return FasterRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                      box_head=box_head, box_predictor=FastRCNNPredictor(representation_size, num_classes),
                      **kwargs)


def maskrcnn_light(*, weights=None, weights_backbone=None, num_classes: int = 91,
                   trainable_backbone_layers: int | None = None, representation_size: int = 256,
                   mask_channels: int = 128, fpn_channels: int = 0, width_mult: float = 1.0, **kwargs) -> MaskRCNN:
    """``representation_size`` and ``mask_channels`` trade accuracy for file size (the app's bundled model)."""
    _check_no_coco(weights)
    backbone, anchors, roi_pool, box_head = _light_parts(weights_backbone, trainable_backbone_layers, kwargs,
                                                         representation_size, fpn_channels, width_mult)
    mask_pool = MultiScaleRoIAlign(featmap_names=roi_pool.featmap_names, output_size=14, sampling_ratio=2)
    mask_head = MaskRCNNHeads(backbone.out_channels, (mask_channels,) * 3, dilation=1)
    return MaskRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                    box_head=box_head, box_predictor=FastRCNNPredictor(representation_size, num_classes),
                    mask_roi_pool=mask_pool, mask_head=mask_head,
                    mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes), **kwargs)


V2 = MobileNet_V2_Weights
register(ModelSpec("fasterrcnn_mobilenet_v2", "faster_rcnn", fasterrcnn_mobilenet_v2, None, V2,
                   "Tutorial recipe: MobileNetV2 features + own AnchorGenerator and MultiScaleRoIAlign"))
register(ModelSpec("maskrcnn_mobilenet_v2", "mask_rcnn", maskrcnn_mobilenet_v2, None, V2,
                   "Tutorial recipe with a mask branch"))
register(ModelSpec("fasterrcnn_light", "faster_rcnn", fasterrcnn_light, None, V2,
                   "Light MobileNetV2 (stride 16) Faster R-CNN, trains from scratch on a CPU",
                   options=FASTER_LIGHT_OPTIONS))
register(ModelSpec("maskrcnn_light", "mask_rcnn", maskrcnn_light, None, V2,
                   "Light MobileNetV2 (stride 16) Mask R-CNN, trains from scratch on a CPU", options=LIGHT_OPTIONS))
