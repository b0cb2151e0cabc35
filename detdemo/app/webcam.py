"""Frames per second of one webcam stream, over a sliding window of the frames it answered."""

from __future__ import annotations

import time
from collections import deque


class FrameRate:
    """``tick()`` after each answered frame; returns the rate over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])
