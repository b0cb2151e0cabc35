"""``detdemo eval``: COCO metrics (pycocotools) of a checkpoint on a dataset split."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="COCO bbox (and segm) metrics of a checkpoint on a dataset")
    p.add_argument("--checkpoint", required=True, help="detdemo checkpoint (or a run folder)")
    p.add_argument("--data", required=True)
    p.add_argument("--layout", choices=("coco", "voc", "pennfudan"))
    p.add_argument("--split", default="val", help="train, val or all")
    p.add_argument("--val-fraction", type=float, default=0.2, help="hold-out for datasets without splits")
    p.add_argument("--seed", type=int, default=0, help="hold-out seed (use the training run's)")
    p.add_argument("--out", default=None, help="JSON report (default: eval_<split>.json beside the checkpoint)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detdemo.checkpoint import load_checkpoint, model_from_checkpoint
    from detdemo.data import open_dataset
    from detdemo.engine.distributed import DistInfo, pick_device
    from detdemo.engine.evaluate import evaluate_model

    data = load_checkpoint(args.checkpoint)
    model, cfg = model_from_checkpoint(data)
    device = pick_device(args.device, DistInfo())
    dataset = open_dataset(args.data, args.split, args.layout, classes=cfg.class_names,
                           val_fraction=args.val_fraction, seed=args.seed)
    result = evaluate_model(model.to(device), dataset, device)
    for iou_type, text in result.summary.items():
        print(f"\n{iou_type} ({result.num_images} images, {result.num_detections} detections)\n{text}")
    print(per_class_table(result.per_class))
    out = Path(args.out) if args.out else Path(data["path"]).parent / f"eval_{args.split}.json"
    out.write_text(json.dumps({"checkpoint": data["path"], "data": str(args.data), "split": args.split,
                               **result.to_dict()}, indent=2))
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
