"""The ``detdemo`` command line: one sub-command per job, user errors printed as one line, exit code 2.

Each sub-command lives in a module with ``add_parser(subparsers)`` that sets ``func``; heavy imports happen
inside the commands so that ``detdemo --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from detdemo.errors import DetDemoError

COMMAND_MODULES = ("detdemo.commands.info", "detdemo.commands.data", "detdemo.commands.train",
                   "detdemo.commands.evaluate", "detdemo.commands.predict", "detdemo.commands.export",
                   "detdemo.commands.publish")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from detdemo import __version__

    parser = argparse.ArgumentParser(
        prog="detdemo",
        description="Fine-tune torchvision detectors on your own images, export them, and demo them.",
    )
    parser.add_argument("--version", action="version", version=f"detdemo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet in this version
                continue
            raise
        module.add_parser(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        result = args.func(args)
    except DetDemoError as exc:
        print(f"detdemo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"detdemo {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
