"""Training configuration as one dataclass: what ``detdemo train`` resolves, records and resumes from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from detdemo.errors import DetDemoError

TUTORIAL_BATCH = 2  # the tutorial's lr 0.005 goes with batch 2; --scale-lr scales from there


@dataclass
class TrainConfig:
    data: str
    model: str = "maskrcnn_light"
    out: str = "runs/detdemo"
    layout: str | None = None
    val_fraction: float = 0.2
    epochs: int = 10
    batch_size: int = 2
    optimizer: str = "sgd"  # sgd | adamw
    lr: float | None = None  # default: 0.005 (SGD, the tutorial's) or 1e-4 (AdamW)
    momentum: float = 0.9
    weight_decay: float | None = None  # default: 5e-4 (SGD) or 0.05 (AdamW)
    schedule: str = "step"  # step | cosine
    step_size: int = 3
    gamma: float = 0.1
    warmup_iters: int = 1000  # capped at one epoch, as in torchvision's reference engine
    warmup_factor: float = 0.001
    scale_lr: bool = False
    amp: bool = False
    clip_grad: float | None = None
    aspect_ratio_group: bool = True
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    weights: str | None = "auto"  # auto: COCO weights when torchvision has them, else from scratch
    weights_backbone: str | None = None
    trainable_backbone_layers: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    augment: bool = True
    eval_every: int = 1
    max_iters_per_epoch: int | None = None  # for smoke runs and benchmarks
    time_limit_min: float | None = None  # stop after the epoch in which this budget runs out (evaluated)
    device: str = "auto"
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise DetDemoError(f"unknown optimizer {self.optimizer!r}; choose sgd or adamw")
        if self.schedule not in ("step", "cosine"):
            raise DetDemoError(f"unknown schedule {self.schedule!r}; choose step or cosine")
        if self.epochs < 1 or self.batch_size < 1:
            raise DetDemoError("epochs and batch size must be >= 1")
        if self.lr is None:
            self.lr = 0.005 if self.optimizer == "sgd" else 1e-4
        if self.weight_decay is None:
            self.weight_decay = 5e-4 if self.optimizer == "sgd" else 0.05
        if self.lr <= 0:
            raise DetDemoError(f"learning rate must be positive, got {self.lr}")

    def effective_lr(self, world_size: int) -> float:
        if not self.scale_lr:
            return float(self.lr)
        return float(self.lr) * self.batch_size * world_size / TUTORIAL_BATCH

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
