"""``detdemo export`` and ``detdemo check-export``: export a checkpoint, then prove the exports match it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to TorchScript and/or ONNX")
    from export.formats import FORMATS

    p.add_argument("--checkpoint", "--model", dest="checkpoint", required=True,
                   help="a detdemo checkpoint or a training run folder")
    p.add_argument("--format", nargs="+", default=list(FORMATS), choices=tuple(FORMATS))
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
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (every backend runs there)")
    c.set_defaults(func=run_check)


def run_export(args: argparse.Namespace) -> int:
    from export.exporters import export_checkpoint

    paths = export_checkpoint(args.checkpoint, tuple(args.format), args.out)
    for kind, path in paths.items():
        print(f"{kind:12s} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.check:
        return run_check(argparse.Namespace(dir=args.out, images=None, box_tol=None, score_tol=None,
                                            mask_iou_min=None, report_dir=None, probes="full", device="auto"))
    return 0


def _probe_files(items: list[str] | None) -> list[Path] | None:
    from detdemo.commands.common import list_images

    if not items:
        return None
    files: list[Path] = []
    for item in items:
        files += list_images(Path(item))
    return files


def run_check(args: argparse.Namespace) -> int:
    import sys
    from dataclasses import replace

    from detdemo.errors import DetDemoError
    from detdemo.models import get_spec
    from export.formats import BACKENDS
    from export.parity import Tolerances, default_probes, run_parity, summary_line, write_reports
    from export.runtime import folder_files, load_predictor, read_manifest

    folder = Path(args.dir)
    if not folder.is_dir() or read_manifest(folder) is None:
        raise DetDemoError(f"{folder}: not an export folder (no export.json); run `detdemo export` first")
    files = folder_files(folder)
    if "pytorch" not in files:
        raise DetDemoError(f"{folder}: holds no eager checkpoint to compare against")
    reference = load_predictor(files["pytorch"], "pytorch", args.device)
    candidates = [load_predictor(path, backend, args.device) for backend, path in files.items()
                  if backend != "pytorch"]
    if not candidates:
        raise DetDemoError(f"{folder}: holds no exported model")
    for p in [reference, *candidates]:
        for note in p.notes:
            print(f"warning: {note}", file=sys.stderr)
    tol = Tolerances()
    overrides = {"box_px": args.box_tol, "score": args.score_tol, "mask_iou_min": args.mask_iou_min}
    tol = replace(tol, **{k: v for k, v in overrides.items() if v is not None})
    skipped: list[str] = []
    probes = default_probes(_probe_files(args.images), extras=args.probes == "full", skipped=skipped)
    for reason in skipped:
        print(f"warning: skipped probe {reason}", file=sys.stderr)
    family = get_spec(_arch(files["pytorch"])).family_info
    report = run_parity(reference, candidates, probes, tol, cap=family.detection_cap(reference.model),
                        score_threshold=family.score_floor(reference.model))
    report["skipped_images"] = skipped
    out = Path(args.report_dir) if args.report_dir else folder
    js, md = write_reports(report, out)
    for backend, b in report["backends"].items():
        print(f"{BACKENDS[backend].label:12s} {'PASS' if b['passed'] else 'FAIL'}  "
              + summary_line(b["overall"], report["tolerances"]))
        for r in b["images"]:
            if not r["passed"]:
                print(f"  {r['probe']}: {'; '.join(r['reasons'])}")
    print(f"reports: {js} and {md}")
    return 0 if report["passed"] else 1


def _arch(checkpoint: Path) -> str:
    from detdemo.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint, mmap=True)["model_config"]["arch"]
