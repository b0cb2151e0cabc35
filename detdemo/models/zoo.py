"""torchvision's detection architectures, registered under their torchvision names."""

from __future__ import annotations

from torchvision.models import detection as tvd
from torchvision.models import mobilenetv3, resnet, vgg

import detdemo.models.families  # noqa: F401  (registers the families these models belong to)
from detdemo.models.registry import ModelSpec, register

R50 = resnet.ResNet50_Weights
MV3 = mobilenetv3.MobileNet_V3_Large_Weights

_ZOO = [
    ("maskrcnn_resnet50_fpn", "mask_rcnn", tvd.MaskRCNN_ResNet50_FPN_Weights, R50,
     "Mask R-CNN, ResNet-50 FPN: the tutorial's model"),
    ("maskrcnn_resnet50_fpn_v2", "mask_rcnn", tvd.MaskRCNN_ResNet50_FPN_V2_Weights, R50,
     "Mask R-CNN v2 (improved recipe, GroupNorm heads)"),
    ("fasterrcnn_resnet50_fpn", "faster_rcnn", tvd.FasterRCNN_ResNet50_FPN_Weights, R50,
     "Faster R-CNN, ResNet-50 FPN"),
    ("fasterrcnn_resnet50_fpn_v2", "faster_rcnn", tvd.FasterRCNN_ResNet50_FPN_V2_Weights, R50,
     "Faster R-CNN v2 (improved recipe)"),
    ("fasterrcnn_mobilenet_v3_large_fpn", "faster_rcnn", tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights, MV3,
     "Faster R-CNN, MobileNetV3-Large FPN (fast)"),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "faster_rcnn",
     tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights, MV3, "Faster R-CNN, MobileNetV3-Large FPN at 320 px"),
    ("retinanet_resnet50_fpn", "retinanet", tvd.RetinaNet_ResNet50_FPN_Weights, R50,
     "RetinaNet, ResNet-50 FPN (one stage)"),
    ("retinanet_resnet50_fpn_v2", "retinanet", tvd.RetinaNet_ResNet50_FPN_V2_Weights, R50,
     "RetinaNet v2 (GroupNorm heads)"),
    ("fcos_resnet50_fpn", "fcos", tvd.FCOS_ResNet50_FPN_Weights, R50, "FCOS, ResNet-50 FPN (anchor-free)"),
    ("keypointrcnn_resnet50_fpn", "keypoint_rcnn", tvd.KeypointRCNN_ResNet50_FPN_Weights, R50,
     "Keypoint R-CNN, ResNet-50 FPN"),
]
_FIXED = [
    ("ssdlite320_mobilenet_v3_large", "ssdlite", tvd.SSDLite320_MobileNet_V3_Large_Weights, MV3,
     "SSDlite 320, MobileNetV3-Large (mobile)"),
    ("ssd300_vgg16", "ssd", tvd.SSD300_VGG16_Weights, vgg.VGG16_Weights, "SSD 300, VGG-16"),
]

for name, family, coco, backbone, summary in _ZOO:
    register(ModelSpec(name, family, getattr(tvd, name), coco, backbone, summary))
for name, family, coco, backbone, summary in _FIXED:
    register(ModelSpec(name, family, getattr(tvd, name), coco, backbone, summary, fixed_size=True))
