"""Exported-model parity in a user's own CI: the pytest plugin, the report API, JUnit XML, the documented recipe,
and the order of checks (every input refused before any model runs; reports written only by a completed check)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from detdemo.cli import main

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "models" / "shapes"
BCCD = REPO / "models" / "bccd"


def fp32_copy(folder: Path) -> Path:
    """The bundled shapes export's full-precision files (checkpoint, ONNX, pt2) and its manifest, copied: these tests
    are about the checker's cases, reports and plugin; the reduced-precision gate has its own (test_gate)."""
    kept = ("eager", "onnx", "pt2")
    shutil.copytree(SHAPES, folder, ignore=shutil.ignore_patterns("examples", "model.int8.*", "model.xml", "model.bin"))
    manifest = json.loads((folder / "export.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k in kept}
    manifest["verified"] = {k: v for k, v in (manifest.get("verified") or {}).items() if k in kept}
    (folder / "export.json").write_text(json.dumps(manifest, indent=1))
    return folder


def _junit(path: Path) -> tuple[dict, dict[str, str]]:
    """(suite counts, {test case name: outcome}) of a JUnit XML file, as a CI system reads it."""
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    outcomes = {}
    for tc in suite.iter("testcase"):
        outcome = "failed" if tc.find("failure") is not None else "skipped" if tc.find("skipped") is not None \
            else "passed"
        outcomes[f"{tc.get('classname')}::{tc.get('name')}"] = outcome  # both writers: <...folder>.<file>::<check>
    return counts, outcomes


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """The bundled shapes export with its ONNX file re-exported from a mask head scaled by 1.03 (same export id, so
    only the checker can tell): the mask probabilities move by more than 1e-2."""
    from detdemo.checkpoint import load_checkpoint
    from detdemo.models import model_from_checkpoint
    from export.exporters import export_onnx

    folder = tmp_path_factory.mktemp("ci") / "damaged"
    fp32_copy(folder)
    data = load_checkpoint(folder / "model.pt")
    model, cfg = model_from_checkpoint(data)
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(1.03)
    # the legacy exporter: seconds instead of a minute, and what is tested here is the checker
    export_onnx(model, cfg, folder / "model.onnx", export_id=data["export_id"], exporter="legacy")
    return folder


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ci") / "good"
    fp32_copy(folder)
    return folder


def test_the_api_reports_each_file_and_check_and_junit_counts_the_same(damaged, tmp_path, capsys):
    from export.check import check_export

    result = check_export(damaged, probes="basic")
    assert not result.passed
    assert [(c.file, c.check, c.outcome) for c in result.cases] == [
        ("onnx", "parity", "failed"), ("pt2", "parity", "passed")]
    assert "soft mask probability differs" in result.case("onnx", "parity").message
    assert "model.onnx::parity" in result.failures()
    before = (damaged / "parity.json").read_bytes()
    assert (damaged / "parity.json").read_bytes() == before  # the API writes nothing by itself

    xml = tmp_path / "parity.xml"
    assert main(["check-export", str(damaged), "--probes", "basic", "--junit-xml", str(xml)]) == 1
    counts, outcomes = _junit(xml)
    assert counts == {"tests": 2, "failures": 1, "errors": 0, "skipped": 0}
    assert outcomes == {"damaged.model.pt2::parity": "passed", "damaged.model.onnx::parity": "failed"}
    assert "2 test cases" in capsys.readouterr().out


def test_the_pytest_plugin_passes_the_bundled_export_and_names_the_damaged_file(pytester, good, damaged):
    """Two folders and a user's own test through the fixture, in one session (the checks run once per folder)."""
    pytester.makepyfile(test_mine=f"""
        def test_onnx_within_a_tenth_of_a_pixel(detdemo_parity):
            result = detdemo_parity({str(good)!r}, probes="basic")
            assert result.case("onnx", "parity").outcome == "passed"
            assert result.parity["backends"]["onnx"]["overall"]["max_box_diff_px"] < 0.1
            assert detdemo_parity({str(good)!r}, probes="basic") is result  # cached
    """)
    xml = pytester.path / "plugin.xml"
    result = pytester.runpytest("--detdemo-export", str(good), "--detdemo-export", str(damaged),
                                "--detdemo-probes", "basic", f"--junitxml={xml}", "-p", "no:cacheprovider", "-rfs")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([f"*{damaged}/model.onnx::parity: *soft mask probability differs by 0.0068*",
                                 "FAILED *damaged::model.onnx::parity*"])
    counts, outcomes = _junit(xml)
    assert counts["tests"] == 5 and counts["failures"] == 1 and counts["skipped"] == 0
    failed = [name for name, outcome in outcomes.items() if outcome == "failed"]
    assert len(failed) == 1 and failed[0].endswith("damaged.model.onnx::parity")  # as check-export names it
    # -k selects among the collected checks like any other tests
    only = pytester.runpytest("--detdemo-export", str(good), "--detdemo-probes", "basic", "-k", "pt2",
                              "-p", "no:cacheprovider")
    only.assert_outcomes(passed=1, deselected=2)


def test_reduced_precision_files_are_skipped_without_data_never_passed(pytester):
    """The BCCD export's INT8 file: its parity test is skipped with its figures, its AP gate skipped for want of
    labelled data, saying so."""
    result = pytester.runpytest("--detdemo-export", str(BCCD), "--detdemo-probes", "basic", "-rs",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*int8 file: its AP gate needs labelled data*"])


def test_a_folder_that_is_not_an_export_is_a_usage_error(pytester, tmp_path):
    result = pytester.runpytest("--detdemo-export", str(tmp_path / "missing"), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--detdemo-export*missing*"])


# -- the documented recipe -------------------------------------------------------------------------------------


def test_the_ci_recipe_runs_as_documented_in_a_temporary_repository(tmp_path):
    """docs/ci.md's commands, verbatim, in a fresh repository: the model comes from a Hub cache laid out by hand
    (offline), the tests run through the plugin, and the JUnit file they leave counts every file. The install step
    runs pip for real against this checkout, as a dry run (the test's environment already has detdemo)."""
    from export.publish import stage_model_repo
    from tests.hubcache import populate

    text = (REPO / "docs" / "ci.md").read_text()
    recipe = re.search(r"<!-- ci-recipe -->\n```bash\n(.*?)```", text, re.S).group(1)
    repo = tmp_path / "user-repo"
    (repo / "ci").mkdir(parents=True)
    (repo / "ci" / "parity.sh").write_text(recipe)
    (repo / "tests" / "images").mkdir(parents=True)
    for image in sorted((SHAPES / "examples").glob("*.jpg"))[:2]:
        shutil.copy(image, repo / "tests" / "images")
    stage_model_repo(fp32_copy(tmp_path / "shapes"), tmp_path / "model", "alice/shapes", dataset="shapes",
                     license="bsd-3-clause")
    cache = tmp_path / "hub"
    commit = populate(cache, "alice/shapes", tmp_path / "model")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pip").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pip "$@" --dry-run --no-deps '
                              "--no-build-isolation --no-index -q\n")
    (shim / "pip").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "MODEL_REPO": f"alice/shapes@{commit}",
           "DETDEMO_SOURCE": str(REPO), "PYTHONPATH": str(REPO)}
    run = subprocess.run(["bash", "ci/parity.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts, outcomes = _junit(repo / "parity.xml")
    assert counts["failures"] == 0 and counts["tests"] == 2
    assert sorted(n.split("::")[0].rsplit(".model.", 1)[1] + "::" + n.split("::")[1] for n in outcomes) == \
        ["onnx::parity", "pt2::parity"]
    assert set(outcomes.values()) == {"passed"}


# -- order of checks: refuse before working, never overwrite on the way to an error ---------------------------


def _no_model_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model ran before the inputs were validated")

    monkeypatch.setattr("export.check.run_parity", refuse)
    monkeypatch.setattr("export.check.accuracy_report", refuse)
    monkeypatch.setattr("export.exporters.export_checkpoint", refuse)
    monkeypatch.setattr("detdemo.engine.evaluate.evaluate_predictor", refuse)


def test_check_export_refuses_foreign_classes_before_checking_and_keeps_its_reports(tmp_path, monkeypatch, capsys):
    from tests.conftest import shared

    coco = shared("coco128")
    folder = tmp_path / "bccd"
    shutil.copytree(BCCD, folder, ignore=shutil.ignore_patterns("examples"))
    reports = {p.name: p.read_bytes() for p in folder.glob("*.*") if p.stem in ("parity", "accuracy")}
    manifest = (folder / "export.json").read_bytes()
    _no_model_runs(monkeypatch)
    assert main(["check-export", str(folder), "--data", str(coco)]) == 2
    err = capsys.readouterr().err
    assert "not among the expected classes" in err and "Platelets" in err
    assert {p: (folder / p).read_bytes() for p in reports} == reports
    assert (folder / "export.json").read_bytes() == manifest


def test_check_export_interrupted_during_the_accuracy_check_keeps_the_previous_reports(tmp_path, monkeypatch,
                                                                                        shapes_dir):
    """Parity ran and would have passed; the accuracy check then dies: nothing of the incomplete run is written."""
    folder = tmp_path / "shapes"
    fp32_copy(folder)
    before = {name: (folder / name).read_bytes() for name in ("parity.json", "accuracy.json", "export.json")}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("export.check.accuracy_report", interrupted)
    assert main(["check-export", str(folder), "--probes", "basic", "--data", str(shapes_dir)]) == 130
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_export_check_publish_and_eval_refuse_a_foreign_dataset_before_any_work(tmp_path, monkeypatch, capsys):
    from tests.conftest import shared

    coco = str(shared("coco128"))
    _no_model_runs(monkeypatch)
    out = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(BCCD / "model.pt"), "--out", str(out), "--check", "--data", coco]) == 2
    assert "not among the expected classes" in capsys.readouterr().err and not out.exists()
    assert main(["export", "--checkpoint", str(BCCD / "model.pt"), "--out", str(out), "--data", coco]) == 2
    assert "--data is the labelled set of --check" in capsys.readouterr().err and not out.exists()
    staging = tmp_path / "publish"
    assert main(["publish", "--model", str(BCCD / "model.pt"), "--out", str(staging), "--data", coco,
                 "--dataset", "bccd", "--license", "mit"]) == 2
    assert "not among the expected classes" in capsys.readouterr().err and not (staging / "export").exists()
    assert main(["eval", "--model", str(BCCD), "--data", coco, "--out", str(tmp_path / "e.json")]) == 2
    assert "not among the expected classes" in capsys.readouterr().err and not (tmp_path / "e.json").exists()


def test_reports_that_cannot_be_written_are_refused_before_any_work(tmp_path, monkeypatch, capsys, shapes_dir):
    _no_model_runs(monkeypatch)
    a_folder = tmp_path / "a_folder"
    a_folder.mkdir()
    assert main(["check-export", str(SHAPES), "--junit-xml", str(a_folder)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["eval", "--model", str(SHAPES), "--data", str(shapes_dir), "--out", str(a_folder)]) == 2
    assert "is a folder" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["check-export", str(SHAPES), "--report-dir", str(blocked / "reports")]) == 2
    assert "cannot write reports" in capsys.readouterr().err
