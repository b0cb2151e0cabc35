"""``detdemo train``: fine-tune or train from scratch, evaluating every epoch (also under torchrun).

Its options are generated from ``TrainConfig`` (detdemo.engine.config), where each is declared once.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    from detdemo.engine.config import add_train_options

    p = sub.add_parser("train", help="train a detector (fine-tune or from scratch) with per-epoch COCO evaluation",
                       description="Train on --data; writes metrics.jsonl, curves.png, last.pt and best.pt to "
                                   "--out. Multi-GPU / multi-node: torchrun --nproc_per_node=N -m detdemo train ...")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue the run in this folder (or its last.pt) with its recorded settings; only "
                        "--epochs, --workers and --device may be given with it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detdemo.engine.config import TrainConfig, given_options, resume_overrides
    from detdemo.engine.trainer import Trainer
    from detdemo.errors import DetDemoError

    given = given_options(args)
    if args.resume:
        recorded = Trainer.recorded_config(args.resume)
        trainer = Trainer(None, resume=args.resume, progress=not args.quiet,
                          overrides=resume_overrides(given, recorded))
        return _finish(trainer)
    if not given.get("data"):
        raise DetDemoError("--data is required (or --resume a run)")
    return _finish(Trainer(TrainConfig(**given), progress=not args.quiet))


def _finish(trainer) -> int:
    out = trainer.fit()
    if trainer.info.is_main:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1]) if lines else {}
        ap = last.get("bbox_AP")
        print(f"done: {out} (last epoch bbox AP {ap:.3f})" if ap is not None else f"done: {out}")
    return 0
