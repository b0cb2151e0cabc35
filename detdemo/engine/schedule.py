"""Learning-rate schedule as one per-iteration LambdaLR: linear warm-up, then step or cosine decay.

One scheduler (rather than chained ones) keeps its whole state in ``last_epoch``, so resuming is exact.
"""

from __future__ import annotations

import math

import torch

from detdemo.engine.config import TrainConfig


def lr_factor(it: int, cfg: TrainConfig, iters_per_epoch: int) -> float:
    warmup = min(cfg.warmup_iters, max(iters_per_epoch - 1, 0))
    factor = 1.0
    if it < warmup:
        alpha = it / warmup
        factor = cfg.warmup_factor * (1 - alpha) + alpha
    epoch = it // max(iters_per_epoch, 1)
    if cfg.schedule == "step":
        return factor * cfg.gamma ** (epoch // cfg.step_size)
    total = max(cfg.epochs * iters_per_epoch, 1)
    return factor * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg, iters_per_epoch))


def make_optimizer(params, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
