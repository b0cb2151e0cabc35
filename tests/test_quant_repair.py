"""Quantisation that repairs itself (``detdemo export ... --max-ap-drop D``): layers go back to float until the INT8
file is within D of eager on the search images, and the verdict comes from images the search never saw."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from detdemo.cli import main
from tests.conftest import REPO, bundled_like_shapes

BUNDLED = REPO / "models" / "shapes"


def test_search_and_verdict_images_are_disjoint_and_seeded():
    from export.repair import split_indices

    search, verdict = split_indices(40, 0.5, seed=0)
    assert not set(search) & set(verdict) and sorted(search + verdict) == list(range(40))
    assert len(search) == 20 and split_indices(40, 0.5, seed=0) == (search, verdict)
    assert split_indices(40, 0.5, seed=1)[0] != search
    assert all(v for v in split_indices(3, 0.9, seed=0))  # never an empty side


def test_the_search_finds_the_fewest_layers_in_a_logarithmic_number_of_evaluations():
    from export.repair import fewest

    calls: list[int] = []

    def drop(k: int) -> float:
        calls.append(k)
        return 0.3 if k < 23 else 0.0

    assert fewest(101, drop, 0.01) == 23
    assert len(calls) <= 2 * math.ceil(math.log2(101)) + 1 and len(set(calls)) == len(calls)
    assert fewest(10, lambda k: 1.0, 0.01) is None  # even all of them in float is not enough
    assert fewest(0, lambda k: 1.0, 0.01) is None
    budget = iter([True, True, True, False])  # k = 1, 2, 4, then out of time: 4 (within the limit) is kept
    assert fewest(64, lambda k: 0.0 if k >= 4 else 1.0, 0.01, lambda: next(budget, False)) == 4


@pytest.mark.parametrize("extra, message", [
    (["--format", "onnx", "--max-ap-drop", "0.01"], "repairs INT8 files"),
    (["--format", "onnx-int8", "--calibration", "X", "--max-ap-drop", "0.01"], "needs labelled images"),
    (["--format", "onnx-int8", "--calibration", "X", "--max-ap-drop", "0.01", "--check", "--data", "D",
      "--search-data", "D"], "must not give the verdict"),
    (["--format", "onnx-int8", "--calibration", "X", "--search-data", "D"], "add --max-ap-drop"),
    (["--format", "onnx-int8", "--calibration", "X", "--max-ap-drop", "-1", "--search-data", "D"], "must be >= 0"),
])
def test_max_ap_drop_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    import export.int8

    monkeypatch.setattr(export.int8, "calibration_files", lambda *a, **k: [Path("x.png")])
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repair_data")
    bundled_like_shapes(out, train=8, val=8, seed=11)
    return out


@pytest.fixture(scope="module")
def blank(tmp_path_factory) -> Path:
    """Calibration images that set every activation range wrong: an INT8 file far outside any limit."""
    out = tmp_path_factory.mktemp("blank")
    for i in range(3):
        Image.new("RGB", (300, 240), (127, 127, 127)).save(out / f"{i}.png")
    return out


@pytest.mark.slow
def test_a_damaged_onnx_int8_is_repaired_and_judged_on_images_the_search_never_saw(labelled, blank, tmp_path):
    from export.accuracy import open_accuracy_data
    from export.repair import image_names, leave_out_search_images

    folder = tmp_path / "repaired"
    # Blank calibration sets every range wrong, so each layer left quantised hurts some images: on 4 search images a
    # few such layers can still look harmless (measured: 2 of 85 left, search drop +0.0008, verdict drop +0.021 at
    # D = 0.005 -- the separate verdict caught it). With D = 0 the search returns them all and the verdict agrees.
    limit = 0.0
    rc = main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(folder), "--format", "onnx-int8",
               "--calibration", str(blank), "--max-ap-drop", str(limit), "--check", "--data", str(labelled)])
    assert rc in (0, 1)  # 1: the gate's own verdict (|dAP| both ways, on 4 images), judged separately below
    manifest = json.loads((folder / "export.json").read_text())
    record = manifest["repair"]["onnx-int8"]
    assert record["needed"] and record["drop_before"] > 0.1  # blank calibration broke it
    assert record["reached"] and record["drop_after"] <= limit
    assert record["returned_to_float"] and record["returned_nodes"]
    # the file says what went back to float, and so do accuracy.md and the manifest
    import onnx

    meta = json.loads(onnx.load(str(folder / "model.int8.onnx"), load_external_data=False).metadata_props[0].value)
    assert meta["repair"]["returned_nodes"] == record["returned_nodes"]
    assert meta["quantization"]["returned_to_float"] == sorted(record["returned_nodes"])
    assert meta["export_id"] == manifest["export_id"]
    markdown = (folder / "accuracy.md").read_text()
    assert "Returned to float" in markdown and record["returned_to_float"][0] in markdown
    # the verdict: on the other images only, and within the limit there
    searched = set(record["search"]["images"])
    report = json.loads((folder / "accuracy.json").read_text())
    assert report["images"] == 8 - len(searched) and report["search_images_left_out"] == len(searched)
    dataset, left_out = leave_out_search_images(open_accuracy_data(str(labelled), ["circle", "square", "triangle"]),
                                                manifest)
    assert left_out == len(searched) == 4 and not searched & set(image_names(dataset))
    delta = report["files"]["onnx-int8"]["delta"]  # the drop on the verdict images (the gate's own verdict aside)
    assert -min(delta["bbox_AP"], delta["segm_AP"]) <= limit


@pytest.mark.slow
def test_openvino_int8_accuracy_control_runs_our_ap_on_separate_search_data(labelled, tmp_path):
    """NNCF's quantize_with_accuracy_control, validated with our AP through the host pipeline, on --search-data;
    in-domain calibration is within the limit already, so nothing goes back to float, and that is recorded too."""
    search = tmp_path / "search"
    bundled_like_shapes(search, train=1, val=6, seed=12)
    folder = tmp_path / "ov"
    assert main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(folder), "--format",
                 "openvino-int8", "--calibration", str(labelled / "train"), "--max-ap-drop", "0.05",
                 "--search-data", str(search)]) == 0
    record = json.loads((folder / "export.json").read_text())["repair"]["openvino-int8"]
    assert "quantize_with_accuracy_control" in record["method"] and record["search_images"] == 6
    assert record["search"]["source"].startswith("--search-data") and len(record["search"]["images"]) == 6
    assert record["reached"] and record["drop_after"] <= 0.05 and not record["needed"]
    assert record["returned_to_float"] == [] and record["evaluations"] >= 2
    from export.accuracy import open_accuracy_data
    from export.repair import leave_out_search_images
    from export.runtime import load_predictor

    predictor = load_predictor(folder, "openvino", precision="int8")
    assert predictor.meta["repair"]["max_ap_drop"] == 0.05 and predictor.precision == "int8"
    # another dataset whose files happen to share the search images' names loses none of them to the search
    manifest = json.loads((folder / "export.json").read_text())
    other = open_accuracy_data(str(labelled), ["circle", "square", "triangle"])
    assert set(record["search"]["images"]) <= {r.path.name for r in other.records}
    assert leave_out_search_images(other, manifest)[1] == 0
