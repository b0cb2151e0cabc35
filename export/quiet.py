"""TorchScript's own console noise, silenced where detdemo calls it and nowhere else.

torch 2.5+ warns on every ``torch.jit.load`` / ``save`` / ``script`` that TorchScript is deprecated, and a scripted
torchvision detector warns on its first call that it "always returns a (Losses, Detections) tuple in scripting".
Both are about detdemo's choice of format, not about the user's model or data, yet users read them as something
broken. Only those exact messages are hidden, only inside ``torchscript_quiet()``; every other warning still shows
(Python 3.14's "not supported ... and may break" from torch.jit is left visible: it is a real caution).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

# (message regex, category): matched against the start of the message, as warnings.filterwarnings does
TORCHSCRIPT_NOISE: tuple[tuple[str, type[Warning]], ...] = (
    (r"`torch\.jit\.(load|save|script)` is deprecated\. Please switch to", FutureWarning),
    (r"(RCNN|RetinaNet|FCOS|SSD) always returns a \(Losses, Detections\) tuple in scripting", UserWarning),
)


@contextlib.contextmanager
def torchscript_quiet() -> Iterator[None]:
    """Hide TORCHSCRIPT_NOISE inside the block (``warnings.catch_warnings``: restored on exit)."""
    with warnings.catch_warnings():
        for message, category in TORCHSCRIPT_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
