"""Shared helpers for benchmarks: result folders, JSON output and plain-text tables."""

from __future__ import annotations

import platform
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"


def timed_calls(predictor, images: list, rounds: int = 1) -> tuple[list[float], list[int]]:
    """Wall seconds and detection counts of ``predictor.predict`` on each image, ``rounds`` passes over them."""
    times, counts = [], []
    for _ in range(rounds):
        for img in images:
            t = time.perf_counter()
            det = predictor.predict(img)
            times.append(time.perf_counter() - t)
            counts.append(len(det))
    return times, counts


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Forget the peak so far (Linux: clear_refs 5 resets VmHWM), so a later peak excludes library loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def high_water_rss_mb() -> float:
    """Peak RSS since the last ``reset_peak_rss`` (VmHWM)."""
    return _status_mb("VmHWM")


def machine() -> dict:
    return {"python": sys.version.split()[0], "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    from detdemo.fileio import write_json as write_atomically

    return write_atomically(RESULTS / f"{name}.json", {"machine": machine(), **payload})


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    head = "  ".join(f"{c:<{widths[c]}}" for c in columns)
    lines = [head, "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(f"{_fmt(r.get(c)):<{widths[c]}}" for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)
