"""Benchmark 2: a light Faster R-CNN trained from scratch on real microscope images (BCCD), on this CPU.

    python -m bench.bccd_scratch --epochs 12 --threads 1 --time-limit-min 45

Trains ``fasterrcnn_light`` with ``detdemo``'s trainer on BCCD's train split (205 images), evaluates on its val
split (87 images) with pycocotools, and reports wall time, bbox AP, AP50 and per-class AP.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.common import RESULTS, SHARED, peak_rss_mb, table, write_json
from detdemo.engine.config import TrainConfig
from detdemo.engine.trainer import fit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=3)
    p.add_argument("--min-size", type=int, default=384, help="shorter side fed to the model (BCCD is 640x480)")
    p.add_argument("--time-limit-min", type=float, default=45.0, help="stop after the epoch that crosses this")
    p.add_argument("--out", default=str(RESULTS / "bccd_scratch_run"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=str(SHARED / "BCCD"), model="fasterrcnn_light", out=args.out, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=1e-4, schedule="cosine",
                      warmup_iters=100, weights=None, workers=1, eval_every=args.eval_every, seed=0,
                      min_size=args.min_size, max_size=args.min_size * 4 // 3, clip_grad=10.0,
                      time_limit_min=args.time_limit_min)
    t0 = time.perf_counter()
    out = fit(cfg, progress=False)
    minutes = (time.perf_counter() - t0) / 60
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    final = rows[-1]
    summary = {"epochs_planned": args.epochs, "epochs_run": final["epoch"], "wall_minutes": round(minutes, 2),
               "bbox_AP": final["bbox_AP"],
               "bbox_AP50": final["bbox_AP50"], "bbox_AP75": final["bbox_AP75"],
               "per_class_AP": final["per_class_AP"]["bbox"], "s_per_iter": final["s_per_iter"],
               "peak_rss_mb": round(peak_rss_mb()), "config": cfg.to_dict(),
               "curve": [{k: r.get(k) for k in ("epoch", "loss", "bbox_AP", "bbox_AP50")} for r in rows]}
    print(table([{"model": "fasterrcnn_light (scratch)", "epochs": final["epoch"], "minutes": round(minutes, 1),
                  "AP": final["bbox_AP"], "AP50": final["bbox_AP50"], "AP75": final["bbox_AP75"],
                  **{f"AP {k}": v for k, v in final["per_class_AP"]["bbox"].items()}}],
                ["model", "epochs", "minutes", "AP", "AP50", "AP75",
                 *[f"AP {k}" for k in final["per_class_AP"]["bbox"]]]))
    print(f"wrote {write_json('bccd_scratch', summary)}")


if __name__ == "__main__":
    main()
