"""Benchmark 3: fine-tuning beats training from scratch, reproduced without downloadable weights.

    python -m bench.finetune --stages pretrain
    python -m bench.finetune --stages finetuned & python -m bench.finetune --stages scratch; wait
    python -m bench.finetune --stages amp        # optional: the fine-tuned arm again under --amp (bf16)
    python -m bench.finetune --stages report
    python -m bench.finetune --stages pretrain,finetuned,amp,amp-report --lrs 0.003 --seeds 0 1 2
                                                 # bf16 vs fp32 alone: both on the same seeds, one pretrain

1. Pretrain ``maskrcnn_light`` on a large synthetic shapes set (circle, square, triangle).
2. On a small set like Penn-Fudan (170 train images) with *different* classes (star, hexagon, cross), train two
   arms for the same number of epochs: (a) from the pretrained checkpoint with every class-dependent head replaced,
   (b) from scratch. Each arm gets the same treatment: a learning-rate sweep on seed 0 (``--lrs``), then its best
   lr re-run on the other seeds (``--seeds``). Report each arm's bbox and mask AP on the small set's val split as
   mean ± standard deviation over seeds (and min-max), and the ratio of the means.

The sweep picks the lr by the same val split that is reported, for both arms alike: the comparison is fair, the
absolute figures slightly optimistic. Stages write their runs under ``--work``; ``report`` reads them back.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from bench.common import RESULTS, table, write_json
from detdemo.data.shapes import ShapesConfig, generate_shapes
from detdemo.engine.config import TrainConfig
from detdemo.engine.trainer import fit

ARMS = ("finetuned", "scratch")


def train(data: Path, out: Path, epochs: int, weights: str | None, lr: float, size: int, seed: int,
          amp: bool = False) -> dict:
    """One training run (skipped when already finished); returns its last metrics line."""
    metrics = out / "metrics.jsonl"
    if not (metrics.exists() and len(metrics.read_text().splitlines()) >= epochs):
        cfg = TrainConfig(data=str(data), model="maskrcnn_light", out=str(out), epochs=epochs, batch_size=4, lr=lr,
                          optimizer="adamw", min_size=size, max_size=size * 4 // 3, weight_decay=1e-4,
                          schedule="cosine", warmup_iters=30, weights=weights, workers=1, clip_grad=10.0,
                          eval_every=epochs, seed=seed, amp=amp)
        if out.exists():
            import shutil

            shutil.rmtree(out)  # an interrupted run starts over
        fit(cfg, progress=False)
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    minutes = sum(r["train_time_s"] + r.get("eval_time_s", 0) for r in rows) / 60
    return {**rows[-1], "minutes": round(minutes, 2)}


def run_arm(arm: str, work: Path, small: Path, args) -> None:
    weights = str(work / "pretrain" / "best.pt") if arm == "finetuned" else None
    sweep = {lr: train(small, work / f"{arm}_lr{lr}_seed{args.seeds[0]}", args.small_epochs, weights, lr, args.size,
                       args.seeds[0]) for lr in args.lrs}
    best = max(sweep, key=lambda lr: sweep[lr]["bbox_AP"])
    for seed in args.seeds[1:]:
        train(small, work / f"{arm}_lr{best}_seed{seed}", args.small_epochs, weights, best, args.size, seed)


def run_amp(work: Path, small: Path, args) -> None:
    """The fine-tuned arm at its best lr under --amp (bf16 autocast on this CPU), on every seed."""
    best = best_lr("finetuned", work, args)
    for seed in args.seeds:
        train(small, work / f"finetuned_amp_lr{best}_seed{seed}", args.small_epochs, str(work / "pretrain" / "best.pt"),
              best, args.size, seed, amp=True)


def best_lr(arm: str, work: Path, args) -> float:
    sweep = {lr: json.loads((work / f"{arm}_lr{lr}_seed{args.seeds[0]}" / "metrics.jsonl").read_text()
                            .splitlines()[-1]) for lr in args.lrs}
    return max(sweep, key=lambda lr: sweep[lr]["bbox_AP"])


def amp_summary(work: Path, args) -> dict | None:
    best = best_lr("finetuned", work, args)
    runs = {"fp32": [work / f"finetuned_lr{best}_seed{s}" for s in args.seeds],
            "bf16": [work / f"finetuned_amp_lr{best}_seed{s}" for s in args.seeds]}
    if not all((r / "metrics.jsonl").exists() for r in runs["bf16"]):
        return None
    out = {}
    for name, folders in runs.items():
        last = [json.loads((f / "metrics.jsonl").read_text().splitlines()[-1]) for f in folders]
        # AP only: the fp32 runs shared the cores with the other arm, so their speed is not comparable here
        # (bench.throughput measures --amp speed on identical batches)
        out[name] = {k: [r[k] for r in last] for k in ("bbox_AP", "segm_AP")}
    return out


def summarise(arm: str, work: Path, args) -> dict:
    sweep = {lr: json.loads((work / f"{arm}_lr{lr}_seed{args.seeds[0]}" / "metrics.jsonl").read_text()
                            .splitlines()[-1]) for lr in args.lrs}
    best = max(sweep, key=lambda lr: sweep[lr]["bbox_AP"])
    runs = [train(Path(), work / f"{arm}_lr{best}_seed{s}", args.small_epochs, None, best, args.size, s)
            for s in args.seeds]

    def spread(key: str) -> dict:
        values = [r[key] for r in runs]
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values), "values": values}

    return {"arm": arm, "lr": best, "sweep_bbox_AP": {str(k): v["bbox_AP"] for k, v in sweep.items()},
            "bbox_AP": spread("bbox_AP"), "segm_AP": spread("segm_AP"),
            "minutes_per_run": statistics.mean(r["minutes"] for r in runs)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pretrain-images", type=int, default=600)
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--small-epochs", type=int, default=3)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-side", type=int, default=112, help="synthetic image sides (pixels)")
    p.add_argument("--max-side", type=int, default=160)
    p.add_argument("--size", type=int, default=128, help="model min_size")
    p.add_argument("--work", default=str(RESULTS / "finetune_work"))
    p.add_argument("--stages", default="pretrain,finetuned,scratch,report",
                   help="comma-separated subset: the two arms can run in two processes, then 'report'")
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
        pre = train(big, work / "pretrain", args.pretrain_epochs, None, 2e-3, args.size, 0)
        print(f"pretrain: bbox AP {pre['bbox_AP']:.3f}, mask AP {pre['segm_AP']:.3f}, {pre['minutes']} min")
    for arm in ARMS:
        if arm in stages:
            run_arm(arm, work, small, args)
    if "amp" in stages:
        run_amp(work, small, args)
    if "amp-report" in stages:
        amp = amp_summary(work, args)
        if amp is None:
            raise SystemExit("amp-report: the --amp runs are missing; run the amp stage first")
        print("fine-tuned arm, fp32 vs --amp (bf16 autocast), seeds " + ", ".join(map(str, args.seeds)) + ": " +
              "; ".join(f"{k} bbox AP {v['bbox_AP']}, mask AP {v['segm_AP']}" for k, v in amp.items()))
        print(f"wrote {write_json('finetune_amp', {'amp': amp, 'settings': vars(args)})}")
    if "report" not in stages:
        return
    arms = [summarise(arm, work, args) for arm in ARMS]
    rows = [{"arm": a["arm"], "lr": a["lr"], "seeds": len(args.seeds),
             "bbox_AP": f"{a['bbox_AP']['mean']:.3f} ± {a['bbox_AP']['std']:.3f}",
             "bbox_AP_min_max": f"{a['bbox_AP']['min']:.3f}-{a['bbox_AP']['max']:.3f}",
             "segm_AP": f"{a['segm_AP']['mean']:.3f} ± {a['segm_AP']['std']:.3f}",
             "segm_AP_min_max": f"{a['segm_AP']['min']:.3f}-{a['segm_AP']['max']:.3f}",
             "min_per_run": round(a["minutes_per_run"], 1)} for a in arms]
    print(table(rows, list(rows[0])))
    ft, sc = arms
    ratio = {k: ft[k]["mean"] / max(sc[k]["mean"], 1e-9) for k in ("bbox_AP", "segm_AP")}
    worst_case = {k: ft[k]["min"] / max(sc[k]["max"], 1e-9) for k in ("bbox_AP", "segm_AP")}
    print(f"fine-tuned / scratch (means): bbox AP x{ratio['bbox_AP']:.2f}, mask AP x{ratio['segm_AP']:.2f}; "
          f"worst fine-tuned seed / best scratch seed: x{worst_case['bbox_AP']:.2f}, x{worst_case['segm_AP']:.2f}")
    pretrain = json.loads((work / "pretrain" / "metrics.jsonl").read_text().splitlines()[-1])
    amp = amp_summary(work, args)
    if amp:
        print("fine-tuned arm, fp32 vs --amp (bf16 autocast), seeds " + ", ".join(map(str, args.seeds)) + ": " +
              "; ".join(f"{k} bbox AP {v['bbox_AP']}, mask AP {v['segm_AP']}" for k, v in amp.items()))
    payload = {"arms": arms, "ratio_of_means": ratio, "worst_vs_best": worst_case, "settings": vars(args),
               "pretrain": {k: pretrain[k] for k in ("bbox_AP", "segm_AP", "epoch")}, "amp": amp}
    print(f"wrote {write_json('finetune', payload)}")


if __name__ == "__main__":
    main()
