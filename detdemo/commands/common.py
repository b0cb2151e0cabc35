"""Options that several commands share, declared once: which model, which backend, which device."""

from __future__ import annotations

import argparse
import sys


def add_model_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    from export.formats import BACKENDS

    p.add_argument("--model", "--checkpoint", dest="model", required=required, metavar="PATH",
                   help="a detdemo checkpoint, an exported file (ONNX, .pt2, AOTInductor, TorchScript, OpenVINO), an "
                        "export folder, a training run folder or a Hub repo USER/NAME[@REV] (--checkpoint is an alias)")
    p.add_argument("--backend", choices=tuple(BACKENDS), default=None,
                   help="runtime (default: the one that reads the file; for a folder, PyTorch)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default=None,
                   help="bf16: PyTorch under autocast, OpenVINO in bf16; int8: a folder's INT8 ONNX file; default: the "
                        "file's own (OpenVINO: bf16 where the CPU has it)")


def load_from_args(args: argparse.Namespace):
    """The predictor the options name; notes (a CUDA fallback) are printed as warnings."""
    from export.runtime import load_predictor

    precision = None if args.precision in (None, "auto") else args.precision
    predictor = load_predictor(args.model, args.backend, args.device, precision=precision)
    for note in predictor.notes:
        print(f"warning: {note}", file=sys.stderr)
    return predictor


def list_inputs(path) -> tuple[list, list]:
    """``(images, videos)``: a file (a video by its extension, anything else read as an image), or the images and
    videos in a folder (by extension), each sorted; DataError when there are none."""
    from pathlib import Path

    from detdemo.errors import DataError
    from detdemo.fileio import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    path = Path(path)
    if path.is_file():
        return ([], [path]) if path.suffix.lower() in VIDEO_EXTENSIONS else ([path], [])
    if not path.is_dir():
        raise DataError(f"{path}: input not found")
    files = sorted(p for p in path.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    if not images and not videos:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or videos "
                        f"({', '.join(sorted(VIDEO_EXTENSIONS))}) in this folder")
    return images, videos


def check_writable(path, what: str = "it") -> None:
    """``path`` can be written (its folder exists or can be made, and takes files): checked before minutes of
    work, so a run never ends in an error about where its output should go."""
    import os
    from pathlib import Path

    from detdemo.errors import DetDemoError

    path = Path(path)
    if path.is_dir():
        raise DetDemoError(f"{path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DetDemoError(f"{path.parent}: cannot write {what} there ({exc.strerror or exc})") from None
    if not os.access(path.parent, os.W_OK):
        raise DetDemoError(f"{path.parent}: not writable; cannot write {what} there")
