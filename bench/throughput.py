"""Benchmark 1: training throughput of ``detdemo train`` against the tutorial's own loop.

    python -m bench.throughput --iters 4 --rounds 2

The baseline is the tutorial's loop written out faithfully: a dataset that decodes each image (and its masks)
when asked, the references' transforms (to tensor + horizontal flip), ``DataLoader(batch_size=2, shuffle=True,
num_workers=4)``, Mask R-CNN R50-FPN, SGD(lr 0.005, momentum 0.9, wd 5e-4) with the first-epoch linear warm-up.
``detdemo`` runs the same model, data, batch size and optimiser through its ``Trainer`` with its defaults
(aspect-ratio grouping, 2 workers, its augmentation). Each runs in its own process, alternating, so both see the
same machine conditions and peak memory is per runner. The first step of each process (allocation, warm-up) is
excluded from s/iteration.
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
            img = F.to_tensor(img)
            if self.train and torch.rand(1) < 0.5:  # references' RandomHorizontalFlip
                img = img.flip(-1)
                w = img.shape[-1]
                target["boxes"] = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + \
                    torch.tensor([w, 0, w, 0])
                target["masks"] = target["masks"].flip(-1)
            return img, target

        def __len__(self):
            return len(self.ids)

    torch.manual_seed(0)
    ds = TutorialDataset(DATA)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, num_workers=4,
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


def detdemo_worker(iters: int) -> dict:
    import tempfile

    from detdemo.engine.config import TrainConfig
    from detdemo.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(data=str(DATA), model="maskrcnn_resnet50_fpn", out=out, epochs=1, batch_size=2,
                          weights=None, workers=2, max_iters_per_epoch=iters + 1, seed=0)
        trainer = Trainer(cfg, progress=False)
        trainer.train_one_epoch(0)
        return {"step_times": trainer.step_times}


def run_child(kind: str, iters: int) -> dict:
    cmd = [sys.executable, "-m", "bench.throughput", "--worker", kind, "--iters", str(iters)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=4, help="timed iterations per process (after one warm-up)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker", choices=("tutorial", "detdemo"))
    args = p.parse_args()
    if args.worker:
        fn = tutorial_worker if args.worker == "tutorial" else detdemo_worker
        result = fn(args.iters)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    samples: dict[str, list[float]] = {"tutorial": [], "detdemo": []}
    peaks: dict[str, list[float]] = {"tutorial": [], "detdemo": []}
    for r in range(args.rounds):
        for kind in ("tutorial", "detdemo") if r % 2 == 0 else ("detdemo", "tutorial"):
            res = run_child(kind, args.iters)
            samples[kind] += res["step_times"][1:]
            peaks[kind].append(res["peak_rss_mb"])
            print(f"round {r + 1} {kind}: {statistics.median(res['step_times'][1:]):.2f} s/iter", flush=True)
    rows = []
    for kind in ("tutorial", "detdemo"):
        rows.append({"loop": kind, "s_per_iter_median": statistics.median(samples[kind]),
                     "s_per_iter_mean": statistics.mean(samples[kind]), "iters": len(samples[kind]),
                     "peak_rss_mb": max(peaks[kind])})
    speedup = rows[0]["s_per_iter_median"] / rows[1]["s_per_iter_median"]
    print(table(rows, ["loop", "s_per_iter_median", "s_per_iter_mean", "iters", "peak_rss_mb"]))
    print(f"detdemo speed vs tutorial: x{speedup:.3f} (>1 means detdemo is faster)")
    print(f"wrote {write_json('throughput', {'rows': rows, 'speedup': speedup, 'samples': samples})}")


if __name__ == "__main__":
    main()
