"""What goes into an exported graph: batching, backbone, RPN/heads and NMS (see ``detdemo.inference.pipeline``),
plus rewrites that make the graph faster in ONNX Runtime without changing its results.

Exported models take one normalised, resized ``float32 [3, h, w]`` image (batch fixed at 1) and return boxes in
that resized frame and, for Mask R-CNN, 28x28 mask probabilities; the host pipeline does the rest.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, poolers, roi_align

from detdemo.inference.pipeline import graph_model


class ScriptableDetector(nn.Module):
    """For TorchScript: returns the graph's detection dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = graph_model(model)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model([image])
        if isinstance(out, tuple):  # scripted torchvision detectors return (losses, detections)
            return out[1][0]
        return out[0]


class ShuffledMaskPredictor(nn.Module):
    """Mask R-CNN's mask predictor (2x ConvTranspose2d, ReLU, 1x1 class logits) computed at 14x14, then shuffled.

    A stride-2, kernel-2 transposed convolution gives each output pixel exactly one kernel tap, so it equals a
    1x1 convolution to 4x the channels followed by a pixel shuffle; ReLU and the 1x1 logits commute with the
    shuffle, so the logits are computed for the four sub-pixels at 14x14 and only ``num_classes`` channels are
    shuffled to 28x28. Same sums, far less data moved: in ONNX Runtime the transposed convolution alone was 16 %
    of the light Mask R-CNN's graph time, and shuffling its 128 channels instead cost as much.
    """

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        up, logits = predictor.conv5_mask, predictor.mask_fcn_logits
        c_in, c, k = up.in_channels, up.out_channels, logits.out_channels
        # named as torchvision names the layers they replace, so module paths (Family.keep_float) still apply
        self.conv5_mask = nn.Conv2d(c_in, 4 * c, 1)
        self.mask_fcn_logits = nn.Conv2d(4 * c, 4 * k, 1)
        with torch.no_grad():
            # channel o*4 + s holds sub-pixel s = 2a + b of channel o: PixelShuffle's channel order
            self.conv5_mask.weight.copy_(up.weight.permute(1, 2, 3, 0).reshape(4 * c, c_in, 1, 1))
            self.conv5_mask.bias.copy_(up.bias.repeat_interleave(4) if up.bias is not None else torch.zeros(4 * c))
            w = torch.zeros(k, 4, c, 4)
            for sub in range(4):
                w[:, sub, :, sub] = logits.weight[:, :, 0, 0]
            self.mask_fcn_logits.weight.copy_(w.reshape(4 * k, 4 * c, 1, 1))
            self.mask_fcn_logits.bias.copy_(logits.bias.repeat_interleave(4))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.mask_fcn_logits(torch.relu(self.conv5_mask(x))))

    @staticmethod
    def applies_to(predictor: nn.Module) -> bool:
        up, logits = getattr(predictor, "conv5_mask", None), getattr(predictor, "mask_fcn_logits", None)
        return (isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (2, 2) and up.stride == (2, 2)
                and up.padding == (0, 0) and up.output_padding == (0, 0) and up.groups == 1
                and isinstance(logits, nn.Conv2d) and logits.kernel_size == (1, 1) and logits.groups == 1
                and logits.bias is not None)


def fast_mask_predictor(model: nn.Module) -> bool:
    """Swap in ShuffledMaskPredictor where the model has torchvision's standard one; True when swapped."""
    heads = getattr(model, "roi_heads", None)
    predictor = getattr(heads, "mask_predictor", None)
    if predictor is None or not ShuffledMaskPredictor.applies_to(predictor):
        return False
    heads.mask_predictor = ShuffledMaskPredictor(predictor)
    return True


def _level_indices(levels: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    return [torch.where(levels == level)[0] for level in range(num_levels)]


def _inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """Where each RoI's row is once the rows are concatenated level by level: indexing the level-ordered rows
    with it restores RoI order (every RoI is in exactly one level, so ``order`` is a permutation)."""
    return torch.zeros_like(order).scatter(0, order, torch.arange(order.size(0), device=order.device))


def gather_merge_levels(levels: torch.Tensor, unmerged_results: list[torch.Tensor]) -> torch.Tensor:
    """Put per-FPN-level RoIAlign results back in RoI order with one Gather instead of a scatter per level.

    Replaces ``torchvision.ops.poolers._onnx_merge_levels`` during ONNX export (``export_onnx``). torchvision's
    version scatters every level into a zero tensor with a fully expanded element index; ONNX Runtime runs that
    ScatterElements element by element: 13 % of Mask R-CNN R50-FPN's graph time (312 of 2243 ms on 2 cores).
    Same values, pure data movement.
    """
    order = torch.cat(_level_indices(levels, len(unmerged_results)))
    return torch.cat(unmerged_results)[_inverse_permutation(order)]


def pool_levels(features: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor, scales: list[float],
                output_size, sampling_ratio: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-level RoIAlign with the pooled RoIs left in level order: (pooled rows, the inverse order). Indexing
    the rows with the inverse gives torchvision's ``result[idx_in_level] = pooled`` exactly; the export patch
    ``roi_align_levels`` does that at once, ``head_on_level_order`` after the box head."""
    indices = _level_indices(levels, len(features))
    pooled = [roi_align(feature, rois[idx], output_size=output_size, spatial_scale=scale,
                        sampling_ratio=sampling_ratio).to(features[0].dtype)
              for feature, scale, idx in zip(features, scales, indices)]
    return torch.cat(pooled), _inverse_permutation(torch.cat(indices))


def _level_order_pool(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                      image_shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``MultiScaleRoIAlign.forward`` with the pooled RoIs left in level order: (pooled, inverse order)."""
    x_filtered = poolers._filter_input(x, self.featmap_names)
    if self.scales is None or self.map_levels is None:
        self.scales, self.map_levels = poolers._setup_scales(x_filtered, image_shapes, self.canonical_scale,
                                                             self.canonical_level)
    return pool_levels(x_filtered, poolers._convert_to_roi_format(boxes), self.map_levels(boxes), self.scales,
                       self.output_size, self.sampling_ratio)


def _head_then_roi_order(base: type):
    def forward(self, pooled_and_inverse: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        pooled, inverse = pooled_and_inverse
        return base.forward(self, pooled)[inverse]
    return forward


def _with_forward(module: nn.Module, make_forward, prefix: str) -> None:
    """Give one module object its own subclass whose ``forward`` is ``make_forward(original class)``: its children,
    parameters and so the exported graph's node names stay those of the original (``Family.keep_float`` and the INT8
    plans match by name)."""
    cls = type(module)
    module.__class__ = type(prefix + cls.__name__, (cls,), {"forward": make_forward(cls), "__module__": cls.__module__})


def head_on_level_order(model: nn.Module) -> bool:
    """Run the R-CNN box head on the pyramid's pooled RoIs in level order and put its output rows back in RoI
    order, instead of putting the pooled features back first: the head works row by row, so the rows are the
    same, and the gather moves (N, 1024) values instead of (N, 256, 7, 7). On the trained R50's OpenVINO INT8 file
    the pooled features' concatenation, gather and layout reorders were a quarter of the call. True when applied
    (a box pooler over more than one level)."""
    heads = getattr(model, "roi_heads", None)
    pool, head = getattr(heads, "box_roi_pool", None), getattr(heads, "box_head", None)
    if type(pool) is not MultiScaleRoIAlign or head is None or len(pool.featmap_names) < 2:
        return False
    _with_forward(pool, lambda _: _level_order_pool, "LevelOrder")
    _with_forward(head, _head_then_roi_order, "RoiOrder")
    return True


class OnnxDetector(nn.Module):
    """For ONNX and torch.export: a tuple of tensors in ``Family.outputs`` order. ``onnx_rewrites``: the ONNX graph's
    rewrites, exact up to float rounding (``ShuffledMaskPredictor``, ``head_on_level_order``)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], onnx_rewrites: bool = True) -> None:
        super().__init__()
        self.model = graph_model(model)
        if onnx_rewrites:
            fast_mask_predictor(self.model)
            head_on_level_order(self.model)
        self.names = names

    def forward(self, image: torch.Tensor):
        det = self.model([image])[0]
        return tuple(det[n] for n in self.names)


# The submodules that hold a detector's learned convolutions and linear layers (backbone with FPN, RPN head, RoI
# box/mask/keypoint heads; the single-stage families' head), by attribute path; absent ones are skipped.
COMPUTE_PARTS = ("backbone", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor", "roi_heads.mask_head",
                 "roi_heads.mask_predictor", "roi_heads.keypoint_head", "roi_heads.keypoint_predictor", "head")


def _to_float(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return type(value)((k, _to_float(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value


class AutocastPart(nn.Module):
    """One compute part run under ``torch.autocast`` (convolutions and matrix products in ``dtype``), its outputs
    back in float32: what lies between the parts (anchors, box decoding, RoIAlign's boxes, NMS, the mask
    probabilities) stays in float32, where bf16's 8-bit mantissa would round a 400 px coordinate to whole pixels."""

    def __init__(self, part: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.part = part
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        with torch.autocast("cpu", dtype=self.dtype):
            return _to_float(self.part(*args, **kwargs))


def autocast_parts(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> list[str]:
    """Wrap ``model``'s compute parts (``COMPUTE_PARTS``) in ``AutocastPart``, in place (give it a copy); returns
    the parts wrapped. Traced by ``torch.export``, autocast becomes explicit casts in the program."""
    wrapped = []
    for path in COMPUTE_PARTS:
        parent, _, name = path.rpartition(".")
        try:
            owner = model.get_submodule(parent) if parent else model
        except AttributeError:
            continue
        part = getattr(owner, name, None)
        if isinstance(part, nn.Module):
            setattr(owner, name, AutocastPart(part, dtype))
            wrapped.append(path)
    return wrapped
