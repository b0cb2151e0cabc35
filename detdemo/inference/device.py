"""Where a model runs: the device a user asked for, checked; and how many CPU threads this process may really use.

``os.cpu_count()`` reports the host's cores, not this process's share: inside a container (a CPU Space has 2
vCPUs on a many-core host) that oversubscribes the cores and slows everything down. The affinity mask and the
cgroup CPU quota say what the process may use.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from detdemo.errors import DetDemoError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(requested: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> the GPU when PyTorch sees one, else the CPU; ``cuda`` on a machine without one is an error."""
    text = str(requested or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DetDemoError(f"device {text!r} requested, but PyTorch sees no CUDA GPU on this machine "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                               "use --device cpu or auto")
        index = text.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise DetDemoError(f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                                   f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
            return torch.device("cuda", int(index))
        return torch.device("cuda", torch.cuda.current_device())
    raise DetDemoError(f"unknown device {requested!r}; choose {DEVICE_CHOICES}")


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None when unlimited."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            parts = v2.read_text().split()  # "max 100000" or "200000 100000"
            if parts and parts[0] != "max":
                return int(parts[0]) / int(parts[1] if len(parts) > 1 else 100000)
            return None
        v1_quota, v1_period = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if v1_quota.is_file() and v1_period.is_file():
            quota = int(v1_quota.read_text())
            if quota > 0:
                return quota / int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def start_thread(target: Callable[[], None], *, name: str, torch_threads: int | None = None) -> threading.Thread:
    """Start a daemon thread running ``target``; with ``torch_threads``, torch's intra-op parallelism in that thread
    (and only there) uses that many threads.

    Why: a video's per-frame host work (normalising, resizing, pasting masks, blending) is on tensors small enough
    that torch's OpenMP team costs more than it saves; on a 2-core CPU that is also running the model, or shared with
    other processes, a two-thread team waits on its descheduled partner at every barrier (measured with load ~5 on
    2 cores, a 640x480 frame: normalising 17.8 ms with two threads, 0.5 ms with one; pasting one mask 14 ms vs 0.5).

    How, with torch's public API only: with OpenMP (PyTorch's CPU builds) ``torch.set_num_threads`` sets the
    calling thread's own OpenMP thread count *and* a process-wide default that a thread adopts on its first parallel
    operation. So the new thread first adopts the default (``torch.get_num_threads()``), then sets its own count;
    this thread then puts the default back to what it was, so threads started later are unaffected."""
    default = torch.get_num_threads()  # this thread's count, read before the new thread can change the default
    ready = threading.Event()

    def run() -> None:
        if torch_threads is not None:
            torch.get_num_threads()  # adopt the default now, so the count set next is not overwritten by it later
            torch.set_num_threads(torch_threads)
        ready.set()
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        ready.wait()
    finally:  # even when interrupted while waiting (Ctrl-C in a notebook), after the new thread has set its count:
        if torch_threads is not None:  # the default must not stay at the new thread's
            ready.wait(timeout=5)
            torch.set_num_threads(default)
    return thread
