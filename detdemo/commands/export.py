"""``detdemo export`` and ``detdemo check-export``: export a checkpoint, then prove the exports match it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from detdemo.data.layout import LAYOUTS
    from export.formats import DEFAULT_FORMATS, EXPORTED, ONNX_EXPORTERS

    p = sub.add_parser("export", help="export a checkpoint to ONNX, ExportedProgram (.pt2), AOTInductor, TorchScript, "
                                      "OpenVINO and INT8 versions")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", required=True,
                   help="a detdemo checkpoint or a training run folder")
    p.add_argument("--format", nargs="+", default=list(DEFAULT_FORMATS), choices=EXPORTED,
                   help=f"default: {' '.join(DEFAULT_FORMATS)} (exporters PyTorch keeps; torchscript is deprecated); "
                        "the INT8 and OpenVINO files are made from the onnx file; openvino's IR runs as two "
                        "backends, fp32 (openvino) and bf16 (openvino-bf16)")
    p.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="auto",
                   help="auto (default): the dynamo exporter where torch.export handles the architecture, the legacy "
                        "TorchScript-based one (deprecated) elsewhere")
    p.add_argument("--device", default="cpu",
                   help="what the aoti package is compiled for: cpu (default), cuda or cuda:N (on a machine with a "
                        "GPU)")
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
    p.add_argument("--max-ap-drop", type=float, default=None, metavar="D",
                   help="INT8 files: return the quantised layers that cost the most AP to float until eager AP - INT8 "
                        "AP <= D (bbox, and segm for mask models) on the search images: --search-data, or else a "
                        "seeded half of --data's images, the other half giving the verdict")
    p.add_argument("--search-data", default=None, metavar="DATA",
                   help="with --max-ap-drop: labelled images that steer the search (never the verdict's images)")
    p.set_defaults(func=run_export)

    c = sub.add_parser("check-export", help="compare eager and exported models on probe images and, with --data, by "
                                            "AP on your data (exit 1 on fail, 3 when an AP gate is inconclusive)")
    c.add_argument("dir", help="an export folder")
    c.add_argument("--images", nargs="*", default=None, help="probe images or folders (default: synthetic)")
    c.add_argument("--box-tol", type=tolerance, default=None, help="max box difference in pixels")
    c.add_argument("--score-tol", type=tolerance, default=None, help="max score difference")
    c.add_argument("--mask-iou-min", type=fraction, default=None, help="min mask IoU of matched detections")
    c.add_argument("--report-dir", default=None, help="where the reports go (default: the export folder)")
    c.add_argument("--probes", choices=("full", "basic"), default="full",
                   help="full: images + blank, after-blank, tiny, large, grayscale; basic: images + blank, after-blank")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (every backend runs there)")
    c.add_argument("--data", default=None, help="labelled dataset: evaluate eager and every file on it (AP deltas with "
                                                "their bootstrap intervals: PASS, FAIL or INCONCLUSIVE)")
    c.add_argument("--split", default="val")
    c.add_argument("--layout", choices=LAYOUTS)
    c.add_argument("--ap-tol", type=tolerance, default=None, help="max |dAP| of float32 exports (default 0.002)")
    c.add_argument("--reduced-ap-tol", type=tolerance, default=None,
                   help="max |dAP| of reduced-precision exports (default 0.01)")
    c.add_argument("--junit-xml", default=None, metavar="FILE",
                   help="also write the verdicts as JUnit XML (one test case per exported file x check)")
    c.set_defaults(func=run_check)


def tolerance(text: str) -> float:
    """A tolerance option: a number >= 0 (a negative limit would fail every file, a NaN pass none; both are typos)."""
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text}")
    return value


def exit_code(verdict: str) -> int:
    """check-export's exit status: 0 PASS, 1 FAIL, 3 INCONCLUSIVE (nothing failed, but an AP gate could not decide
    on this data, so the export is not verified); 2 is every command's unusable-input status."""
    from export.gate import FAIL, INCONCLUSIVE, PASS

    return {PASS: 0, FAIL: 1, INCONCLUSIVE: 3}[verdict]


def run_export(args: argparse.Namespace) -> int:
    from detdemo.errors import DetDemoError
    from export.exporters import export_checkpoint
    from export.formats import FORMATS
    from export.int8 import calibration_files

    if args.data and not args.check:
        raise DetDemoError("--data is the labelled set of --check: add --check (or drop --data)")
    calibration = None
    int8 = [f for f in args.format if FORMATS[f].precision == "int8"]
    if int8:
        if not args.calibration:
            raise DetDemoError(f"--format {' '.join(int8)} needs --calibration DATA_OR_FOLDER: INT8 ranges come from "
                               "your own images")
        calibration = calibration_files(args.calibration, args.calibration_images)
    search = repair_search(args, int8)  # opened and split before exporting anything
    if args.check and args.data:  # refuse a dataset the check cannot use before exporting anything, too
        check_data_usable(args.checkpoint, args.data, args.split)
    skipped: dict[str, str] = {}
    paths = export_checkpoint(args.checkpoint, tuple(args.format), args.out, calibration=calibration,
                              onnx_exporter=args.onnx_exporter, device=args.device, skipped=skipped)
    if search is not None:
        from export.repair import repair_folder

        dataset, info, config = search
        repair_folder(args.out, tuple(int8), dataset, info, calibration, config)
    for kind, path in paths.items():
        print(f"{kind:12s} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    for kind, why in skipped.items():
        print(f"{kind:12s} skipped: {why}")
    if args.check:
        return run_check(check_args(args.out, data=args.data, split=args.split))
    return 0


def repair_search(args: argparse.Namespace, int8: list[str]):
    """(search dataset, what the manifest records about it, RepairConfig) for --max-ap-drop, or None."""
    from detdemo.checkpoint import load_checkpoint, resolve_checkpoint_path
    from detdemo.errors import DetDemoError
    from export.repair import RepairConfig, search_dataset

    if args.max_ap_drop is None:
        if args.search_data:
            raise DetDemoError("--search-data steers --max-ap-drop's search: add --max-ap-drop D (or drop it)")
        return None
    if not int8:
        raise DetDemoError("--max-ap-drop repairs INT8 files: add --format onnx-int8 and/or openvino-int8")
    if not args.max_ap_drop >= 0:
        raise DetDemoError(f"--max-ap-drop must be >= 0 (an AP difference, e.g. 0.01), got {args.max_ap_drop}")
    if not args.search_data and not (args.check and args.data):
        raise DetDemoError("--max-ap-drop needs labelled images to steer its search: --search-data DATA, or --check "
                           "--data DATA (a seeded half of its images steers the search, the other half gives the "
                           "verdict)")
    if args.search_data and args.data and Path(args.search_data).resolve() == Path(args.data).resolve():
        raise DetDemoError(f"--search-data and --data are the same dataset ({args.data}): the images that steer the "
                           "search must not give the verdict; drop --search-data to split --data's images instead")
    names = list(load_checkpoint(resolve_checkpoint_path(args.checkpoint))["model_config"]["class_names"])
    config = RepairConfig(max_drop=args.max_ap_drop)
    dataset, info = search_dataset(args.search_data or args.data, names, args.split, config,
                                   separate=bool(args.search_data))
    print(f"--max-ap-drop {config.max_drop}: searching on {len(dataset)} images ({info['source']})")
    return dataset, info, config


def check_args(folder, data: str | None = None, split: str = "val") -> argparse.Namespace:
    """check-export's options with their defaults, for commands that run the check on a folder they made."""
    return argparse.Namespace(dir=folder, images=None, box_tol=None, score_tol=None, mask_iou_min=None,
                              report_dir=None, probes="full", device="auto", data=data, split=split, layout=None,
                              ap_tol=None, reduced_ap_tol=None, junit_xml=None)


def check_data_usable(checkpoint, data: str, split: str) -> None:
    """The labelled split opens and its classes are the checkpoint's (read without building the model)."""
    from detdemo.checkpoint import load_checkpoint, resolve_checkpoint_path
    from export.accuracy import open_accuracy_data

    cfg = load_checkpoint(resolve_checkpoint_path(checkpoint))["model_config"]
    open_accuracy_data(data, list(cfg["class_names"]), split)


def run_check(args: argparse.Namespace) -> int:
    """Validate everything, run every check, and only then write the reports (and the JUnit file)."""
    from detdemo.commands.common import check_writable
    from export.accuracy import AccuracyTolerances, figures_of, verdict_line
    from export.check import check_export, junit_xml, tolerances_from
    from export.gate import INCONCLUSIVE
    from export.parity import summary_line

    if getattr(args, "junit_xml", None):
        check_writable(Path(args.junit_xml))
    if args.report_dir:
        check_writable(Path(args.report_dir) / "parity.json", what="reports")
    acc_tol = AccuracyTolerances(**{k: v for k, v in (("fp32", args.ap_tol), ("reduced", args.reduced_ap_tol))
                                    if v is not None})
    result = check_export(args.dir, images=args.images, data=getattr(args, "data", None), split=args.split,
                          layout=args.layout, device=args.device, probes=args.probes,
                          tolerances=tolerances_from(args.box_tol, args.score_tol, args.mask_iou_min),
                          accuracy_tolerances=acc_tol)
    written = result.write_reports(args.report_dir)
    report = result.parity
    for name, b in report["backends"].items():
        verdict = ("PASS" if b["passed"] else "FAIL") if b["gated"] else "(reported; judged by accuracy)"
        print(f"{name:12s} {verdict}  " + summary_line(b["overall"], report["tolerances"]))
        for r in b["images"]:
            if not r["passed"] and b["gated"]:
                print(f"  {r['probe']}: {'; '.join(r['reasons'])}")
    if result.accuracy is not None:
        accuracy = result.accuracy
        for name, f in accuracy["files"].items():
            aps = ", ".join(f"{t} AP {f['stats'][t]['AP']:.4f}" for t in accuracy["iou_types"])
            verdict = "" if name == "eager" else f" ({verdict_line(figures_of(accuracy, name))})"
            print(f"{name:12s} {f['precision']:5s} {aps}{verdict}")
    print(f"reports: {', '.join(str(p) for p in written)}")
    if getattr(args, "junit_xml", None):
        print(f"JUnit XML: {junit_xml(result, args.junit_xml)} ({len(result.cases)} test cases)")
    if result.verdict == INCONCLUSIVE:
        print(f"not verified: {sum(c.inconclusive for c in result.cases)} AP gate(s) inconclusive on "
              f"{result.accuracy['images']} images (exit {exit_code(INCONCLUSIVE)}); nothing failed")
    return exit_code(result.verdict)
