"""The export check as a Python API: one call that proves an export folder's files match their eager model, and
a report object that ``detdemo check-export``, its JUnit XML, the pytest plugin and users' own tests all read.

    from export.check import check_export
    result = check_export("exported/", images=["my_photos/"], data="data/val")
    assert result.passed, result.failures()   # False on a failure and on an inconclusive AP gate
    for case in result.cases:             # one per exported file x check ("parity", "accuracy")
        print(case.name, case.outcome, case.message)

An AP gate whose interval straddles its limit (``export.gate``: INCONCLUSIVE, too few images to tell) is a
skipped case with the reason, as CI systems show an unjudged test: never a pass, and not a failure either.
``ExportCheck.verdict`` says which of PASS, FAIL, INCONCLUSIVE the folder as a whole is; ``check-export`` exits
0, 1 and 3 for them.

Order of work: every input is validated before any model runs (the folder and its manifest, the probe images,
the labelled dataset and its classes against the model's), and nothing is written here: reports are written by
``write_reports`` only for a check that completed, so a refused or interrupted check never overwrites the
folder's previous parity/accuracy reports.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from detdemo.errors import DetDemoError
from export.accuracy import AccuracyTolerances, accuracy_report, open_accuracy_data, verified_figures
from export.formats import REDUCED
from export.gate import FAIL, INCONCLUSIVE, PASS
from export.parity import Tolerances, default_probes, family_limits, run_parity, summary_line

OUTCOMES = ("passed", "failed", "skipped")


@dataclass(frozen=True)
class CheckCase:
    """One exported file under one check: the unit a CI system shows as a test."""

    file: str  # the format name, e.g. "onnx", "onnx-int8"
    path: str
    check: str  # "parity" (detection by detection on the probes) or "accuracy" (AP on labelled data)
    outcome: str  # one of OUTCOMES; "skipped" never means passed (an unjudged file, with the reason)
    message: str
    inconclusive: bool = False  # skipped because its AP gate could not decide on this data (not by design)

    @property
    def name(self) -> str:
        return f"{Path(self.path).name}::{self.check}"


@dataclass
class ExportCheck:
    folder: Path
    parity: dict  # export.parity.run_parity's report
    accuracy: dict | None  # export.accuracy.accuracy_report's report, when labelled data was given
    skipped_images: list[str] = field(default_factory=list)
    cases: list[CheckCase] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every gated check passed and every AP gate decided: the export is verified. Cases skipped by design (a
        reduced-precision file's parity, its AP gate without labelled data) do not count against it."""
        return self.verdict == PASS

    @property
    def verdict(self) -> str:
        """FAIL if any case failed, else INCONCLUSIVE if an AP gate could not decide, else PASS."""
        if any(c.outcome == "failed" for c in self.cases):
            return FAIL
        return INCONCLUSIVE if any(c.inconclusive for c in self.cases) else PASS

    def failures(self) -> str:
        """The failed and the inconclusive cases with their reasons (what stops the folder passing)."""
        return "\n".join(f"{c.name}: {c.message}" for c in self.cases if c.outcome == "failed" or c.inconclusive)

    def case(self, file: str, check: str) -> CheckCase:
        for c in self.cases:
            if c.file == file and c.check == check:
                return c
        raise KeyError(f"no {check} check of {file!r} in {self.folder}")

    def write_reports(self, out_dir: str | Path | None = None, record: bool = True) -> list[Path]:
        """parity.json/md (and accuracy.json/md) into ``out_dir`` (default: the folder); with ``record``, the
        verified figures into the folder's manifest (what the app and the model card read)."""
        from detdemo.fileio import write_json, write_text
        from export.accuracy import markdown as accuracy_markdown
        from export.parity import write_reports

        out = Path(out_dir) if out_dir else self.folder
        written = list(write_reports(self.parity, out))
        if self.accuracy is not None:
            from export.manifest import read_manifest
            from export.repair import markdown_section

            repair = markdown_section(read_manifest(self.folder) or {}, self.accuracy.get("search_images_left_out", 0))
            written += [write_json(out / "accuracy.json", self.accuracy),
                        write_text(out / "accuracy.md", accuracy_markdown(self.accuracy) + repair)]
            if record:
                self._record()
        return written

    def _record(self) -> None:
        from export.exporters import record_verification

        figures = verified_figures(self.accuracy)
        for name in figures:  # a float32 file is verified only if it also matched detection by detection
            b = self.parity["backends"][name]
            if b["gated"]:
                figures[name]["passed"] = figures[name]["passed"] and b["passed"]
        try:
            record_verification(self.folder, figures)
        except OSError as exc:
            print(f"warning: could not record the verified figures in {self.folder} ({exc})", file=sys.stderr)


def _parity_case(name: str, b: dict, tol: dict) -> CheckCase:
    if not b["gated"]:
        return CheckCase(name, b["file"], "parity", "skipped",
                         f"{b['precision']} file: judged by its AP on labelled data, not detection by detection "
                         f"({summary_line(b['overall'], tol)})")
    failing = [f"{r['probe']} ({r['size'][0]}x{r['size'][1]}): {'; '.join(r['reasons'])}"
               for r in b["images"] if not r["passed"]]
    head = summary_line(b["overall"], tol)
    if failing:
        return CheckCase(name, b["file"], "parity", "failed", "; ".join(failing) + f" [{head}]")
    return CheckCase(name, b["file"], "parity", "passed", head)


def _accuracy_case(name: str, f: dict, report: dict) -> CheckCase:
    from export.accuracy import figures_of, verdict_line

    eager = report["files"]["eager"]["stats"]
    where = f"{report['data']} {report['split']}, {report['images']} images"
    aps = "; ".join(f"{t} AP {eager[t]['AP']:.4f} -> {f['stats'][t]['AP']:.4f}" for t in report["iou_types"])
    figures = figures_of(report, name)
    text = f"{aps}; {verdict_line(figures)} ({f['precision']}; {where})"
    verdict = figures["verdict"]
    if verdict == INCONCLUSIVE:
        return CheckCase(name, f["file"], "accuracy", "skipped", f"inconclusive: {text}", inconclusive=True)
    return CheckCase(name, f["file"], "accuracy", "passed" if verdict == PASS else "failed", text)


def planned_cases(folder: str | Path, with_data: bool) -> list[tuple[str, Path, str]]:
    """(format, file, check) of every case a check of ``folder`` produces, from its manifest alone (what the
    pytest plugin collects before any model loads): parity for every exported file; accuracy for every file
    when labelled data is given, and for reduced-precision files always (skipped without data: their only gate)."""
    from export.runtime import folder_files, format_precision

    planned = []
    for fmt, path in folder_files(folder).items():
        if fmt == "eager":
            continue
        planned.append((fmt, path, "parity"))
        if with_data or format_precision(fmt) in REDUCED:
            planned.append((fmt, path, "accuracy"))
    return planned


def cases_of(parity: dict, accuracy: dict | None) -> list[CheckCase]:
    """The cases a check's reports amount to, in the order ``planned_cases`` gives them."""
    from export.formats import format_precision

    tol = parity["tolerances"]
    cases = []
    for name, b in parity["backends"].items():
        cases.append(_parity_case(name, b, tol))
        if accuracy is not None and name in accuracy["files"]:
            cases.append(_accuracy_case(name, accuracy["files"][name], accuracy))
        elif format_precision(name) in REDUCED:
            cases.append(CheckCase(name, b["file"], "accuracy", "skipped",
                                   f"{b['precision']} file: its AP gate needs labelled data (--data)"))
    return cases


def _probe_files(items) -> list[Path] | None:
    from detdemo.fileio import list_images

    if not items:
        return None
    files: list[Path] = []
    for item in [items] if isinstance(items, str | Path) else items:
        files += list_images(Path(item))
    return files


def check_export(folder: str | Path, *, images=None, data: str | None = None, split: str = "val",
                 layout: str | None = None, device: str = "auto", probes: str = "full",
                 tolerances: Tolerances | None = None, accuracy_tolerances: AccuracyTolerances | None = None,
                 progress: bool = False, warn=None) -> ExportCheck:
    """Compare every exported file of ``folder`` with its eager checkpoint on probe images (``images``: files or
    folders; default synthetic) and, with ``data``, by AP on that labelled split. Writes nothing (see
    ``ExportCheck.write_reports``). Raises ``DetDemoError`` for unusable inputs, before any model runs.
    ``warn``: where notes go (default: stderr)."""
    from export.runtime import folder_files, format_backend, format_precision, load_predictor, read_manifest

    warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
    if probes not in ("full", "basic"):
        raise DetDemoError(f"probes must be 'full' or 'basic', not {probes!r}")
    folder = Path(folder)
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        raise DetDemoError(f"{folder}: not an export folder (no export.json); run `detdemo export` first")
    files = folder_files(folder)
    if "eager" not in files:
        raise DetDemoError(f"{folder}: holds no eager checkpoint to compare against")
    if len(files) < 2:
        raise DetDemoError(f"{folder}: holds no exported model")
    skipped: list[str] = []
    probe_images = default_probes(_probe_files(images), extras=probes == "full", skipped=skipped)
    for reason in skipped:
        warn(f"skipped probe {reason}")
    dataset, left_out = None, 0
    if data:  # the dataset's classes against the model's, before anything runs (the manifest records them)
        from export.repair import leave_out_search_images

        names = manifest.get("class_names")
        if names is None:
            names = load_predictor(files["eager"], "pytorch", "cpu").class_names
        dataset = open_accuracy_data(data, names, split, layout)
        dataset, left_out = leave_out_search_images(dataset, manifest)  # what steered a repair never judges it
    reference = load_predictor(files["eager"], "pytorch", device)
    candidates = [(fmt, load_predictor(path, format_backend(fmt), device, precision=format_precision(fmt)))
                  for fmt, path in files.items() if fmt != "eager"]
    for p in [reference, *(c for _, c in candidates)]:
        for note in p.notes:
            warn(note)
    full_precision = {name for name, c in candidates if getattr(c, "precision", "fp32") not in REDUCED}
    parity = run_parity(reference, candidates, probe_images, tolerances or Tolerances(), gated=full_precision,
                        **family_limits(manifest["arch"], reference.model))
    parity["skipped_images"] = skipped
    accuracy = None
    if dataset is not None:
        accuracy = accuracy_report(reference, candidates, data, split, layout,
                                   tol=accuracy_tolerances or AccuracyTolerances(), progress=progress,
                                   dataset=dataset)
        if left_out:
            warn(f"{left_out} image(s) of {data} steered this export's --max-ap-drop search: left out of the AP gate")
            accuracy["search_images_left_out"] = left_out
    return ExportCheck(folder, parity, accuracy, skipped, cases_of(parity, accuracy))


def tolerances_from(box_px=None, score=None, mask_iou_min=None) -> Tolerances:
    """Parity tolerances with the given overrides (None keeps the measured default)."""
    overrides = {"box_px": box_px, "score": score, "mask_iou_min": mask_iou_min}
    return replace(Tolerances(), **{k: v for k, v in overrides.items() if v is not None})


def junit_xml(result: ExportCheck, path: str | Path, suite: str = "detdemo check-export") -> Path:
    """The cases as JUnit XML (what every CI system renders): one testcase per file x check, the checker's reasons
    as the failure message, skipped cases with theirs."""
    import xml.etree.ElementTree as ET

    from detdemo.fileio import atomic_path

    counts = {o: sum(c.outcome == o for c in result.cases) for o in OUTCOMES}
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.cases)), failures=str(counts["failed"]),
                       errors="0", skipped=str(counts["skipped"]))
    for c in result.cases:
        # named as pytest's --junitxml names the plugin's tests: class <folder>.<file>, name <check>
        tc = ET.SubElement(ts, "testcase", classname=f"{result.folder.name}.{Path(c.path).name}", name=c.check,
                           file=c.path)
        if c.outcome == "failed":
            ET.SubElement(tc, "failure", message=c.message[:500]).text = c.message
        elif c.outcome == "skipped":
            ET.SubElement(tc, "skipped", message=c.message[:500])
        else:
            ET.SubElement(tc, "system-out").text = c.message
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return Path(path)
