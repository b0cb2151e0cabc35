from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import detection as tvd
from torchvision.ops import FrozenBatchNorm2d

from detdemo import build_model, list_models, save_checkpoint
from detdemo.errors import DetDemoError, WeightsUnavailableError
from detdemo.models import get_spec, rebuild
from detdemo.models.weights import cache_path

ALL = [s.name for s in list_models()]


def _batch(spec, num_classes: int = 3):
    images = [torch.rand(3, 120, 150), torch.rand(3, 96, 88)]
    targets = []
    for (h, w), boxes in zip([(120, 150), (96, 88)], [[[10.0, 10, 60, 70]], [[5.0, 5, 40, 50], [20, 20, 80, 90]]]):
        b = torch.tensor(boxes)
        t = {"boxes": b, "labels": torch.arange(len(b)) % (num_classes - 1) + 1}
        if spec.masks:
            m = torch.zeros(len(b), h, w, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(b.int().tolist()):
                m[i, y0:y1, x0:x1] = 1
            t["masks"] = m
        if spec.keypoints:
            kp = torch.ones(len(b), 17, 3)  # visibility 1
            kp[..., :2] = torch.rand(len(b), 17, 2) * 30 + b[:, None, :2]
            t["keypoints"] = kp
        targets.append(t)
    return images, targets


def test_every_family_is_present():
    families = {get_spec(n).family for n in ALL}
    assert families == {"faster_rcnn", "mask_rcnn", "keypoint_rcnn", "retinanet", "fcos", "ssd", "ssdlite"}
    for name in ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn",
                 "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                 "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
                 "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large", "ssd300_vgg16", "keypointrcnn_resnet50_fpn",
                 "fasterrcnn_mobilenet_v2", "maskrcnn_mobilenet_v2", "fasterrcnn_light", "maskrcnn_light"]:
        assert name in ALL


@pytest.mark.parametrize("arch", ALL)
def test_arch_trains_one_step_and_predicts(arch):
    torch.manual_seed(0)
    spec = get_spec(arch)
    sizes = {} if spec.fixed_size else {"min_size": 128, "max_size": 160}
    model, cfg = build_model(arch, 3, ["a", "b"], **sizes)
    assert cfg.arch == arch and cfg.num_classes == 3 and cfg.pretrained is None
    # From scratch: no frozen normalisation anywhere, every parameter trainable.
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    images, targets = _batch(spec)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, params))
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o in out:
        assert o["boxes"].shape[1] == 4 and len(o["labels"]) == len(o["scores"]) == len(o["boxes"])
        assert o["labels"].numel() == 0 or int(o["labels"].max()) < 3
        if spec.masks:
            assert "masks" in o
    # The same module tree comes back from the recorded config (what checkpoints rely on).
    rebuild(cfg).load_state_dict(model.state_dict())


def _fake_coco_cache(arch: str, torch_home, monkeypatch) -> dict:
    """Write a state dict of the COCO-shaped model under torchvision's real file name in a temporary TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    spec = get_spec(arch)
    member = spec.coco_weights.DEFAULT
    torch.manual_seed(1)
    kw = {"num_keypoints": 17} if spec.keypoints else {}
    reference = spec.builder(weights=None, weights_backbone=None, num_classes=len(member.meta["categories"]), **kw)
    state = reference.state_dict()
    path = cache_path(member)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert str(path).startswith(str(torch_home))
    return state


def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize(
    ("arch", "head_param"),
    [
        ("maskrcnn_resnet50_fpn", "roi_heads.mask_predictor.mask_fcn_logits.weight"),
        ("retinanet_resnet50_fpn_v2", "head.classification_head.cls_logits.weight"),
        ("fcos_resnet50_fpn", "head.classification_head.cls_logits.weight"),
        ("ssdlite320_mobilenet_v3_large", "head.classification_head.module_list.0.1.weight"),
    ],
)
def test_finetune_from_cached_coco_weights_replaces_heads(arch, head_param, tmp_path, monkeypatch):
    _no_network(monkeypatch)
    state = _fake_coco_cache(arch, tmp_path, monkeypatch)
    model, cfg = build_model(arch, 4, ["w", "x", "y"], weights="DEFAULT")
    assert cfg.pretrained and "COCO" in cfg.pretrained
    new = model.state_dict()
    # Everything outside the class-dependent heads is the cached COCO weights...
    backbone_keys = [k for k in state if k.startswith("backbone.") and k in new]
    assert backbone_keys
    for k in backbone_keys[:50]:
        assert torch.equal(new[k], state[k]), k
    # ...and the class-dependent head now has 4 classes where COCO had 91.
    assert new[head_param].shape != state[head_param].shape
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 160, 200)])[0]
    assert out["labels"].numel() == 0 or int(out["labels"].max()) < 4
    if get_spec(arch).family in ("mask_rcnn",):
        assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())  # torchvision's fine-tune setup
        assert cfg.frozen_parameters  # early backbone layers stay frozen
        again = rebuild(cfg)
        again.load_state_dict(model.state_dict())
        assert [n for n, p in again.named_parameters() if not p.requires_grad] == cfg.frozen_parameters


def test_box_predictor_replaced_for_tutorial_model(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    _fake_coco_cache("fasterrcnn_mobilenet_v3_large_320_fpn", tmp_path, monkeypatch)
    model, _ = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", 2, ["person"], weights="DEFAULT")
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 8


def test_local_weights_file_goes_through_the_same_path(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    ref = tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    local = tmp_path / "my_coco.pth"
    torch.save(ref.state_dict(), local)
    model, cfg = build_model("ssdlite320_mobilenet_v3_large", 3, weights=str(local))
    assert cfg.pretrained == str(local)
    k = "backbone.features.0.0.0.weight"
    assert torch.equal(model.state_dict()[k], ref.state_dict()[k])


def test_offline_without_cache_says_which_file_to_put_where(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        build_model("maskrcnn_resnet50_fpn", 2, weights="DEFAULT")
    msg = str(err.value)
    assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    with pytest.raises(WeightsUnavailableError, match="mobilenet_v2-7ebf99e0.pth"):
        build_model("maskrcnn_light", 2, weights_backbone="DEFAULT")


def test_imagenet_backbone_from_cache_freezes_batchnorm(tmp_path, monkeypatch):
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    _no_network(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = cache_path(MobileNet_V2_Weights.DEFAULT)
    path.parent.mkdir(parents=True)
    torch.save(mobilenet_v2().state_dict(), path)
    model, cfg = build_model("maskrcnn_light", 3, weights_backbone="DEFAULT", trainable_backbone_layers=3)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    assert cfg.frozen_parameters and all(n.startswith("backbone.") for n in cfg.frozen_parameters)


def test_clear_errors_for_bad_requests():
    with pytest.raises(DetDemoError, match=r"unknown model 'maskrcnn_resnet50'.*did you mean"):
        build_model("maskrcnn_resnet50", 2)
    with pytest.raises(DetDemoError, match="torchvision has no COCO weights"):
        build_model("maskrcnn_light", 2, weights="DEFAULT")
    with pytest.raises(DetDemoError, match="unknown COCO weights 'COCO_V9'"):
        build_model("fasterrcnn_resnet50_fpn", 2, weights="COCO_V9")
    with pytest.raises(DetDemoError, match="fixed square input"):
        build_model("ssd300_vgg16", 2, min_size=512)
    with pytest.raises(DetDemoError, match="num_classes must be >= 2"):
        build_model("fasterrcnn_light", 1)
    with pytest.raises(DetDemoError, match="2 class names given for num_classes=4"):
        build_model("fasterrcnn_light", 4, ["a", "b"])
    with pytest.raises(DetDemoError, match="unsupported model option"):
        build_model("fasterrcnn_light", 2, learning_rate=3)


def test_light_model_is_small():
    model, _ = build_model("maskrcnn_light", 4)
    n = sum(p.numel() for p in model.parameters())
    assert n < 3_000_000, n
    assert isinstance(model.backbone, nn.Sequential)


def test_light_models_take_their_own_head_width_options(tmp_path):
    from detdemo.models import load_model

    small, cfg = build_model("maskrcnn_light", 4, representation_size=128, mask_channels=64)
    full, _ = build_model("maskrcnn_light", 4)
    assert sum(p.numel() for p in small.parameters()) < 0.7 * sum(p.numel() for p in full.parameters())
    assert cfg.kwargs == {"representation_size": 128, "mask_channels": 64}
    path = save_checkpoint(tmp_path / "small.pt", small, cfg)
    again, _ = load_model(path)  # the options travel in the checkpoint, so the module tree is rebuilt as saved
    assert again.roi_heads.box_head.fc7.out_features == 128
    assert again.roi_heads.mask_predictor.conv5_mask.in_channels == 64
    with pytest.raises(DetDemoError, match="representation_size"):  # not an option of the torchvision builders
        build_model("maskrcnn_resnet50_fpn", 4, representation_size=128)
