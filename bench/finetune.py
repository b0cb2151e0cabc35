"""Benchmark 3: fine-tuning beats training from scratch, reproduced without downloadable weights.

    python -m bench.finetune --pretrain-images 600 --pretrain-epochs 3 --small-epochs 8 --threads 1

1. Pretrain ``maskrcnn_light`` on a large synthetic shapes set (circle, square, triangle).
2. On a small set like Penn-Fudan (170 train images) with *different* classes (star, hexagon, cross), train
   (a) from the pretrained checkpoint with every class-dependent head replaced, and (b) from scratch, for the same
   number of epochs (and so about the same time). Report bbox and mask AP of both on the small set's val split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.common import RESULTS, peak_rss_mb, table, write_json
from detdemo.data.shapes import ShapesConfig, generate_shapes
from detdemo.engine.config import TrainConfig
from detdemo.engine.trainer import fit


def run(data: Path, out: Path, epochs: int, weights: str | None, lr: float, size: int) -> None:
    """Train one stage; ``report`` reads its figures back from metrics.jsonl (stages may run in other processes)."""
    cfg = TrainConfig(data=str(data), model="maskrcnn_light", out=str(out), epochs=epochs, batch_size=4, lr=lr,
                      min_size=size, max_size=size * 4 // 3,
                      weight_decay=1e-4, schedule="cosine", warmup_iters=30, weights=weights, workers=1, clip_grad=10.0,
                      eval_every=max(epochs // 3, 1), seed=0)
    fit(cfg, progress=False)


def report(work: Path, name: str, out: str) -> dict:
    rows = [json.loads(x) for x in (work / out / "metrics.jsonl").read_text().splitlines()]
    final = rows[-1]
    minutes = sum(r["train_time_s"] + r.get("eval_time_s", 0) for r in rows) / 60
    return {"run": name, "epochs": final["epoch"], "minutes": round(minutes, 2), "bbox_AP": final["bbox_AP"],
            "bbox_AP50": final["bbox_AP50"], "segm_AP": final["segm_AP"], "segm_AP50": final["segm_AP50"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pretrain-images", type=int, default=1200)
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--small-epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-side", type=int, default=160, help="synthetic image sides (pixels)")
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--size", type=int, default=192, help="model min_size")
    p.add_argument("--work", default=str(RESULTS / "finetune_work"))
    p.add_argument("--stages", default="pretrain,finetuned,scratch,report",
                   help="comma-separated subset, e.g. 'finetuned' and 'scratch' in two processes, then 'report'")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    big, small = work / "shapes_big", work / "shapes_small"
    sides = {"min_side": args.min_side, "max_side": args.max_side}
    if not big.exists():
        generate_shapes(big, args.pretrain_images, 100, seed=1, progress=False, cfg=ShapesConfig(**sides))
    if not small.exists():
        generate_shapes(small, 170, 50, seed=2, progress=False,
                        cfg=ShapesConfig(classes=("star", "hexagon", "cross"), **sides))
    stages = args.stages.split(",")
    if "pretrain" in stages:
        run(big, work / "pretrain", args.pretrain_epochs, None, 0.02, args.size)
    if "finetuned" in stages:
        run(small, work / "finetuned", args.small_epochs,
            str(work / "pretrain" / "best.pt"), 0.01, args.size)
    if "scratch" in stages:
        run(small, work / "scratch", args.small_epochs, None, 0.02, args.size)
    if "report" not in stages:
        return
    pre, ft, sc = (report(work, n, o) for n, o in (("pretrain (big shapes set)", "pretrain"),
                                                     ("fine-tuned (heads replaced)", "finetuned"),
                                                     ("from scratch", "scratch")))
    rows = [pre, ft, sc]
    print(table(rows, ["run", "epochs", "minutes", "bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"]))
    print(f"fine-tuned / scratch: bbox AP x{ft['bbox_AP'] / max(sc['bbox_AP'], 1e-9):.2f}, "
          f"mask AP x{ft['segm_AP'] / max(sc['segm_AP'], 1e-9):.2f}")
    print(f"wrote {write_json('finetune', {'runs': rows, 'peak_rss_mb': round(peak_rss_mb())})}")


if __name__ == "__main__":
    main()
