"""``fit``: the tutorial's training loop made trustworthy for long runs.

Per epoch: train with warm-up and step/cosine decay, evaluate with pycocotools, append one line to
``metrics.jsonl``, redraw ``curves.png``, and write ``last.pt`` (with everything ``--resume`` needs) and, when val
AP improves, ``best.pt`` with its evaluation (``evaluation.json``) and the pictures of it (``evaluation/``, drawn
from the evaluation already made: the model does not run again). Every file is written atomically, so ``kill -9``
at any moment leaves readable files. Resuming restores model, optimiser, scheduler, AMP scaler, epoch and every
RNG, so a resumed CPU run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from detdemo.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from detdemo.data import collate, eval_transforms, open_dataset, train_transforms
from detdemo.data.provenance import read_provenance
from detdemo.engine import distributed as dist_utils
from detdemo.engine.config import TrainConfig
from detdemo.engine.evaluate import dataset_to_coco, evaluate_model
from detdemo.engine.sampler import GroupedBatchSampler, aspect_groups
from detdemo.engine.schedule import make_optimizer, make_scheduler
from detdemo.errors import DetDemoError
from detdemo.fileio import remove_stale_temps, write_json, write_text
from detdemo.models import ModelConfig, build_model, get_spec, model_from_checkpoint


class TrainingDiverged(DetDemoError):
    """The loss became NaN or infinite."""


class EpochRandomSampler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch): resuming at epoch k replays epoch k's order exactly."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class RunState:
    epoch: int = 0  # next epoch to run
    best_ap: float = -math.inf
    best_epoch: int = -1


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _short(name: str) -> str:
    return name.removeprefix("loss_").replace("objectness", "obj").replace("rpn_box_reg", "rpn_box")


def _drop_crowd(target: dict, device: torch.device) -> dict:
    """Crowd regions are ignore-areas for evaluation, not objects to learn."""
    keep = target["iscrowd"] == 0
    out = {}
    for k, v in target.items():
        if k in ("boxes", "labels", "masks", "keypoints", "area", "iscrowd"):
            v = v[keep]
        out[k] = v.to(device)
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig | None, resume: str | None = None, progress: bool = True,
                 overrides: dict | None = None) -> None:
        """``resume``: a run folder; its recorded config is used, updated with ``overrides`` (e.g. more epochs)."""
        self.progress = progress
        checkpoint = self._resume_checkpoint(resume) if resume else None
        if checkpoint is not None:
            cfg = TrainConfig.from_dict({**checkpoint["train_config"], **(overrides or {})})
        elif cfg is None:
            raise DetDemoError("a training configuration or a run to resume is needed")
        self.cfg = cfg
        self.info = dist_utils.init_distributed(cfg.device)
        self.device = dist_utils.pick_device(cfg.device, self.info)
        self.out = Path(cfg.out)
        if checkpoint is None and (self.out / LAST).exists():
            raise DetDemoError(f"{self.out} already holds a run ({LAST}); resume it with --resume {self.out} "
                               "or choose another --out")
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        seed_everything(cfg.seed + self.info.rank)
        self._make_data()
        self._make_model(checkpoint)
        self.state = RunState()
        self.eval_result = None  # this epoch's evaluation (rank 0), for best.pt's pictures
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- set-up ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _resume_checkpoint(resume: str) -> dict:
        path = Path(resume)
        path = path / LAST if path.is_dir() else path
        data = load_checkpoint(path)
        if "training_state" not in data:
            raise DetDemoError(f"{path}: has no training state to resume from (use the run's {LAST})")
        return data

    @staticmethod
    def recorded_config(resume: str) -> dict:
        """The training settings a run was started with (read without loading its tensors)."""
        path = Path(resume)
        return load_checkpoint(path / LAST if path.is_dir() else path, mmap=True).get("train_config", {})

    def _make_data(self) -> None:
        cfg = self.cfg
        aug = train_transforms() if cfg.augment else eval_transforms()
        self.train_set = open_dataset(cfg.data, "train", cfg.layout, aug, val_fraction=cfg.val_fraction,
                                      seed=cfg.seed)
        if len(self.train_set) == 0:
            raise DetDemoError(f"{cfg.data}: the training split is empty")
        if self.train_set.num_objects() == 0:
            raise DetDemoError(f"{cfg.data}: the training split has {len(self.train_set)} image(s) but not one "
                               "annotated object: there is nothing to learn")
        self.val_set = open_dataset(cfg.data, "val", cfg.layout, eval_transforms(), classes=self.train_set.class_names,
                                    val_fraction=cfg.val_fraction, seed=cfg.seed)
        self.provenance = read_provenance(cfg.data, cfg.layout).to_dict()  # for publish's description and licence
        if self.info.enabled:
            sampler = DistributedSampler(self.train_set, self.info.world_size, self.info.rank, shuffle=True,
                                         seed=cfg.seed)
        else:
            sampler = EpochRandomSampler(len(self.train_set), cfg.seed)
        self.sampler = sampler
        if cfg.aspect_ratio_group:
            batches = GroupedBatchSampler(sampler, aspect_groups(self.train_set), cfg.batch_size)
        else:
            batches = BatchSampler(sampler, cfg.batch_size, drop_last=False)
        self.loader = DataLoader(self.train_set, batch_sampler=batches, num_workers=cfg.workers,
                                 collate_fn=collate, pin_memory=self.device.type == "cuda")
        self.iters_per_epoch = min(len(batches), cfg.max_iters_per_epoch or len(batches))

    def _make_model(self, checkpoint: dict | None) -> None:
        cfg = self.cfg
        if checkpoint is not None:
            model, mcfg = model_from_checkpoint(checkpoint)
        else:
            spec = get_spec(cfg.model)
            if spec.masks and not self.train_set.has_masks:
                raise DetDemoError(f"{cfg.model} learns masks but {cfg.data} has no instance masks; pick a "
                                   "box-only model such as fasterrcnn_resnet50_fpn")
            weights = cfg.weights
            if weights == "auto":
                weights = "DEFAULT" if spec.coco_weights is not None else None
            elif weights in ("none", "None", ""):
                weights = None
            model, mcfg = build_model(cfg.model, self.train_set.num_classes, self.train_set.class_names,
                                      weights=weights, weights_backbone=cfg.weights_backbone,
                                      trainable_backbone_layers=cfg.trainable_backbone_layers,
                                      min_size=cfg.min_size, max_size=cfg.max_size, **cfg.model_kwargs)
        self.model_config: ModelConfig = mcfg
        self.model = model.to(self.device)
        self.ddp = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        lr = cfg.effective_lr(self.info.world_size)
        self.optimizer = make_optimizer(self.model.parameters(), cfg, lr)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda")

    def _restore(self, checkpoint: dict) -> None:
        ts = checkpoint["training_state"]
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        self.scaler.load_state_dict(ts["scaler"])
        self.state = RunState(ts["epoch"] + 1, ts["best_ap"], ts["best_epoch"])
        rngs = ts["rng"]
        set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out)  # left by a run killed mid-write; never a checkpoint
            write_json(self.out / "config.json", {"train": cfg.to_dict(), "model": self.model_config.to_dict()})
            self._trim_metrics(self.state.epoch)
        gt = None
        started = time.perf_counter()
        for epoch in range(self.state.epoch, cfg.epochs):
            self.eval_result = None
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            train_stats = self.train_one_epoch(epoch)
            metrics = {"epoch": epoch + 1, **train_stats}
            out_of_time = bool(cfg.time_limit_min) and (time.perf_counter() - started) / 60 >= cfg.time_limit_min
            out_of_time = bool(dist_utils.all_gather(out_of_time, info)[0])  # rank 0's clock decides for all ranks
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs or out_of_time:
                if len(self.val_set) and gt is None and info.is_main:
                    masks = self.val_set.has_masks and get_spec(self.model_config.arch).masks
                    gt = dataset_to_coco(self.val_set, with_masks=masks)
                if len(self.val_set):
                    t0 = time.perf_counter()
                    result = evaluate_model(self.ddp.module if info.enabled else self.model, self.val_set,
                                            self.device, info, gt=gt, progress=self.progress)
                    if result is not None:
                        self.eval_result = result
                        metrics.update(result.flat())
                        metrics["per_class_AP"] = result.per_class
                        metrics["eval_time_s"] = round(time.perf_counter() - t0, 3)
            rngs = dist_utils.all_gather(rng_state(), info)  # every rank's RNG, for an exact resume
            if info.is_main:
                self._end_epoch(epoch, metrics, rngs)
            dist_utils.barrier(info)
            if out_of_time:
                break
        dist_utils.cleanup(info)
        return self.out

    def train_one_epoch(self, epoch: int) -> dict:
        cfg, info = self.cfg, self.info
        self.ddp.train()
        sums: dict[str, float] = {}
        steps = images_seen = 0
        t0 = time.perf_counter()
        self.step_times: list[float] = []  # wall time per step, data loading included (benchmarks read it)
        t_step = t0
        bar = tqdm(total=self.iters_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it",
                   disable=not (self.progress and info.is_main), dynamic_ncols=True)
        for step, (images, targets) in enumerate(self.loader):
            if step >= self.iters_per_epoch:
                break
            images = [img.to(self.device, non_blocking=True) for img in images]
            targets = [_drop_crowd(t, self.device) for t in targets]
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss_dict = self.ddp(images, targets)
            loss = sum(loss_dict.values())
            logged = dist_utils.reduce_mean({k: float(v.detach()) for k, v in loss_dict.items()}, info)
            total = sum(logged.values())
            if not math.isfinite(total):
                bad = ", ".join(f"{k}={v}" for k, v in logged.items() if not math.isfinite(v)) or f"loss={total}"
                last = self.out / LAST
                kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written"
                raise TrainingDiverged(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {bad}. Stopped "
                                       f"without saving; {kept}. Try a lower --lr or --clip-grad.")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v
            sums["loss"] = sums.get("loss", 0.0) + total
            images_seen += len(images) * info.world_size
            steps = n = step + 1
            speed = images_seen / (time.perf_counter() - t0)
            bar.set_postfix({"loss": f"{sums['loss'] / n:.3f}",
                             **{_short(k): f"{sums[k] / n:.3f}" for k in loss_dict},
                             "lr": f"{self.optimizer.param_groups[0]['lr']:.2e}", "img/s": f"{speed:.2f}"})
            bar.update()
            now = time.perf_counter()
            self.step_times.append(now - t_step)
            t_step = now
        bar.close()
        elapsed = time.perf_counter() - t0
        # Count steps ourselves: a disabled tqdm bar (progress off, other ranks) does not count.
        stats = {k: v / max(steps, 1) for k, v in sums.items()}
        stats.update(lr=self.optimizer.param_groups[0]["lr"], train_time_s=round(elapsed, 3), iterations=steps,
                     images_per_s=round(images_seen / elapsed, 3) if elapsed > 0 else 0.0,
                     s_per_iter=round(elapsed / max(steps, 1), 4))
        return stats

    # -- outputs --------------------------------------------------------------------------------------------------
    def _end_epoch(self, epoch: int, metrics: dict, rngs: list[dict]) -> None:
        ap = metrics.get("bbox_AP")
        improved = ap is not None and ap > self.state.best_ap
        if improved:
            self.state.best_ap, self.state.best_epoch = ap, epoch + 1
        metrics["best_bbox_AP"] = self.state.best_ap if self.state.best_epoch > 0 else None
        # Order matters for a kill at any point: the metrics line, then best.pt, then last.pt. Resuming from the
        # previous last.pt forgets the later metrics line and re-runs the epoch, which rewrites best.pt if it
        # improves again; a kill between best.pt and last.pt can therefore never lose the best checkpoint.
        path = self.out / "metrics.jsonl"
        previous = path.read_text(encoding="utf-8") if path.exists() else ""
        write_text(path, previous + json.dumps(metrics) + "\n")
        scalar = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        training_state = {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": epoch, "best_ap": self.state.best_ap,
            "best_epoch": self.state.best_epoch,
            "rng": rngs,
        }
        if improved or (ap is None and epoch + 1 == self.cfg.epochs):
            save_checkpoint(self.out / BEST, self.model, self.model_config, train_config=self.cfg.to_dict(),
                            metrics=scalar, dataset=self.provenance)
            if improved and self.eval_result is not None:
                self._write_best_evaluation(epoch, self.eval_result)
        _before_last_checkpoint(self.out)
        save_checkpoint(self.out / LAST, self.model, self.model_config, train_config=self.cfg.to_dict(),
                        metrics=scalar, training_state=training_state, dataset=self.provenance)
        from detdemo.engine.curves import plot_curves

        plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")

    def _write_best_evaluation(self, epoch: int, result) -> None:
        """best.pt's evaluation and its pictures, from this epoch's evaluation (no second model run)."""
        from detdemo.engine.eval_pictures import MODEL_EVALUATION, pictures_dir, write_pictures

        out = self.out / MODEL_EVALUATION
        folder = pictures_dir(out)
        write_pictures(result, folder, self.val_set)
        write_json(out, {"model": BEST, "epoch": epoch + 1, "data": str(self.cfg.data), "split": "val",
                         **result.to_dict(), "pictures": folder.name})

    def _trim_metrics(self, next_epoch: int) -> None:
        """Reconcile metrics.jsonl with the checkpoint the run starts from: keep the lines of epochs it holds,
        forget those that will run again (a kill between metrics and checkpoint) and any torn line."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        kept, torn = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                epoch = json.loads(line).get("epoch", 0)
            except ValueError:
                torn += 1
                continue
            if epoch <= next_epoch:
                kept.append(line)
        if torn:
            warnings.warn(f"{path}: dropped {torn} unreadable line(s) left by an interrupted write", stacklevel=2)
        write_text(path, "".join(ln + "\n" for ln in kept))


def _before_last_checkpoint(out: Path) -> None:
    """A no-op hook between best.pt and last.pt, where the kill tests interrupt a run."""


def amp_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """``--amp``: fp16 on CUDA (with GradScaler), bf16 autocast on a CPU that has bf16 instructions, else off."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    from detdemo.inference.eager import bf16_supported

    if bf16_supported(device):
        return torch.bfloat16
    warnings.warn("--amp: this CPU has no bf16 instructions (AVX512-BF16 or AMX); training in float32",
                  stacklevel=3)
    return None


def fit(cfg: TrainConfig | None, resume: str | None = None, progress: bool = True, **overrides) -> Path:
    return Trainer(cfg, resume=resume, progress=progress, overrides=overrides).fit()
