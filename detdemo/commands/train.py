"""``detdemo train``: fine-tune or train from scratch, evaluating every epoch (also under torchrun)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a detector (fine-tune or from scratch) with per-epoch COCO evaluation",
                       description="Train on --data; writes metrics.jsonl, curves.png, last.pt and best.pt to "
                                   "--out. Multi-GPU / multi-node: torchrun --nproc_per_node=N -m detdemo train ...")
    p.add_argument("--data", help="dataset path (COCO json/folder, VOC root, Penn-Fudan root)")
    p.add_argument("--layout", choices=("coco", "voc", "pennfudan"), help="override layout detection")
    p.add_argument("--model", default="maskrcnn_light", help="architecture (see `detdemo models`)")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    p.add_argument("--resume", default=None, help="continue the run in this folder (or its last.pt)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="default 0.005 (SGD) or 1e-4 (AdamW)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=None, help="default 5e-4 (SGD) or 0.05 (AdamW)")
    p.add_argument("--schedule", choices=("step", "cosine"), default="step")
    p.add_argument("--step-size", type=int, default=3, help="epochs between lr drops (step schedule)")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--warmup-iters", type=int, default=1000, help="linear warm-up (capped at one epoch)")
    p.add_argument("--scale-lr", action="store_true", help="scale lr by total batch size / 2 (the tutorial's)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    p.add_argument("--clip-grad", type=float, default=None, help="max gradient norm")
    p.add_argument("--no-aspect-ratio-group", action="store_true", help="do not batch images by orientation")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default="auto",
                   help="auto (COCO weights when torchvision has them), none, DEFAULT, an enum name, or a file")
    p.add_argument("--weights-backbone", default=None, help="DEFAULT (ImageNet) or a file")
    p.add_argument("--trainable-backbone-layers", type=int, default=None)
    p.add_argument("--min-size", type=int, default=None)
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model option, repeatable: thresholds (box_score_thresh=0.3), detections per image, "
                        "or an architecture's own (maskrcnn_light: representation_size, mask_channels)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="hold-out for datasets without splits")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--max-iters-per-epoch", type=int, default=None, help="cap iterations (smoke runs)")
    p.add_argument("--time-limit-min", type=float, default=None,
                   help="stop after the epoch in which this many minutes have passed (that epoch is evaluated)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detdemo.engine.config import TrainConfig
    from detdemo.engine.trainer import Trainer
    from detdemo.errors import DetDemoError

    if args.resume:  # the run's recorded config, with only run-time settings (and more epochs) changeable
        overrides = {"workers": args.workers, "device": args.device}
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        trainer = Trainer(None, resume=args.resume, progress=not args.quiet, overrides=overrides)
        return _finish(trainer)
    if not args.data:
        raise DetDemoError("--data is required (or --resume a run)")
    cfg = TrainConfig(
        data=args.data or "", model=args.model, out=args.out or args.resume or f"runs/{args.model}",
        layout=args.layout, val_fraction=args.val_fraction, epochs=args.epochs or 10, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        schedule=args.schedule, step_size=args.step_size, gamma=args.gamma, warmup_iters=args.warmup_iters,
        scale_lr=args.scale_lr, amp=args.amp, clip_grad=args.clip_grad,
        aspect_ratio_group=not args.no_aspect_ratio_group, workers=args.workers, seed=args.seed,
        weights=args.weights, weights_backbone=args.weights_backbone,
        trainable_backbone_layers=args.trainable_backbone_layers, min_size=args.min_size, max_size=args.max_size,
        augment=not args.no_augment, eval_every=args.eval_every, max_iters_per_epoch=args.max_iters_per_epoch,
        time_limit_min=args.time_limit_min, model_kwargs=parse_model_args(args.model_arg),
        device=args.device,
    )
    return _finish(Trainer(cfg, progress=not args.quiet))


def parse_model_args(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs; values read as JSON when they parse (numbers, lists), else kept as text."""
    from detdemo.errors import DetDemoError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DetDemoError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _finish(trainer) -> int:
    out = trainer.fit()
    if trainer.info.is_main:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1]) if lines else {}
        ap = last.get("bbox_AP")
        print(f"done: {out} (last epoch bbox AP {ap:.3f})" if ap is not None else f"done: {out}")
    return 0
