"""``torch.export`` of a detdemo model's graph: the ExportedProgram the dynamo ONNX, ``.pt2`` and AOTInductor
formats are all made from.

The graph is what every exporter exports (``detdemo.inference.pipeline.graph_model``): one normalised, resized
``float32 [3, h, w]`` image in, a tuple of per-family outputs out (``Family.outputs``), boxes in the resized frame.
Height and width are dynamic (``torch.export.Dim``) over every size the model's transform produces: up to its
``max_size`` on either side, down to one pixel (an extreme aspect ratio); SSD models resize to a fixed square and
export with that static size. Detection counts are data-dependent, as in eager.

Tracing runs inside ``export.patches.export_patches()`` (scoped, named patches; eager code is untouched outside).
Before tracing, the wrapper runs once eagerly on the example image: ``MultiScaleRoIAlign`` sets its level scales
on its first call, as eager inference does, and they enter the graph as constants instead of being derived from
symbolic sizes (which would specialise the export to the example's size).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from detdemo.models import ModelConfig, get_spec
from export.errors import ExportError, first_line
from export.patches import export_patches
from export.wrappers import OnnxDetector, autocast_parts

# Families torch.export cannot trace yet, and why: the one place that decides the default ONNX exporter (legacy
# for these, dynamo for the rest) and where the pt2/aoti formats refuse them (tests hold a strict xfail per entry,
# which turns red the day the family exports).
BLOCKED_FAMILIES: dict[str, str] = {
    "keypoint_rcnn": ("torchvision's heatmaps_to_keypoints loops in Python over the detections and upsamples each "
                      "RoI's heatmaps to a size read from the data (F.interpolate(size=(int(h.item()), "
                      "int(w.item())))): torch.export cannot trace a loop over a data-dependent count, and a "
                      "torch.while_loop rewrite fails in torch 2.14.1 on .item() inside the loop body (\"Cannot cast "
                      "FakeTensor to number\")"),
}
EXPORTER = "torch.export.export(strict=False)"


def blocked_reason(arch: str) -> str | None:
    """Why ``arch``'s family cannot go through torch.export (None: it can)."""
    return BLOCKED_FAMILIES.get(get_spec(arch).family)


def example_size(model: nn.Module) -> tuple[int, int]:
    """A typical resized input (height, width): the fixed square, or min_size by 4/3 of it."""
    t = model.transform
    if t.fixed_size:
        return int(t.fixed_size[1]), int(t.fixed_size[0])
    side = int(t.min_size[-1])
    return side, min(side * 4 // 3, int(t.max_size))


def dynamic_shapes(model: nn.Module) -> dict | None:
    """Height and width over every size the transform makes (None: a fixed-size model, static)."""
    t = model.transform
    if t.fixed_size:
        return None
    limit = int(t.max_size)
    return {"image": {1: torch.export.Dim("height", min=1, max=limit), 2: torch.export.Dim("width", min=1, max=limit)}}


def graph_wrapper(model: nn.Module, arch: str, onnx_rewrites: bool = False, precision: str = "fp32") -> nn.Module:
    """The graph as a module of one image -> tuple of outputs. ``onnx_rewrites``: the rewrites that speed up
    the ONNX runtimes, exact up to float rounding (``export.wrappers.OnnxDetector``); without them the graph holds
    the original modules, so a ``.pt2`` computes exactly what eager computes. ``precision`` "bf16": the backbone
    and heads run under CPU bf16 autocast, everything between them in float32 (``export.wrappers.autocast_parts``)."""
    wrapper = OnnxDetector(model.eval(), get_spec(arch).family_info.outputs, onnx_rewrites=onnx_rewrites).eval()
    if precision == "bf16":
        autocast_parts(wrapper.model)  # the wrapper's own copy of the model
    elif precision != "fp32":
        raise ValueError(f"graph precision must be fp32 or bf16, got {precision!r}")
    return wrapper


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """torch.export's advice on the console (guards it added, "specializing" notes) is for PyTorch developers; the
    outcome is either a program or an ExportError that says what failed."""
    import logging

    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes",
                                              "torch._dynamo", "torch._subclasses.fake_tensor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_program(model: nn.Module, cfg: ModelConfig, onnx_rewrites: bool = False,
                   example_hw: tuple[int, int] | None = None, attempt_blocked: bool = False,
                   precision: str = "fp32") -> torch.export.ExportedProgram:
    """The model's graph as an ExportedProgram on the CPU (``torch.export.passes.move_to_device_pass`` moves it).
    A family in ``BLOCKED_FAMILIES`` is refused with the reason unless ``attempt_blocked`` (tests that must notice
    the day it exports). ``precision``: as in ``graph_wrapper``."""
    reason = blocked_reason(cfg.arch)
    if reason and not attempt_blocked:
        family = get_spec(cfg.arch).family
        raise ExportError(f"{cfg.arch}: torch.export cannot export the {family} family yet: {reason}")
    wrapper = graph_wrapper(model, cfg.arch, onnx_rewrites, precision)
    example = torch.rand(3, *(example_hw or example_size(model)), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad(), _quiet_export():
            wrapper(example)  # sets MultiScaleRoIAlign's level scales, as eager inference's first image does
            with export_patches():
                return torch.export.export(wrapper, (example,), dynamic_shapes=dynamic_shapes(model), strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types
        raise ExportError(f"{cfg.arch}: torch.export failed ({first_line(exc)})") from None


__all__ = ["BLOCKED_FAMILIES", "EXPORTER", "blocked_reason", "dynamic_shapes", "export_program", "graph_wrapper"]
