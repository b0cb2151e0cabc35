"""The app's command line and launch, shared by the repository's ``app.py`` and every staged Space's ``app.py``.

    python app.py                                   # the bundled models, http://127.0.0.1:7860
    python app.py --model runs/export --backend onnxruntime --port 8080
    python app.py --model USER/NAME@REVISION         # a model repo on the Hugging Face Hub (through its cache)

Every option has an environment variable (DETDEMO_MODEL, DETDEMO_BACKEND, DETDEMO_DEVICE, DETDEMO_CONCURRENCY,
DETDEMO_NO_COCO; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT for host and port), which is how a Space is configured.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from detdemo.app.catalogue import CHOICES

    env = os.environ.get
    p = argparse.ArgumentParser(description="detdemo: detect and segment objects in the browser")
    p.add_argument("--model", default=env("DETDEMO_MODEL"),
                   help="export folder, training run folder, checkpoint, or one exported file (.onnx, .pt2, "
                        "TorchScript .pt, ...), or a Hub model repo USER/NAME[@REVISION] (shown first; the bundled "
                        "models stay available)")
    p.add_argument("--backend", choices=CHOICES, default=env("DETDEMO_BACKEND"),
                   help="backend selected at start (default: the first the model has); a Hub model's TorchScript, "
                        ".pt2 or AOTInductor file (loading them runs code from the file) is downloaded only when this "
                        "names its backend")
    p.add_argument("--device", default=env("DETDEMO_DEVICE", "auto"),
                   help="auto, cpu, cuda or cuda:N: every backend runs there (auto: the GPU when there is one)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for a network)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p.add_argument("--concurrency", type=int, default=int(env("DETDEMO_CONCURRENCY", "1")),
                   help="requests run at once; the rest wait in Gradio's queue (1 suits a 2-core CPU)")
    p.add_argument("--no-coco", action="store_true", default=env("DETDEMO_NO_COCO", "") not in ("", "0"),
                   help="do not offer torchvision's COCO Mask R-CNN")
    p.add_argument("--no-bundled", action="store_true", help="do not offer the bundled models")
    p.add_argument("--examples", default=None, help="a folder of example images for --model (default: the "
                                                    "model folder's own examples/)")
    return p.parse_args(argv)


def make_demo(args: argparse.Namespace, bundled: list[tuple[Path, str]] | None = None):
    from detdemo.app.catalogue import BUNDLED_MODELS
    from detdemo.app.lineup import default_catalogue
    from detdemo.app.ui import build_demo

    bundled = [] if args.no_bundled else (BUNDLED_MODELS if bundled is None else bundled)
    catalogue = default_catalogue(args.model, include_coco=not args.no_coco, bundled=bundled, device=args.device,
                                  backend=args.backend, examples=args.examples)
    return build_demo(catalogue, default_backend=args.backend, concurrency_limit=args.concurrency)


def main(argv: list[str] | None = None) -> int:
    from detdemo.errors import DetDemoError

    args = parse_args(argv)
    try:
        demo = make_demo(args)
    except DetDemoError as exc:
        print(f"detdemo: error: {exc}", file=sys.stderr)
        return 2
    from detdemo.app.upload import MAX_UPLOAD_BYTES

    demo.queue(max_size=64).launch(server_name=args.host, server_port=args.port, share=args.share,
                                   max_file_size=MAX_UPLOAD_BYTES, show_error=True)
    return 0
