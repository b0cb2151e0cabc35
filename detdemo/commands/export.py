"""``detdemo export`` and ``detdemo check-export``: export a checkpoint, then prove the exports match it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to TorchScript and/or ONNX")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", nargs="+", default=["torchscript", "onnx"], choices=("torchscript", "onnx"))
    p.add_argument("--out", required=True, help="folder for model.pt, model.torchscript.pt, model.onnx")
    p.add_argument("--check", action="store_true", help="run check-export on the result")
    p.set_defaults(func=run_export)

    c = sub.add_parser("check-export", help="compare eager and exported models on probe images (exit 1 on fail)")
    c.add_argument("dir", help="an export folder")
    c.add_argument("--images", nargs="*", default=None, help="probe images or folders (default: synthetic)")
    c.add_argument("--box-tol", type=float, default=None, help="max box difference in pixels")
    c.add_argument("--score-tol", type=float, default=None, help="max score difference")
    c.add_argument("--mask-iou-min", type=float, default=None, help="min mask IoU of matched detections")
    c.add_argument("--report-dir", default=None, help="where parity.json/.md go (default: the export folder)")
    c.add_argument("--probes", choices=("full", "basic"), default="full",
                   help="full: images + blank, after-blank, tiny, large, grayscale; basic: images + blank, after-blank")
    c.set_defaults(func=run_check)


def run_export(args: argparse.Namespace) -> int:
    from export.exporters import export_checkpoint

    paths = export_checkpoint(args.checkpoint, tuple(args.format), args.out)
    for kind, path in paths.items():
        print(f"{kind:12s} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.check:
        return run_check(argparse.Namespace(dir=args.out, images=None, box_tol=None, score_tol=None,
                                            mask_iou_min=None, report_dir=None, probes="full"))
    return 0


def _probe_files(items: list[str] | None) -> list[Path] | None:
    from detdemo.commands.predict import list_images

    if not items:
        return None
    files: list[Path] = []
    for item in items:
        files += list_images(Path(item))
    return files


def model_cutoffs(model) -> tuple[int | None, float]:
    """The detector's own detection cap and score threshold, where unmatched detections are expected."""
    heads = getattr(model, "roi_heads", None)
    owner = heads if heads is not None else model
    cap = getattr(owner, "detections_per_img", None)
    threshold = getattr(owner, "score_thresh", 0.0)
    return cap, float(threshold)


def run_check(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from detdemo.errors import DetDemoError
    from export.exporters import EAGER_FILE, ONNX_FILE, TORCHSCRIPT_FILE
    from export.parity import Tolerances, default_probes, run_parity, write_reports
    from export.runtime import EagerPredictor, OnnxPredictor, TorchScriptPredictor

    folder = Path(args.dir)
    if not (folder / EAGER_FILE).exists():
        raise DetDemoError(f"{folder}: not an export folder (no {EAGER_FILE}); run `detdemo export` first")
    reference = EagerPredictor(folder / EAGER_FILE)
    candidates = []
    if (folder / TORCHSCRIPT_FILE).exists():
        candidates.append(TorchScriptPredictor(folder / TORCHSCRIPT_FILE))
    if (folder / ONNX_FILE).exists():
        candidates.append(OnnxPredictor(folder / ONNX_FILE))
    if not candidates:
        raise DetDemoError(f"{folder}: holds no exported model ({TORCHSCRIPT_FILE} or {ONNX_FILE})")
    tol = Tolerances()
    overrides = {"box_px": args.box_tol, "score": args.score_tol, "mask_iou_min": args.mask_iou_min}
    tol = replace(tol, **{k: v for k, v in overrides.items() if v is not None})
    probes = default_probes(_probe_files(args.images), extras=args.probes == "full")
    cap, threshold = model_cutoffs(reference.model)
    report = run_parity(reference, candidates, probes, tol, cap=cap, score_threshold=threshold)
    out = Path(args.report_dir) if args.report_dir else folder
    out.mkdir(parents=True, exist_ok=True)
    js, md = write_reports(report, out)
    for backend, b in report["backends"].items():
        o = b["overall"]
        print(f"{backend:12s} {'PASS' if b['passed'] else 'FAIL'}  detections {o['detections']}, unmatched "
              f"{o['unmatched']}, at cut-off {o['boundary']}, max box diff {o['max_box_diff_px']:.3g} px, max score "
              f"diff {o['max_score_diff']:.3g}, min mask IoU {o['mask_iou_min']}"
              + (f" ({o['masks_not_compared']} masks of boxes < {tol.mask_min_box_px} px not compared)"
                 if o["masks_not_compared"] else ""))
        for r in b["images"]:
            if not r["passed"]:
                print(f"  {r['probe']}: {'; '.join(r['reasons'])}")
    print(f"reports: {js} and {md}")
    return 0 if report["passed"] else 1
