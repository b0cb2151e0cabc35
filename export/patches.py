"""Scoped, named patches that let ``torch.export`` trace torchvision's detectors with dynamic image sizes and
data-dependent detection counts (Detectron2's ``export/`` style: each patch is a context manager, active only
while exporting; outside the ``with`` block every patched name is the original object again and eager behaviour
is untouched, which ``tests/test_torch_export.py`` checks bit for bit).

torch.export traces with symbolic sizes, so Python ``if``s on a tensor's size or content cannot be decided: NMS
keeps an unknown number of boxes (an "unbacked" size) and everything after it inherits that unknown. torchvision
0.29 trips on that in a chain of places, each fixed here the way pytorch/vision PR #9395 (open, for Faster R-CNN
MobileNetV3) fixes it upstream where it has a fix, and in the same spirit elsewhere:

==================  =========================================================================================
name                what it replaces, and why
==================  =========================================================================================
batched_nms         ``ops.boxes.batched_nms``: the size-based choice between two NMS strategies and the empty-input
                    ``if`` become ``guard_or_false`` (upstream) and a branch-free coordinate trick that also handles
                    no boxes (the strategy the legacy ONNX export has always traced).
nms_fake_kernel     torchvision's fake ``torchvision::nms``: its result size was an unbacked int with a lower
                    bound of 2 (a runtime assert fails on an image with 0 or 1 box); now 0..N (upstream:
                    ``new_dynamic_size(min=0)``; the bound N is ours).
batch_images        ``GeneralizedRCNNTransform.batch_images``: padding to a multiple of 32 computed with integer
                    arithmetic instead of ``math.ceil`` on floats (upstream), and one ``pad`` instead of a copy
                    into a new tensor.
box_decode          ``BoxCoder.decode``: no ``if box_sum > 0`` branch, explicit reshape sizes (upstream).
roi_align_levels    ``poolers._multiscale_roi_align``: the RoI count as ``rois.shape[0]`` rather than ``len()``
                    (upstream), so it stays symbolic; and the levels' pooled RoIs put back in order by one gather
                    (``export.wrappers.pool_levels``, as the legacy exporter's ``gather_merge_levels``) instead of
                    writing each level into a zero tensor, which exports as a broadcast of zeros and one full-size
                    ScatterND per level (about 40 % of the trained R50's OpenVINO INT8 call at 128 px).
grid_anchors        ``AnchorGenerator.grid_anchors``: anchor centres from one ``arange`` by ``%`` and ``//``
                    instead of ``meshgrid`` + ``reshape``, whose contiguity checks specialise a feature map of
                    height or width 1 (the stride-32 level of an image under 33 px).
cell_anchors        ``AnchorGenerator.set_cell_anchors`` leaves the cell anchors alone when they already have the
                    features' dtype and device: its no-op ``.to()`` put a second reference to the anchor constant
                    in the program, with only an ``_assert_tensor_metadata`` using it; Inductor's freezing folds
                    that assert away, deletes the constant and breaks the other reference ("Node _tensor_constant0
                    target _tensor_constant0 references nonexistent attribute", torch 2.14.1).
eval_batch_norm     ``F.batch_norm`` in eval mode calls the inference kernel directly: the composite op's
                    "empty input" branch cannot be decided on a data-dependent RoI count (the v2 models'
                    BatchNorm box heads).
size_oblivious      ``torch.fx.experimental._config.backed_size_oblivious``: image sizes are treated as "any size",
                    not specialised to >= 2 by 0/1 checks, so the graph accepts every size the transform makes.
==================  =========================================================================================

Every replacement computes what the original computes (same ops, or exact integer rewrites); only the control flow
changes. They are not thread-safe (module attributes are swapped while the block runs): export in one thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from unittest import mock

import torch
import torchvision
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import guard_or_false
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops
from torchvision.ops import poolers

from export.wrappers import pool_levels

# -- replacements ------------------------------------------------------------------------------------------------


def _batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's batched_nms, decidable on an unknown box count.

    The per-class strategy runs only when the count is *known* to be large (never during export: ``guard_or_false``
    answers False for an unknown size, as upstream). The coordinate trick offsets each class's boxes beyond every
    other's; taking the maximum over the boxes and a 0 makes it work on no boxes without an ``if`` (boxes are
    clipped to the image, so their maximum is >= 0 and the offsets are the original's)."""
    if guard_or_false(boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000)):
        return box_ops._batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return box_ops.nms(boxes + offsets[:, None], scores, iou_threshold)


def _nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """NMS keeps between 0 and all of its boxes."""
    torch._check(dets.dim() == 2, lambda: f"boxes should be a 2d tensor, got {dets.dim()}D")
    torch._check(dets.size(1) == 4, lambda: f"boxes should have 4 elements in dimension 1, got {dets.size(1)}")
    torch._check(scores.dim() == 1, lambda: f"scores should be a 1d tensor, got {scores.dim()}")
    torch._check(dets.size(0) == scores.size(0), lambda: "boxes and scores should have the same length")
    kept = torch.library.get_ctx().new_dynamic_size(min=0)
    torch._check(kept <= dets.size(0))
    return dets.new_empty(kept, dtype=torch.long)


def _batch_images(self, images: list[Tensor], size_divisible: int = 32) -> Tensor:
    """Zero-pad every image to the largest height and width, rounded up to ``size_divisible``: the original's
    ``int(math.ceil(float(h) / s) * s)`` as ``(h + s - 1) // s * s``."""
    s = size_divisible
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    height, width = (height + s - 1) // s * s, (width + s - 1) // s * s
    return torch.stack([torch.nn.functional.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]))
                        for img in images])


def _decode(self, rel_codes: Tensor, boxes: list[Tensor]) -> Tensor:
    """BoxCoder.decode with the sizes spelled out: (boxes, classes * 4) codes -> (boxes, classes, 4) boxes."""
    concat_boxes = torch.cat(boxes, dim=0)
    count, width = concat_boxes.shape[0], rel_codes.shape[-1]
    pred_boxes = self.decode_single(rel_codes.reshape(count, width), concat_boxes)
    return pred_boxes.reshape(count, width // 4, 4)


def _multiscale_roi_align(x_filtered: list[Tensor], boxes: list[Tensor], output_size: list[int],
                          sampling_ratio: int, scales: list[float] | None, mapper) -> Tensor:
    """torchvision's multi-level RoIAlign with the RoI count kept symbolic (``rois.shape[0]``, upstream) and the
    levels merged by a gather: the same values in the same rows as torchvision's ``result[idx] = pooled``."""
    if scales is None or mapper is None:
        raise ValueError("scales and mapper should not be None")
    rois = poolers._convert_to_roi_format(boxes)
    if len(x_filtered) == 1:
        return torchvision.ops.roi_align(x_filtered[0], rois, output_size=output_size, spatial_scale=scales[0],
                                         sampling_ratio=sampling_ratio)
    pooled, inverse = pool_levels(x_filtered, rois, mapper(boxes), scales, output_size, sampling_ratio)
    return pooled[inverse]


def _grid_anchors(self, grid_sizes: list[list[int]], strides: list[list[Tensor]]) -> list[Tensor]:
    """AnchorGenerator.grid_anchors, each cell's centre as (index % width, index // width) x stride: the same
    int32 values as ``meshgrid`` + ``reshape(-1)``, without a view whose contiguity depends on the size."""
    anchors = []
    for (height, width), (stride_h, stride_w), base in zip(grid_sizes, strides, self.cell_anchors):
        cell = torch.arange(0, height * width, dtype=torch.int32, device=base.device)
        shift_x, shift_y = (cell % width) * stride_w, (cell // width) * stride_h
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
    return anchors


_set_cell_anchors = AnchorGenerator.set_cell_anchors


def _set_cell_anchors_once(self, dtype: torch.dtype, device: torch.device) -> None:
    """AnchorGenerator.set_cell_anchors, skipped when it would change nothing (every anchor has that dtype and
    device already, as after eager's first image)."""
    if all(a.dtype == dtype and a.device == torch.device(device) for a in self.cell_anchors):
        return
    _set_cell_anchors(self, dtype, device)


_batch_norm = torch.nn.functional.batch_norm


def _eval_batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                     weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
                     momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Inference batch norm: the kernel ``F.batch_norm`` reaches for a non-empty input, called directly."""
    if training or running_mean is None or running_var is None:
        return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return torch.ops.aten._native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var,
                                                                 momentum, eps)[0]


# -- the patches -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def nms_fake_kernel() -> Iterator[None]:
    """Register our fake ``torchvision::nms`` in a library fragment of our own; destroying the fragment on exit
    removes exactly that registration, and torchvision's own fake kernel is in force again."""
    fragment = torch.library.Library("torchvision", "FRAGMENT")
    try:
        torch.library.register_fake("torchvision::nms", _nms_fake, lib=fragment)
        yield
    finally:
        fragment._destroy()


def _swap(owner: object, name: str, replacement: Callable) -> Callable[[], contextlib.AbstractContextManager]:
    return lambda: mock.patch.object(owner, name, replacement)


PATCHES: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "batched_nms": _swap(box_ops, "batched_nms", _batched_nms),
    "nms_fake_kernel": nms_fake_kernel,
    "batch_images": _swap(GeneralizedRCNNTransform, "batch_images", _batch_images),
    "box_decode": _swap(det_utils.BoxCoder, "decode", _decode),
    "roi_align_levels": _swap(poolers, "_multiscale_roi_align", _multiscale_roi_align),
    "grid_anchors": _swap(AnchorGenerator, "grid_anchors", _grid_anchors),
    "cell_anchors": _swap(AnchorGenerator, "set_cell_anchors", _set_cell_anchors_once),
    "eval_batch_norm": _swap(torch.nn.functional, "batch_norm", _eval_batch_norm),
    "size_oblivious": lambda: torch.fx.experimental._config.patch(backed_size_oblivious=True),
}
# (owner, attribute) of every swapped name: what tests check is the original again after the block
SWAPPED = ((box_ops, "batched_nms"), (GeneralizedRCNNTransform, "batch_images"), (det_utils.BoxCoder, "decode"),
           (poolers, "_multiscale_roi_align"), (AnchorGenerator, "grid_anchors"), (AnchorGenerator, "set_cell_anchors"),
           (torch.nn.functional, "batch_norm"))


@contextlib.contextmanager
def export_patches(names: tuple[str, ...] | None = None) -> Iterator[None]:
    """Every patch in ``PATCHES`` (or those named), entered in order and undone in reverse on exit, whatever
    happens inside."""
    chosen = tuple(PATCHES) if names is None else names
    unknown = [n for n in chosen if n not in PATCHES]
    if unknown:
        raise KeyError(f"unknown export patch(es) {unknown}; known: {', '.join(PATCHES)}")
    with contextlib.ExitStack() as stack:
        for name in chosen:
            stack.enter_context(PATCHES[name]())
        yield


__all__ = ["PATCHES", "SWAPPED", "export_patches"]
