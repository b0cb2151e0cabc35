"""``detdemo eval``: COCO metrics (pycocotools) of any model file on a dataset split."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from detdemo.commands.common import add_model_options


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="COCO bbox (and segm) metrics of a model (any backend) on a dataset")
    add_model_options(p)
    p.add_argument("--data", required=True)
    p.add_argument("--layout", choices=("coco", "voc", "pennfudan"))
    p.add_argument("--split", default="val", help="train, val or all")
    p.add_argument("--val-fraction", type=float, default=0.2, help="hold-out for datasets without splits")
    p.add_argument("--seed", type=int, default=0, help="hold-out seed (use the training run's)")
    p.add_argument("--out", default=None, help="JSON report (default: eval_<split>.json in the current folder)")
    p.set_defaults(func=run)


def evaluate(predictor, data: str, split: str = "val", layout: str | None = None, val_fraction: float = 0.2,
             seed: int = 0, progress: bool = True):
    """The figures ``detdemo eval`` prints, for a predictor: shared with check-export's accuracy check."""
    from detdemo.data import eval_transforms, open_dataset
    from detdemo.engine.evaluate import evaluate_predictor

    dataset = open_dataset(data, split, layout, eval_transforms(), classes=predictor.class_names,
                           val_fraction=val_fraction, seed=seed)
    return evaluate_predictor(predictor, dataset, progress=progress)


def run(args: argparse.Namespace) -> int:
    from detdemo.commands.common import check_writable, load_from_args
    from detdemo.fileio import write_json

    out = Path(args.out) if args.out else Path.cwd() / f"eval_{args.split}.json"
    check_writable(out, what="the report")  # before the model runs, not after
    predictor = load_from_args(args)
    result = evaluate(predictor, args.data, args.split, args.layout, args.val_fraction, args.seed)
    label = f"{predictor.backend} on {predictor.device}"
    for iou_type, text in result.summary.items():
        print(f"\n{iou_type} ({result.num_images} images, {result.num_detections} detections, {label})\n{text}")
    print(per_class_table(result.per_class))
    write_json(out, {"model": str(predictor.path), "backend": predictor.backend, "device": predictor.device,
                     "data": str(args.data), "split": args.split, **result.to_dict()})
    print(f"\nwrote {out}")
    return 0


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    types = list(per_class)
    if not types:
        return ""
    names = list(per_class[types[0]])
    width = max([len(n) for n in names] + [5])
    lines = ["", f"{'class':<{width}}  " + "  ".join(f"{t + ' AP':>8}" for t in types)]
    for n in names:
        cells = []
        for t in types:
            v = per_class[t].get(n, math.nan)
            cells.append(f"{'—' if math.isnan(v) else f'{v:.3f}':>8}")
        lines.append(f"{n:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
