"""The exporters' error, in a leaf module so that every format's module can raise it without importing the others."""

from __future__ import annotations

from detdemo.errors import DetDemoError


class ExportError(DetDemoError):
    """An architecture could not be exported to a format."""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (torch's export errors run to pages; the first line names the failure)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
