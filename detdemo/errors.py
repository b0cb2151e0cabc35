"""User-facing errors.

Anything a user can cause (a bad file, a wrong flag, a missing class) raises ``DetDemoError`` with a message
that names the file and the problem. The CLI prints these without a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class DetDemoError(Exception):
    """An error caused by user input, reported as one clear line."""


class DataError(DetDemoError):
    """A dataset, image or annotation file is missing, unreadable or malformed."""


class CheckpointError(DetDemoError):
    """A checkpoint is truncated, corrupt, foreign or incompatible."""


class WeightsUnavailableError(DetDemoError):
    """Pretrained weights are not cached and could not be downloaded."""
