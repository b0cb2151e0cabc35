"""``detdemo eval``: COCO metrics (pycocotools) of any model file on a dataset split, and pictures of them.

The pictures (precision-recall curves, confusion matrix, per-class AP, a gallery of the worst images, and
``pictures.json`` with their numbers) go into a folder beside the JSON report, named like it without ``.json``:
``eval_val.json`` -> ``eval_val/`` (``detdemo.engine.eval_pictures.pictures_dir``)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from detdemo.commands.common import add_model_options
from detdemo.engine.eval_pictures import DEFAULT_SCORE_THRESHOLD


def add_parser(sub) -> None:
    from detdemo.data.layout import LAYOUTS

    p = sub.add_parser("eval", help="COCO bbox (and segm) metrics of a model (any backend) on a dataset")
    add_model_options(p)
    p.add_argument("--data", required=True)
    p.add_argument("--layout", choices=LAYOUTS)
    p.add_argument("--split", default="val", help="train, val or all")
    p.add_argument("--val-fraction", type=float, default=0.2, help="hold-out for datasets without splits")
    p.add_argument("--seed", type=int, default=0, help="hold-out seed (use the training run's)")
    p.add_argument("--out", default=None, help="JSON report (default: eval_<split>.json in the current folder); "
                                               "the pictures go into a folder beside it, named like it without .json")
    p.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                   help="the confusion matrix's and gallery's score threshold (AP uses every detection; default "
                        f"{DEFAULT_SCORE_THRESHOLD})")
    p.add_argument("--no-pictures", action="store_true", help="write the JSON report only")
    p.set_defaults(func=run)


def eval_dataset(predictor, data: str, split: str = "val", layout: str | None = None, val_fraction: float = 0.2,
                 seed: int = 0):
    """The split ``detdemo eval`` measures, with the predictor's classes."""
    from detdemo.data import eval_transforms, open_dataset

    return open_dataset(data, split, layout, eval_transforms(), classes=predictor.class_names,
                        val_fraction=val_fraction, seed=seed)


def evaluate(predictor, data: str, split: str = "val", layout: str | None = None, val_fraction: float = 0.2,
             seed: int = 0, progress: bool = True):
    """The figures ``detdemo eval`` prints, for a predictor: shared with check-export's accuracy check."""
    from detdemo.engine.evaluate import evaluate_predictor

    dataset = eval_dataset(predictor, data, split, layout, val_fraction, seed)
    return evaluate_predictor(predictor, dataset, progress=progress)


def run(args: argparse.Namespace) -> int:
    from detdemo.commands.common import check_writable, load_from_args
    from detdemo.engine.eval_pictures import pictures_dir, write_pictures
    from detdemo.engine.evaluate import evaluate_predictor
    from detdemo.errors import DetDemoError
    from detdemo.fileio import write_json

    if not 0.0 <= args.score_threshold <= 1.0:
        raise DetDemoError(f"--score-threshold {args.score_threshold}: must be between 0 and 1")
    out = Path(args.out) if args.out else Path.cwd() / f"eval_{args.split}.json"
    check_writable(out, what="the report")  # before the model runs, not after
    predictor = load_from_args(args)
    dataset = eval_dataset(predictor, args.data, args.split, args.layout, args.val_fraction, args.seed)
    result = evaluate_predictor(predictor, dataset)
    label = f"{predictor.backend} on {predictor.device}"
    for iou_type, text in result.summary.items():
        print(f"\n{iou_type} ({result.num_images} images, {result.num_detections} detections, {label})\n{text}")
    print(per_class_table(result.per_class))
    report = {"model": str(predictor.path), "backend": predictor.backend, "device": predictor.device,
              "data": str(args.data), "split": args.split, **result.to_dict()}
    if not args.no_pictures:
        folder = pictures_dir(out)
        numbers = write_pictures(result, folder, dataset, args.score_threshold)
        report["pictures"] = folder.name
        print(f"\npictures: {folder}/ ({', '.join(numbers.files.values())}, {len(numbers.gallery)} in gallery/; "
              f"confusion matrix at score >= {args.score_threshold:g})")
    write_json(out, report)
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
