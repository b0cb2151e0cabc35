"""The AP gate's verdict: a file's ΔAP to eager with its paired bootstrap interval, judged against a limit.

A point comparison |ΔAP| <= limit on a few dozen images judges sampling noise: measured on the bundled shapes model
with 12 images, ONNX INT8 bbox ΔAP was +0.016 and OpenVINO's +0.042 (both "FAIL"), while on 100 images the same
kind of files differ from eager by about 0.001. So every file's ΔAP carries the 95 % interval of a paired
bootstrap over images (``detdemo.engine.bootstrap``), and the verdict reads the interval:

* PASS: the interval, and ΔAP itself, lie within ±limit. The limits are the point gate's (no new looseness): a
  PASS here is always a PASS of the old gate, and a file identical to eager has a zero-width interval, so it
  passes on any number of images.
* FAIL: the interval lies entirely beyond one limit (the file is worse, or better, than the limit allows whichever
  images of this kind are drawn).
* INCONCLUSIVE: the interval straddles a limit: this set is too small to tell. It is never a pass; the verdict
  says roughly how many images would decide it (``images_to_decide``).

The judged interval is the bootstrap's percentile interval widened, where resampling skews it, to contain the
full-set ΔAP, so neither verdict can contradict the figure it is shown with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)
RESAMPLES = 2000  # endpoints stable across seeds to ~0.0002 on 100 images, ~0.002 on 12 (docs/export.md)
LEVEL = 0.95
IOU_NAMES = {"bbox": "box", "segm": "mask"}


@dataclass(frozen=True)
class Gate:
    """One IoU type's judgement of one file."""

    delta: float  # AP(file) - AP(eager) on the full set: pycocotools' own figures
    low: float  # the interval judged (contains ``delta``)
    high: float
    limit: float
    images: int

    @property
    def verdict(self) -> str:
        if self.low > self.limit or self.high < -self.limit:
            return FAIL
        if -self.limit <= self.low and self.high <= self.limit:
            return PASS
        return INCONCLUSIVE

    @property
    def images_to_decide(self) -> int | None:
        """For an inconclusive gate, about how many images of this kind would decide it; None where none would
        (ΔAP sits on the limit) and for a decided gate.

        Method: an interval's width shrinks as 1/sqrt(images) (the standard error of a mean over images), so at N
        images each side of the interval is its present distance from ΔAP times sqrt(n/N). Assuming ΔAP stays as
        measured, the N at which the interval first fits on one side of the limit is n * (side / margin)^2, with
        margin the distance from ΔAP to the limit that side must not cross. Rough by design: ΔAP itself moves as
        images are added (a one-detection difference shrinks), so this is the size of set to try, not a promise."""
        if self.verdict != INCONCLUSIVE:
            return None
        up, down = self.high - self.delta, self.delta - self.low
        if abs(self.delta) < self.limit:  # would pass once both sides fit within the limits
            need = max((up / (self.limit - self.delta)) ** 2, (down / (self.limit + self.delta)) ** 2)
        elif self.delta > self.limit:  # would fail once the lower side clears +limit
            need = (down / (self.delta - self.limit)) ** 2
        elif self.delta < -self.limit:
            need = (up / (-self.limit - self.delta)) ** 2
        else:
            return None
        return _round_up(self.images * need) if math.isfinite(need) else None


def _round_up(n: float) -> int:
    """Two significant figures, rounded up: 'about 1400 images', not 1397."""
    n = max(1, math.ceil(n))
    scale = 10 ** max(0, len(str(n)) - 2)
    return -(-n // scale) * scale


def gate(delta: float, low: float, high: float, limit: float, images: int) -> Gate:
    """The gate of one IoU type, the interval widened to contain ``delta``. A NaN interval (unknown: no resample
    had ground truth, or one image whose ΔAP is not 0) counts as the widest possible: inconclusive."""
    if math.isnan(low) or math.isnan(high):
        low, high = -math.inf, math.inf
    return Gate(delta, min(low, delta), max(high, delta), limit, images)


def combined(gates: list[Gate]) -> tuple[str, int | None]:
    """A file's verdict over its IoU types (FAIL if any fails, PASS if all pass) and, when inconclusive, about how
    many images would decide the file: the fewest at which an IoU type whose ΔAP is beyond its limit would fail,
    else the most at which every undecided type would pass."""
    verdicts = [g.verdict for g in gates]
    if FAIL in verdicts:
        return FAIL, None
    if all(v == PASS for v in verdicts):
        return PASS, None
    undecided = [g for g in gates if g.verdict == INCONCLUSIVE]
    failing = [g.images_to_decide for g in undecided if abs(g.delta) > g.limit and g.images_to_decide]
    if failing:
        return INCONCLUSIVE, min(failing)
    needs = [g.images_to_decide for g in undecided]
    return INCONCLUSIVE, (None if None in needs else max(needs))


def verdict_of(figures: dict) -> str:
    """A recorded file's verdict: its own, or (figures recorded before intervals) PASS/FAIL from ``passed``."""
    return figures.get("verdict") or (PASS if figures.get("passed") else FAIL)


def delta_text(figures: dict, iou_type: str, digits: int = 3) -> str:
    """'-0.002 ± 0.004': ΔAP and the distance from it to the interval's farther end, so the range shown covers
    the interval; the bare ΔAP for figures recorded before intervals."""
    delta = figures[f"d{iou_type}_AP"]
    interval = figures.get(f"d{iou_type}_AP_interval")
    if not interval:
        return f"{delta:+.{digits}f}"
    spread = max(interval[1] - delta, delta - interval[0])
    return f"{delta:+.{digits}f} ± {spread:.{digits}f}"


def interval_text(figures: dict, iou_type: str, digits: int = 4) -> str:
    """'ΔAP -0.0021 (95 % interval -0.0062 to +0.0036)', or the bare ΔAP for figures without an interval."""
    delta = figures[f"d{iou_type}_AP"]
    interval = figures.get(f"d{iou_type}_AP_interval")
    text = f"ΔAP {delta:+.{digits}f}"
    if interval:
        text += f" ({LEVEL:.0%} interval {interval[0]:+.{digits}f} to {interval[1]:+.{digits}f})"
    return text


def iou_types_of(figures: dict) -> list[str]:
    """The IoU types a file's recorded figures hold ΔAP for, in their recorded order."""
    return [k[1:-3] for k in figures if k.startswith("d") and k.endswith("_AP")]


def interval_known(interval) -> bool:
    """Whether a gate's interval is finite (one with no estimate is recorded as None: JSON has no infinity)."""
    return interval is not None and all(math.isfinite(v) for v in interval)


def decide_text(figures: dict) -> str:
    """Why an inconclusive verdict is one, and what would decide it."""
    need, images = figures.get("images_to_decide"), figures.get("images", "?")
    if any(not figures.get(f"d{t}_AP_interval") for t in iou_types_of(figures)):
        return (f"no interval could be estimated on {images} image(s) — a bootstrap over images needs two or more "
                "with labelled objects; more labelled images would decide it")
    what = (f"about {need} labelled images of this kind would decide it (rough: it assumes ΔAP stays as measured)"
            if need else
            "ΔAP sits on the limit: more images would not decide it")
    return f"its interval straddles the ±{figures.get('limit')} limit on {images} images; {what}"
