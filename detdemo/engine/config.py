"""Training configuration, declared once: the dataclass is what ``detdemo train`` records and resumes from, and its
field metadata generates the command-line options (``add_train_options``), so a new option is one field here.

Fields marked ``resume=True`` may change when a run is resumed (more epochs, another device); every other setting
is the run's own, and giving it with ``--resume`` is refused rather than silently ignored.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from detdemo.data.layout import LAYOUTS
from detdemo.errors import DetDemoError

TUTORIAL_BATCH = 2  # the tutorial's lr 0.005 goes with batch 2; --scale-lr scales from there


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else positive_float(text)


def model_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value read as JSON when it parses (numbers, lists), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def option(default: Any = MISSING, help: str = "", *, parse=None, choices=None, flag: str | None = None,
           resume: bool = False, cli: bool = True, factory=None, metavar: str | None = None) -> Any:
    """A TrainConfig field and its command-line option in one declaration."""
    meta = {"help": help, "parse": parse, "choices": choices, "flag": flag, "resume": resume, "cli": cli,
            "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    data: str = option(help="dataset path (COCO json/folder, VOC root, Penn-Fudan root)")
    model: str = option("maskrcnn_light", "architecture (see `detdemo models`)")
    out: str = option("", "run folder (default runs/<model>)")
    layout: str | None = option(None, "override layout detection", choices=LAYOUTS)
    val_fraction: float = option(0.2, "hold-out for datasets without splits", parse=fraction)
    epochs: int = option(10, "epochs to train (with --resume: the new total)", parse=positive_int, resume=True)
    batch_size: int = option(2, "images per step and process", parse=positive_int)
    optimizer: str = option("sgd", "optimiser", choices=("sgd", "adamw"))
    lr: float | None = option(None, "learning rate; default 0.005 (SGD) or 1e-4 (AdamW)", parse=positive_float)
    momentum: float = option(0.9, "SGD momentum", parse=non_negative_float)
    weight_decay: float | None = option(None, "default 5e-4 (SGD) or 0.05 (AdamW)", parse=non_negative_float)
    schedule: str = option("step", "learning-rate schedule after warm-up", choices=("step", "cosine"))
    step_size: int = option(3, "epochs between lr drops (step schedule)", parse=positive_int)
    gamma: float = option(0.1, "lr factor at each drop (step schedule)", parse=positive_float)
    warmup_iters: int = option(1000, "linear warm-up iterations (capped at one epoch)", parse=non_negative_int)
    warmup_factor: float = option(0.001, cli=False)
    scale_lr: bool = option(False, "scale lr by total batch size / 2 (the tutorial's)")
    amp: bool = option(False, "mixed precision: fp16 on CUDA, bf16 on CPUs that support it")
    clip_grad: float | None = option(None, "max gradient norm", parse=positive_float)
    aspect_ratio_group: bool = option(True, "do not batch images by orientation", flag="--no-aspect-ratio-group")
    workers: int = option(2, "data loader worker processes", parse=non_negative_int, resume=True)
    seed: int = option(0, "random seed (also the hold-out split's)", parse=int)
    deterministic: bool = option(False, cli=False)
    weights: str | None = option("auto", "auto (COCO weights when torchvision has them), none, DEFAULT, an enum "
                                 "name, or a file")
    weights_backbone: str | None = option(None, "DEFAULT (ImageNet) or a file")
    trainable_backbone_layers: int | None = option(None, "backbone blocks to train when fine-tuning",
                                                   parse=non_negative_int)
    min_size: int | None = option(None, "shorter side the model resizes to", parse=positive_int)
    max_size: int | None = option(None, "longest side the model resizes to at most", parse=positive_int)
    augment: bool = option(True, "train without augmentation", flag="--no-augment")
    eval_every: int = option(1, "evaluate every N epochs (and after the last)", parse=positive_int)
    max_iters_per_epoch: int | None = option(None, "cap iterations (smoke runs)", parse=positive_int)
    time_limit_min: float | None = option(None, "stop after the epoch in which this many minutes have passed "
                                          "(that epoch is evaluated)", parse=positive_float)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", resume=True)
    model_kwargs: dict = option(help="extra model option, repeatable: thresholds (box_score_thresh=0.3), "
                                "detections per image, or an architecture's own (maskrcnn_light: "
                                "representation_size, mask_channels)", flag="--model-arg", parse=model_arg,
                                factory=dict, metavar="KEY=VALUE")

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise DetDemoError(f"unknown optimizer {self.optimizer!r}; choose sgd or adamw")
        if self.schedule not in ("step", "cosine"):
            raise DetDemoError(f"unknown schedule {self.schedule!r}; choose step or cosine")
        if self.epochs < 1 or self.batch_size < 1:
            raise DetDemoError("epochs and batch size must be >= 1")
        if self.lr is None:
            self.lr = 0.005 if self.optimizer == "sgd" else 1e-4
        if self.weight_decay is None:
            self.weight_decay = 5e-4 if self.optimizer == "sgd" else 0.05
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise DetDemoError(f"learning rate must be a finite number above 0, got {self.lr}")
        if not self.out:
            self.out = f"runs/{self.model}"

    def effective_lr(self, world_size: int) -> float:
        if not self.scale_lr:
            return float(self.lr)
        return float(self.lr) * self.batch_size * world_size / TUTORIAL_BATCH

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One option per CLI field of TrainConfig. Defaults are left out of the namespace (SUPPRESS), so that
    ``given_options`` knows exactly what the user typed; the dataclass supplies the defaults."""
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default_text = "" if f.default in (MISSING, None, "") else f" (default {f.default})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": meta["help"] + default_text}
        if f.type == "bool":
            kw["action"] = "store_false" if f.default else "store_true"
            kw["help"] = meta["help"]
        elif f.type == "dict":
            kw.update(action="append", type=meta["parse"], metavar=meta["metavar"])
        else:
            if meta.get("parse"):
                kw["type"] = meta["parse"]
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
        parser.add_argument(_flag(f), **kw)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the user set on the command line, converted to field values."""
    out = {}
    for f in fields(TrainConfig):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            out[f.name] = dict(value) if f.type == "dict" else value
    return out


def resume_overrides(given: dict[str, Any], recorded: dict) -> dict[str, Any]:
    """What ``--resume`` takes from the command line; anything else the user gave is refused, naming it."""
    honoured = {f.name for f in fields(TrainConfig) if f.metadata.get("resume")}
    flags = {f.name: _flag(f) for f in fields(TrainConfig)}
    refused = sorted(k for k in given if k not in honoured)
    if refused:
        parts = [f"{flags[k]} (the run has {k}={recorded.get(k)!r})" for k in refused]
        allowed = ", ".join(flags[k] for k in sorted(honoured))
        raise DetDemoError(f"--resume continues a run with its recorded settings; cannot change {', '.join(parts)}. "
                           f"With --resume only {allowed} may be given; start a new run (--out) to change others")
    return {k: v for k, v in given.items() if k in honoured}
