"""Benchmark 1: training throughput of ``detdemo train`` against the tutorial's own loop.

    python -m bench.throughput --iters 8 --rounds 2 [--amp]

The baseline is the tutorial's loop written out faithfully: a dataset that decodes each image (and its masks)
when asked, to-tensor, ``DataLoader(batch_size=2, num_workers=4)``, Mask R-CNN R50-FPN, SGD(lr 0.005, momentum
0.9, wd 5e-4) with the first-epoch linear warm-up. ``detdemo`` runs the same model, batch size and optimiser
through its ``Trainer`` (its dataset, loader, loop and logging).

**Both loops get identical batches**: the same seeded sequence of image pairs, in the same order, without random
augmentation (flips or scale jitter would change the padded size and instance count from step to step). So step
``i`` of one loop and step ``i`` of the other do the same arithmetic, and the per-step time ratios are paired
samples: the report gives their median and a 95 % bootstrap confidence interval. Each loop runs in its own
process, alternating between rounds; the first step of each process (allocation, warm-up) is not timed.
``--amp`` adds a third loop: detdemo with ``--amp`` (bf16 autocast on a CPU that supports it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from bench.common import REPO, SHARED, peak_rss_mb, table, write_json

DATA = SHARED / "coco128"


def batch_plan(n_images: int, iters: int, seed: int = 0) -> list[list[int]]:
    """The image pairs both loops train on, in order (one warm-up step + ``iters`` timed steps)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_images, generator=g).tolist()
    return [order[2 * i: 2 * i + 2] for i in range(iters + 1)]


def tutorial_worker(iters: int) -> dict:
    import numpy as np
    from PIL import Image
    from pycocotools.coco import COCO
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.transforms import functional as F

    class TutorialDataset(torch.utils.data.Dataset):
        """The tutorial's dataset pattern: decode the image and build the target on every __getitem__."""

        def __init__(self, root, train=True):
            self.coco = COCO(str(root / "annotations" / "instances_train2017.json"))
            self.root, self.train = root, train
            self.ids = sorted(self.coco.imgs)
            self.cat = {c: i + 1 for i, c in enumerate(sorted(self.coco.cats))}

        def __getitem__(self, idx):
            info = self.coco.imgs[self.ids[idx]]
            img = Image.open(self.root / "train2017" / info["file_name"]).convert("RGB")
            anns = [a for a in self.coco.imgToAnns[self.ids[idx]] if not a["iscrowd"]]
            masks = np.stack([self.coco.annToMask(a) for a in anns]) if anns else np.zeros((0, *img.size[::-1]))
            boxes = torch.as_tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                      a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32).reshape(-1, 4)
            target = {"boxes": boxes, "labels": torch.as_tensor([self.cat[a["category_id"]] for a in anns]),
                      "masks": torch.as_tensor(masks, dtype=torch.uint8), "image_id": torch.tensor([idx]),
                      "area": (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]),
                      "iscrowd": torch.zeros((len(anns),), dtype=torch.int64)}
            return F.to_tensor(img), target  # no random flip: both loops see identical batches

        def __len__(self):
            return len(self.ids)

    torch.manual_seed(0)
    ds = TutorialDataset(DATA)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batch_plan(len(ds), iters), num_workers=4,
                                         collate_fn=lambda b: tuple(zip(*b)))
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001,
                                               total_iters=min(1000, len(loader) - 1))
    times, t = [], time.perf_counter()
    for step, (images, targets) in enumerate(loader):
        loss_dict = model(list(images), list(targets))
        losses = sum(loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        warmup.step()
        now = time.perf_counter()
        times.append(now - t)
        t = now
        if step + 1 >= iters + 1:
            break
    return {"step_times": times}


def detdemo_worker(iters: int, amp: bool = False) -> dict:
    import tempfile

    from detdemo.data import collate
    from detdemo.engine.config import TrainConfig
    from detdemo.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(data=str(DATA), model="maskrcnn_resnet50_fpn", out=out, epochs=1, batch_size=2,
                          weights=None, workers=2, max_iters_per_epoch=iters + 1, seed=0, augment=False,
                          val_fraction=0.2, amp=amp)
        trainer = Trainer(cfg, progress=False)
        # the tutorial's order of the same images (the COCO train split, sorted by image id in both datasets)
        assert [r.image_id for r in trainer.train_set.records] == sorted(r.image_id for r in trainer.train_set.records)
        trainer.loader = torch.utils.data.DataLoader(trainer.train_set, batch_sampler=batch_plan(
            len(trainer.train_set), iters), num_workers=cfg.workers, collate_fn=collate)
        trainer.train_one_epoch(0)
        return {"step_times": trainer.step_times, "amp_dtype": str(trainer.amp_dtype)}


def run_child(kind: str, iters: int) -> dict:
    cmd = [sys.executable, "-m", "bench.throughput", "--worker", kind, "--iters", str(iters)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def paired_ratio(baseline: list[float], other: list[float], seed: int = 0) -> dict:
    """Median of per-step speed ratios (baseline time / other time; > 1: other is faster) with a 95 % bootstrap
    confidence interval. Steps are paired: step i of both loops trained on the same batch."""
    import numpy as np

    ratios = np.array(baseline) / np.array(other)
    rng = np.random.default_rng(seed)
    boots = [float(np.median(rng.choice(ratios, len(ratios)))) for _ in range(5000)]
    return {"ratio_median": float(np.median(ratios)), "ci95": [float(np.percentile(boots, 2.5)),
                                                               float(np.percentile(boots, 97.5))],
            "pairs": len(ratios)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=8, help="timed iterations per process (after one warm-up)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="also time detdemo with --amp (bf16 on a CPU with it)")
    p.add_argument("--worker", choices=("tutorial", "detdemo", "detdemo-amp"))
    args = p.parse_args()
    if args.worker:
        if args.worker == "tutorial":
            result = tutorial_worker(args.iters)
        else:
            result = detdemo_worker(args.iters, amp=args.worker == "detdemo-amp")
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    kinds = ["tutorial", "detdemo"] + (["detdemo-amp"] if args.amp else [])
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    peaks: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            res = run_child(kind, args.iters)
            samples[kind] += res["step_times"][1:]
            peaks[kind].append(res["peak_rss_mb"])
            print(f"round {r + 1} {kind}: {statistics.median(res['step_times'][1:]):.2f} s/iter", flush=True)
    rows, ratios = [], {}
    for kind in kinds:
        row = {"loop": kind, "s_per_iter_median": statistics.median(samples[kind]),
               "s_per_iter_mean": statistics.mean(samples[kind]), "iters": len(samples[kind]),
               "peak_rss_mb": max(peaks[kind])}
        if kind != "tutorial":
            ratios[kind] = paired_ratio(samples["tutorial"], samples[kind])
            row["speed_vs_tutorial"] = ratios[kind]["ratio_median"]
            row["ci95"] = "{:.3f}-{:.3f}".format(*ratios[kind]["ci95"])
        rows.append(row)
    print(table(rows, ["loop", "s_per_iter_median", "s_per_iter_mean", "iters", "peak_rss_mb", "speed_vs_tutorial",
                       "ci95"]))
    print(f"wrote {write_json('throughput', {'rows': rows, 'ratios': ratios, 'samples': samples})}")


if __name__ == "__main__":
    main()
