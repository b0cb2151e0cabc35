"""``detdemo export`` and ``detdemo check-export``: export a checkpoint, then prove the exports match it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from detdemo.data.layout import LAYOUTS
    from export.formats import DEFAULT_FORMATS, FORMATS

    p = sub.add_parser("export", help="export a checkpoint to TorchScript, ONNX, OpenVINO and their INT8 versions")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", required=True,
                   help="a detdemo checkpoint or a training run folder")
    p.add_argument("--format", nargs="+", default=list(DEFAULT_FORMATS), choices=tuple(FORMATS),
                   help=f"default: {' '.join(DEFAULT_FORMATS)}; the INT8 and OpenVINO files are made from the onnx "
                        "file")
    p.add_argument("--out", required=True, help="the export folder")
    p.add_argument("--calibration", default=None, metavar="DATA_OR_FOLDER",
                   help="images that set INT8 ranges (onnx-int8, openvino-int8): a folder of images or a dataset (its "
                        "train split)")
    p.add_argument("--calibration-images", type=int, default=64, help="how many calibration images (seeded pick)")
    p.add_argument("--check", action="store_true", help="run check-export on the result")
    p.add_argument("--data", default=None,
                   help="with --check: also measure every file's AP on this labelled dataset and record the verified "
                        "figures in the export manifest (what the app shows)")
    p.add_argument("--split", default="val", help="with --data: the split to evaluate on")
    p.set_defaults(func=run_export)

    c = sub.add_parser("check-export", help="compare eager and exported models on probe images and, with --data, by "
                                            "AP on your data (exit 1 on fail)")
    c.add_argument("dir", help="an export folder")
    c.add_argument("--images", nargs="*", default=None, help="probe images or folders (default: synthetic)")
    c.add_argument("--box-tol", type=float, default=None, help="max box difference in pixels")
    c.add_argument("--score-tol", type=float, default=None, help="max score difference")
    c.add_argument("--mask-iou-min", type=float, default=None, help="min mask IoU of matched detections")
    c.add_argument("--report-dir", default=None, help="where the reports go (default: the export folder)")
    c.add_argument("--probes", choices=("full", "basic"), default="full",
                   help="full: images + blank, after-blank, tiny, large, grayscale; basic: images + blank, after-blank")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (every backend runs there)")
    c.add_argument("--data", default=None, help="labelled dataset: evaluate eager and every file on it (AP deltas)")
    c.add_argument("--split", default="val")
    c.add_argument("--layout", choices=LAYOUTS)
    c.add_argument("--ap-tol", type=float, default=None, help="max |dAP| of float32 exports (default 0.002)")
    c.add_argument("--reduced-ap-tol", type=float, default=None,
                   help="max |dAP| of reduced-precision exports (default 0.01)")
    c.set_defaults(func=run_check)


def run_export(args: argparse.Namespace) -> int:
    from export.exporters import export_checkpoint
    from export.formats import FORMATS
    from export.int8 import calibration_files

    calibration = None
    int8 = [f for f in args.format if FORMATS[f].precision == "int8"]
    if int8:
        if not args.calibration:
            from detdemo.errors import DetDemoError

            raise DetDemoError(f"--format {' '.join(int8)} needs --calibration DATA_OR_FOLDER: INT8 ranges come from "
                               "your own images")
        calibration = calibration_files(args.calibration, args.calibration_images)
    paths = export_checkpoint(args.checkpoint, tuple(args.format), args.out, calibration=calibration)
    for kind, path in paths.items():
        print(f"{kind:12s} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.check:
        return run_check(argparse.Namespace(dir=args.out, images=None, box_tol=None, score_tol=None,
                                            mask_iou_min=None, report_dir=None, probes="full", device="auto",
                                            data=args.data, split=args.split, layout=None, ap_tol=None,
                                            reduced_ap_tol=None))
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
    from export.accuracy import AccuracyTolerances, accuracy_report, verified_figures
    from export.accuracy import markdown as accuracy_markdown
    from export.formats import REDUCED
    from export.parity import Tolerances, default_probes, family_limits, run_parity, summary_line, write_reports
    from export.runtime import folder_files, format_backend, format_precision, load_predictor, read_manifest

    folder = Path(args.dir)
    if not folder.is_dir() or read_manifest(folder) is None:
        raise DetDemoError(f"{folder}: not an export folder (no export.json); run `detdemo export` first")
    files = folder_files(folder)
    if "eager" not in files:
        raise DetDemoError(f"{folder}: holds no eager checkpoint to compare against")
    reference = load_predictor(files["eager"], "pytorch", args.device)
    candidates = [(fmt, load_predictor(path, format_backend(fmt), args.device,
                                       precision="int8" if format_precision(fmt) == "int8" else None))
                  for fmt, path in files.items() if fmt != "eager"]
    if not candidates:
        raise DetDemoError(f"{folder}: holds no exported model")
    for p in [reference, *(c for _, c in candidates)]:
        for note in p.notes:
            print(f"warning: {note}", file=sys.stderr)
    tol = Tolerances()
    overrides = {"box_px": args.box_tol, "score": args.score_tol, "mask_iou_min": args.mask_iou_min}
    tol = replace(tol, **{k: v for k, v in overrides.items() if v is not None})
    skipped: list[str] = []
    probes = default_probes(_probe_files(args.images), extras=args.probes == "full", skipped=skipped)
    for reason in skipped:
        print(f"warning: skipped probe {reason}", file=sys.stderr)
    full_precision = {name for name, c in candidates if getattr(c, "precision", "fp32") not in REDUCED}
    report = run_parity(reference, candidates, probes, tol, gated=full_precision,
                        **family_limits(read_manifest(folder)["arch"], reference.model))
    report["skipped_images"] = skipped
    out = Path(args.report_dir) if args.report_dir else folder
    js, md = write_reports(report, out)
    for name, b in report["backends"].items():
        verdict = ("PASS" if b["passed"] else "FAIL") if b["gated"] else "(reported; judged by accuracy)"
        print(f"{name:12s} {verdict}  " + summary_line(b["overall"], report["tolerances"]))
        for r in b["images"]:
            if not r["passed"] and b["gated"]:
                print(f"  {r['probe']}: {'; '.join(r['reasons'])}")
    print(f"reports: {js} and {md}")
    passed = report["passed"]
    if getattr(args, "data", None):
        acc_tol = AccuracyTolerances(**{k: v for k, v in (("fp32", args.ap_tol), ("reduced", args.reduced_ap_tol))
                                        if v is not None})
        accuracy = accuracy_report(reference, candidates, args.data, args.split, args.layout, tol=acc_tol)
        from detdemo.fileio import write_json, write_text

        write_json(out / "accuracy.json", accuracy)
        write_text(out / "accuracy.md", accuracy_markdown(accuracy))
        for name, f in accuracy["files"].items():
            aps = ", ".join(f"{t} AP {f['stats'][t]['AP']:.4f}" for t in accuracy["iou_types"])
            delta = "" if name == "eager" else " (dAP " + ", ".join(
                f"{f['delta'][f'{t}_AP']:+.4f}" for t in accuracy["iou_types"]) + \
                f"; limit {f['limit']}: {'PASS' if f['passed'] else 'FAIL'})"
            print(f"{name:12s} {f['precision']:5s} {aps}{delta}")
        figures = verified_figures(accuracy)
        for name in figures:  # a float32 file is verified only if it also matched detection by detection
            if report["backends"][name]["gated"]:
                figures[name]["passed"] = figures[name]["passed"] and report["backends"][name]["passed"]
        try:
            from export.exporters import record_verification

            record_verification(folder, figures)
        except OSError as exc:
            print(f"warning: could not record the verified figures in {folder} ({exc})", file=sys.stderr)
        print(f"accuracy: {out / 'accuracy.json'} and {out / 'accuracy.md'}")
        passed = passed and accuracy["passed"]
    return 0 if passed else 1
