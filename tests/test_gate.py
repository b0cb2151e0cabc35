"""The AP gate with paired bootstrap intervals (export.gate, export.accuracy): a damaged file fails, a faithful
reduced-precision file is inconclusive on 12 images and passes on 50, a float32 file identical to eager passes
on any set while one a detection's worth away is inconclusive rather than failed; the verdict rules themselves.

Measured (torch 2.14.1, onnxruntime 1.31.1, this recipe): the faithful INT8 file's 95 % intervals are bbox
[-0.0007, +0.0155], segm [-0.0034, +0.0060] on 12 images (INCONCLUSIVE) and bbox [-0.0074, +0.0036], segm
[-0.0066, +0.0009] on 50 (PASS, 0.0026 inside the 0.01 limit); it passes from 30 images on and on 100 too."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from detdemo.cli import main
from export.gate import FAIL, INCONCLUSIVE, PASS, combined, gate
from tests.conftest import REPO

pytest_plugins = ["pytester"]

BUNDLED = REPO / "models" / "shapes"
POOL, FEW = 50, 12


# --- the verdict rules ------------------------------------------------------------------------------------------

def test_a_verdict_reads_the_interval_against_the_limit():
    assert gate(0.0, 0.0, 0.0, 0.002, 4).verdict == PASS  # identical to eager: zero width, passes on any set
    assert gate(-0.003, -0.008, 0.004, 0.01, 100).verdict == PASS
    assert gate(-0.05, -0.09, -0.02, 0.01, 12).verdict == FAIL  # entirely beyond -limit
    assert gate(0.05, 0.02, 0.09, 0.01, 12).verdict == FAIL  # "better" by more than the limit fails too
    straddling = gate(-0.007, -0.04, 0.02, 0.01, 12)
    assert straddling.verdict == INCONCLUSIVE
    # widened to contain the full-set delta: a percentile interval that misses it cannot pass it
    assert gate(0.015, -0.004, 0.008, 0.01, 50).verdict == INCONCLUSIVE
    assert gate(0.0, math.nan, math.nan, 0.01, 3).verdict == INCONCLUSIVE  # no resample had ground truth


def test_images_to_decide_scales_the_interval_by_the_square_root_of_the_set_size():
    # delta -0.004 with sides 0.012 up and 0.010 down on 25 images: the lower side must shrink to 0.006
    g = gate(-0.004, -0.014, 0.008, 0.01, 25)
    assert g.verdict == INCONCLUSIVE
    expected = 25 * max((0.012 / 0.014) ** 2, (0.010 / 0.006) ** 2)  # 69.4
    assert g.images_to_decide == 70 and g.images_to_decide >= expected
    at = g.images_to_decide  # at that size the scaled interval fits within the limits
    assert g.delta - (g.delta - g.low) * math.sqrt(25 / at) >= -0.01
    beyond = gate(0.02, 0.005, 0.03, 0.01, 12)  # would fail once the lower side clears +limit
    assert beyond.images_to_decide == math.ceil(12 * (0.015 / 0.01) ** 2)
    assert gate(0.01, -0.01, 0.03, 0.01, 12).images_to_decide is None  # on the limit: no size decides it
    assert gate(0.0, 0.0, 0.0, 0.01, 12).images_to_decide is None  # decided already
    # a file: the fewest images at which a type beyond its limit fails, else the most every type needs to pass
    assert combined([beyond, g]) == (INCONCLUSIVE, beyond.images_to_decide)
    assert combined([g, gate(0.0, -0.002, 0.002, 0.01, 25)]) == (INCONCLUSIVE, 70)
    assert combined([g, gate(-0.05, -0.09, -0.02, 0.01, 25)])[0] == FAIL
    assert combined([gate(0.0, 0.0, 0.0, 0.002, 25)] * 2) == (PASS, None)


# --- on the bundled model ---------------------------------------------------------------------------------------

class Remembered:
    """A predictor that predicts each image once: the 12-image set is the first 12 of the 50-image pool."""

    def __init__(self, predictor) -> None:
        self.inner, self.seen = predictor, {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, image, score_threshold=None, timings=None):
        key = hashlib.sha1(image.numpy().tobytes()).hexdigest()
        if key not in self.seen:
            self.seen[key] = self.inner.predict(image, score_threshold=score_threshold, timings=timings)
        return self.seen[key]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[int, Path]:
    """Generated shapes with up to 12 objects per image (more objects per image, narrower intervals per image
    evaluated): 16 calibration images and a 50-image val pool whose first 12 images are also a set of their own
    (generation is per image index, so the same images)."""
    from detdemo.data.shapes import ShapesConfig, generate_shapes

    root = tmp_path_factory.mktemp("gate")
    cfg = ShapesConfig(max_objects=12)
    generate_shapes(root / "calibration", train=16, val=0, seed=5, cfg=cfg, progress=False)
    generate_shapes(root / "pool", train=0, val=POOL, seed=11, cfg=cfg, progress=False)
    generate_shapes(root / "few", train=0, val=FEW, seed=11, cfg=cfg, progress=False)
    blank = root / "blank"
    blank.mkdir()
    for i in range(4):
        Image.new("RGB", (300, 240), (127, 127, 127)).save(blank / f"{i}.png")
    return {"root": root, POOL: root / "pool", FEW: root / "few"}


@pytest.fixture(scope="module")
def eager() -> Remembered:
    from export.runtime import load_predictor

    return Remembered(load_predictor(BUNDLED / "model.pt", "pytorch", "cpu"))


@pytest.fixture(scope="module")
def predictors(sets, eager) -> dict[str, Remembered]:
    """Eager, an INT8 file calibrated on 16 images of the model's own kind (faithful), and one calibrated on blank
    images (damaged: its activation ranges are wrong), each exported with `detdemo export`."""
    from export.runtime import load_predictor

    out = {"eager": eager}
    for name, calibration in (("faithful", sets["root"] / "calibration"), ("damaged", sets["root"] / "blank")):
        folder = sets["root"] / name
        assert main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(folder), "--format",
                     "onnx-int8", "--calibration", str(calibration)]) == 0
        out[name] = Remembered(load_predictor(folder / "model.int8.onnx", "onnxruntime", "cpu", precision="int8"))
    return out


def _report(predictors, data: Path, *names: str) -> dict:
    from export.accuracy import accuracy_report

    return accuracy_report(predictors["eager"], [(n, predictors[n]) for n in names], str(data))


@pytest.mark.slow
def test_damaged_fails_and_faithful_is_inconclusive_on_12_images_and_passes_on_50(sets, predictors):
    from detdemo.app.catalogue import entry_from_path
    from export.accuracy import verified_figures
    from export.exporters import record_verification

    few = _report(predictors, sets[FEW], "damaged", "faithful")
    assert few["iou_types"] == ["bbox", "segm"] and few["images"] == FEW
    damaged, faithful = few["files"]["damaged"], few["files"]["faithful"]
    assert damaged["verdict"] == FAIL and not damaged["passed"]
    assert all(hi < -damaged["limit"] for _, hi in damaged["interval"].values())
    assert faithful["limit"] == 0.01 and faithful["verdict"] == INCONCLUSIVE and not faithful["passed"]
    assert faithful["images_to_decide"] > FEW  # the report says roughly how many images would decide it
    for key, (low, high) in faithful["interval"].items():
        assert low <= faithful["delta"][key] <= high  # pycocotools' own delta, inside its interval
    assert few["verdict"] == FAIL and few["bootstrap"]["resamples"] == 2000

    pool = _report(predictors, sets[POOL], "faithful")
    f = pool["files"]["faithful"]
    pool["files"]["onnx-int8"] = pool["files"].pop("faithful")  # recorded as check-export records it: the app
    record_verification(sets["root"] / "faithful", verified_figures(pool))  # offers a file that passed
    entry = entry_from_path(sets["root"] / "faithful")
    assert "onnxruntime-int8" in entry.backends and "±" in entry.label("onnxruntime-int8")
    assert f["verdict"] == PASS and f["passed"] and pool["verdict"] == PASS, (f["delta"], f["interval"])
    for key, (low, high) in f["interval"].items():
        assert -0.01 <= low <= f["delta"][key] <= high <= 0.01
        assert high - low < faithful["interval"][key][1] - faithful["interval"][key][0]  # narrower: more images
    assert pool["seconds"]["bootstrap"] > 0 and pool["seconds"]["evaluate"] > 0  # both recorded (bench: docs)


@pytest.mark.slow
def test_a_float32_file_identical_passes_and_one_a_detection_away_is_inconclusive(sets, eager):
    """12 images: an fp32 file equal to eager has a zero-width interval (PASS); one that lost a single detection
    moves AP by more than the 0.002 limit, which the point gate called FAIL; here it is INCONCLUSIVE (the image
    holding the difference is absent from a third of the resamples), never FAIL."""
    from pycocotools.cocoeval import COCOeval

    from detdemo.data import eval_transforms, open_dataset
    from detdemo.engine.bootstrap import PairedBootstrap, match_tables
    from detdemo.engine.evaluate import dataset_to_coco, predict_dataset

    ds = open_dataset(sets[FEW], "val", None, eval_transforms(), classes=["circle", "square", "triangle"])
    gt = dataset_to_coco(ds, with_masks=False)
    results = [{k: v for k, v in r.items() if k != "segmentation"}
               for r in predict_dataset(eager, ds, progress=False)]
    top = max(range(len(results)), key=lambda i: results[i]["score"])
    one_less = results[:top] + results[top + 1:]

    def tables(res):
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes([dict(r) for r in res]), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return match_tables(ev), ev.stats[0]

    (eager, ap), (same, _), (moved, moved_ap) = tables(results), tables(results), tables(one_less)
    boot = PairedBootstrap(eager, 2000, 0)
    identical = boot.interval(same)
    g = gate(identical.delta, identical.low, identical.high, 0.002, FEW)
    assert (g.low, g.high, g.verdict) == (0.0, 0.0, PASS)
    iv = boot.interval(moved)
    assert abs(iv.delta - (moved_ap - ap)) < 1e-12 and iv.delta < -0.002  # the point gate's FAIL
    g = gate(moved_ap - ap, iv.low, iv.high, 0.002, FEW)
    assert g.verdict == INCONCLUSIVE and g.high == 0.0 and g.images_to_decide > FEW


@pytest.mark.slow
def test_check_export_exits_3_on_inconclusive_and_the_app_and_card_say_why(sets, predictors, tmp_path, capsys):
    """The faithful INT8 file on 12 images through check-export: not verified (exit 3), a skipped JUnit case, the
    interval recorded in the manifest, not offered by the app (with the reason), INCONCLUSIVE on the card."""
    import xml.etree.ElementTree as ET

    from detdemo.app.catalogue import entry_from_path
    from export.publish import verification_lines

    folder = sets["root"] / "faithful"
    junit = tmp_path / "checks.xml"
    probe = sorted((sets[FEW] / "val").iterdir())[0]
    rc = main(["check-export", str(folder), "--probes", "basic", "--images", str(probe), "--data", str(sets[FEW]),
               "--junit-xml", str(junit)])
    out = capsys.readouterr().out
    assert rc == 3 and "INCONCLUSIVE" in out and "not verified" in out, out
    case = next(c for c in ET.parse(junit).getroot().iter("testcase")
                if c.get("name") == "accuracy" and c.get("classname").endswith("model.int8.onnx"))
    assert case.find("skipped").get("message").startswith("inconclusive:")
    figures = json.loads((folder / "export.json").read_text())["verified"]["onnx-int8"]
    assert figures["verdict"] == INCONCLUSIVE and not figures["passed"] and figures["images_to_decide"] > FEW
    assert figures["dbbox_AP_interval"][0] <= figures["dbbox_AP"] <= figures["dbbox_AP_interval"][1]
    entry = entry_from_path(folder)
    assert "onnxruntime-int8" not in entry.backends
    why = entry.missing["onnxruntime-int8"]
    assert "inconclusive" in why and "would decide it" in why and "interval" in why
    assert "±" in entry.label("onnxruntime") and "ΔAP" in entry.label("onnxruntime")
    line = next(v for v in verification_lines(folder, json.loads((folder / "export.json").read_text()))
                if v.startswith("ONNX Runtime INT8, AP on"))
    assert "**INCONCLUSIVE**" in line and "interval" in line
    assert "INCONCLUSIVE" in (folder / "accuracy.md").read_text()


@pytest.mark.slow
def test_the_api_and_the_pytest_plugin_treat_inconclusive_as_a_skip_never_a_pass(sets, predictors, pytester,
                                                                                   monkeypatch):
    """The same verdicts (the check-export run above) through the report API and the pytest plugin."""
    from export.check import ExportCheck, cases_of

    folder = sets["root"] / "faithful"
    if not (folder / "accuracy.json").is_file():  # run alone: the 12-image check first
        assert main(["check-export", str(folder), "--probes", "basic", "--data", str(sets[FEW])]) == 3
    parity, accuracy = (json.loads((folder / f"{n}.json").read_text()) for n in ("parity", "accuracy"))
    result = ExportCheck(folder, parity, accuracy, [], cases_of(parity, accuracy))
    case = result.case("onnx-int8", "accuracy")
    assert case.outcome == "skipped" and case.inconclusive and case.message.startswith("inconclusive:")
    assert result.verdict == INCONCLUSIVE and not result.passed and "model.int8.onnx::accuracy" in result.failures()
    monkeypatch.setattr("export.check.check_export", lambda *args, **kwargs: result)
    run = pytester.runpytest("--detdemo-export", str(folder), "--detdemo-data", str(sets[FEW]), "-rs",
                             "-p", "no:cacheprovider")
    run.assert_outcomes(passed=2, skipped=2)  # ONNX parity and AP; INT8 parity (by design) and AP (inconclusive)
    run.stdout.fnmatch_lines(["*inconclusive: *INCONCLUSIVE*would decide it*"])


def test_figures_recorded_before_intervals_still_read(tmp_path):
    """The bundled BCCD model's manifest as first recorded (no intervals, no verdict): labels, card lines and the
    app's offer read it as before."""
    from detdemo.app.catalogue import ModelEntry
    from export.gate import delta_text, verdict_of

    old = {"data": "BCCD", "split": "val", "images": 87, "precision": "int8", "passed": True, "limit": 0.01,
           "bbox_AP": 0.5652, "dbbox_AP": -0.00036}
    assert verdict_of(old) == PASS and verdict_of({**old, "passed": False}) == FAIL
    assert delta_text(old, "bbox") == "-0.000"
    entry = ModelEntry("m", verified={"onnxruntime-int8": old})
    assert entry.label("onnxruntime-int8") == "ONNX Runtime INT8 (box ΔAP -0.000)"


def test_one_image_gives_no_interval_and_no_verdict_but_an_identical_file_still_passes():
    """With one image every resample is that image: a zero-width "interval" that says nothing about other images
    would turn the gate back into a point comparison (measured on the bundled shapes model's INT8 file: segm ΔAP
    -0.030 "FAIL" on one image, INCONCLUSIVE on three). So it is unknown, the file inconclusive, and the text
    says why instead of "ΔAP sits on the limit"; no infinity reaches the JSON."""
    import numpy as np

    from detdemo.engine.bootstrap import CategoryTable, MatchTables, PairedBootstrap
    from export.gate import decide_text, interval_known

    def tables(tp: bool) -> MatchTables:
        hit = np.array([[tp]] * 10)
        return MatchTables([7], [CategoryTable(np.zeros(1, int), hit, ~hit, np.ones(1))], np.linspace(0, 1, 101))

    boot = PairedBootstrap(tables(True), n_resamples=50)
    same = boot.interval(tables(True))
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    assert gate(same.delta, same.low, same.high, 0.01, 1).verdict == PASS
    missed = boot.interval(tables(False))
    assert missed.delta < -0.99 and math.isnan(missed.low) and math.isnan(missed.high)
    g = gate(missed.delta, missed.low, missed.high, 0.01, 1)
    assert g.verdict == INCONCLUSIVE and g.images_to_decide is None and not interval_known((g.low, g.high))
    figures = {"images": 1, "limit": 0.01, "verdict": INCONCLUSIVE, "dbbox_AP": -1.0, "images_to_decide": None}
    assert "no interval could be estimated on 1 image" in decide_text(figures)


def test_a_split_without_labelled_objects_is_refused_before_any_model_runs(tmp_path):
    """pycocotools' AP is -1 for every file on it: nothing can be judged, so it is bad input (exit 2), not an
    inconclusive gate with an infinite interval."""
    from detdemo.data.shapes import generate_shapes
    from detdemo.errors import DataError
    from export.accuracy import open_accuracy_data

    generate_shapes(tmp_path, train=0, val=2, seed=0, progress=False)
    ann = tmp_path / "annotations" / "instances_val.json"
    ann.write_text(json.dumps({**json.loads(ann.read_text()), "annotations": []}))
    with pytest.raises(DataError, match="2 images but no labelled objects"):
        open_accuracy_data(str(tmp_path), ["circle", "square", "triangle"])


@pytest.mark.parametrize("option, value", [("--reduced-ap-tol", "-1"), ("--ap-tol", "nan"), ("--box-tol", "-0.5"),
                                           ("--mask-iou-min", "1.5")])
def test_check_export_refuses_a_tolerance_that_no_file_could_meet_or_every_file_would(option, value, capsys):
    """A negative limit failed every file ("limit ±-1.0: FAIL", exit 1) and NaN passed none: both typos, exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(["check-export", str(BUNDLED), option, value])
    assert exc.value.code == 2 and option in capsys.readouterr().err
