"""Reduced-precision backends (ONNX INT8, OpenVINO bf16 and INT8, eager bf16) and the accuracy gate that must pass
before the app offers them: the gate's figures equal `detdemo eval`'s, a damaged INT8 file fails it, missing
libraries are named, and bf16 training runs and resumes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detdemo.cli import main
from detdemo.errors import DetDemoError
from tests.conftest import REPO, bundled_like_shapes
from tests.test_train import small_cfg

BUNDLED = REPO / "models" / "shapes"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labelled")
    # 40 val images: enough for a 1 % AP gate to pass some faithful files, too few to decide every one (the
    # verdicts that need more images are tests/test_gate.py's)
    bundled_like_shapes(out, train=16, val=40, seed=7)
    return out


@pytest.fixture(scope="module")
def verified(labelled, tmp_path_factory) -> Path:
    """The bundled model exported to every format (INT8 calibrated on 16 images), then checked on 40 val images."""
    folder = tmp_path_factory.mktemp("verified") / "export"
    assert main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(folder), "--format",
                 "torchscript", "onnx", "onnx-int8", "openvino", "openvino-int8", "--calibration",
                 str(labelled / "train")]) == 0
    from detdemo.app.catalogue import entry_from_path

    before = entry_from_path(folder)
    assert "onnxruntime-int8" not in before.backends and "not verified" in before.missing["onnxruntime-int8"]
    assert "openvino-bf16" not in before.backends and "openvino-int8" not in before.backends
    assert "openvino" in before.backends  # fp32: offered like ONNX Runtime, checked detection by detection
    probes = sorted((labelled / "val").iterdir())[:3]
    rc = main(["check-export", str(folder), "--probes", "basic", "--images", *map(str, probes), "--data",
               str(labelled)])
    verdict = json.loads((folder / "accuracy.json").read_text())["verdict"]
    assert (verdict, rc) in (("PASS", 0), ("INCONCLUSIVE", 3))  # nothing failed; exit 3 says not all verified
    return folder


def test_the_accuracy_report_equals_eval_run_on_each_file(verified, labelled, tmp_path, monkeypatch):
    report = json.loads((verified / "accuracy.json").read_text())
    assert set(report["files"]) == {"eager", "torchscript", "onnx", "onnx-int8", "openvino", "openvino-bf16",
                                    "openvino-int8"}
    assert report["files"]["eager"]["stats"]["bbox"]["AP"] > 0.5  # a model that works, so deltas mean something
    monkeypatch.chdir(tmp_path)
    for name, f in report["files"].items():
        bf16 = ["--precision", "bf16"] if name == "openvino-bf16" else []  # the same IR, run in bf16
        assert main(["eval", "--model", f["file"], "--data", str(labelled), *bf16]) == 0
        alone = json.loads((tmp_path / "eval_val.json").read_text())
        assert alone["stats"] == f["stats"], name
    assert report["files"]["onnx-int8"]["precision"] == "int8"
    assert report["files"]["openvino-int8"]["precision"] == "int8"
    for name in ("torchscript", "onnx"):
        assert report["files"][name]["limit"] == 0.002 and report["files"][name]["passed"]


def test_openvino_and_int8_agree_with_eager_within_the_reduced_precision_limit(verified):
    from detdemo.app.catalogue import entry_from_path
    from export.formats import choice_of
    from export.openvino_ir import openvino_module
    from export.openvino_runtime import cpu_supports_bf16

    report = json.loads((verified / "accuracy.json").read_text())
    expected = "bf16" if cpu_supports_bf16(openvino_module().Core()) else "fp32"
    assert report["files"]["openvino"]["precision"] == "fp32" and report["files"]["openvino"]["limit"] == 0.002
    assert report["files"]["openvino-bf16"]["precision"] == expected
    manifest = json.loads((verified / "export.json").read_text())
    entry = entry_from_path(verified)
    assert "openvino" in entry.backends  # fp32: offered on its detection-by-detection check
    for name in ("openvino-bf16", "onnx-int8", "openvino-int8"):
        f = report["files"][name]
        limit = 0.01 if f["precision"] in ("bf16", "int8") else 0.002  # OpenVINO runs fp32 on a CPU without bf16
        # faithful files never fail; on 40 images some intervals still straddle the limit (INCONCLUSIVE)
        assert f["limit"] == limit and f["verdict"] in ("PASS", "INCONCLUSIVE"), (name, f["delta"], f["interval"])
        assert all(abs(d) <= limit for k, d in f["delta"].items() if k.endswith("_AP"))  # the point figure too
        recorded = manifest["verified"][name]
        assert recorded["verdict"] == f["verdict"] and recorded["dsegm_AP_interval"] == f["interval"]["segm_AP"]
        choice = choice_of(name)
        if f["verdict"] == "PASS":  # verified: now offered, with its measured delta and interval beside its name
            assert choice in entry.backends and "ΔAP" in entry.label(choice) and "±" in entry.label(choice)
        else:  # not offered, and the page says why
            assert choice not in entry.backends and "inconclusive" in entry.missing[choice]
    assert "ΔAP" in entry.label("onnxruntime")


def test_a_damaged_int8_file_fails_the_gate_and_is_not_offered(verified, labelled, tmp_path):
    """INT8 calibrated on blank images: the activation ranges are wrong, AP collapses, the gate says so."""
    from detdemo.app.catalogue import entry_from_path

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(4):
        Image.new("RGB", (300, 240), (127, 127, 127)).save(blank / f"{i}.png")
    folder = tmp_path / "damaged"
    assert main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(folder), "--format", "onnx-int8",
                 "--calibration", str(blank)]) == 0
    assert main(["check-export", str(folder), "--probes", "basic", "--data", str(labelled)]) == 1
    report = json.loads((folder / "accuracy.json").read_text())
    assert not report["files"]["onnx-int8"]["passed"] and report["files"]["onnx"]["passed"]
    assert report["files"]["onnx-int8"]["verdict"] == "FAIL" and report["verdict"] == "FAIL"
    entry = entry_from_path(folder)
    assert "onnxruntime-int8" not in entry.backends and "failed its accuracy check" in entry.missing["onnxruntime-int8"]


def test_int8_without_calibration_images_is_refused(tmp_path, capsys):
    rc = main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(tmp_path / "x"), "--format",
               "onnx-int8"])
    assert rc == 2 and "needs --calibration" in capsys.readouterr().err


def test_every_new_format_names_its_missing_library(verified, tmp_path, monkeypatch):
    from export.runtime import load_predictor

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(DetDemoError, match="pip install"):
        load_predictor(verified / "model.xml")
    rc = main(["export", "--checkpoint", str(BUNDLED / "model.pt"), "--out", str(tmp_path / "ov"), "--format",
               "openvino"])
    assert rc == 2
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    with pytest.raises(DetDemoError, match="onnx-int8 needs onnxruntime"):
        from export.int8 import quantize_onnx

        quantize_onnx(verified / "model.onnx", tmp_path / "q.onnx", [], None, ())
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(DetDemoError, match="openvino-int8 needs NNCF"):
        from export.int8 import quantize_openvino

        quantize_openvino(None, [], None, ())


def test_eager_bf16_runs_and_stays_close_to_fp32(labelled):
    from detdemo.data.images import open_image
    from detdemo.inference.eager import bf16_supported
    from export.runtime import load_predictor

    image = open_image(sorted((labelled / "val").iterdir())[0])
    fp32 = load_predictor(BUNDLED).predict(image, score_threshold=0.5)
    bf16_predictor = load_predictor(BUNDLED, precision="bf16")
    import torch

    assert bf16_predictor.precision == ("bf16" if bf16_supported(torch.device("cpu")) else "fp32")
    bf16 = bf16_predictor.predict(image, score_threshold=0.5)
    assert len(fp32) > 0 and abs(len(bf16) - len(fp32)) <= 1
    assert np.abs(np.sort(bf16.scores)[-1] - np.sort(fp32.scores)[-1]) < 0.05


def test_bf16_training_runs_and_resumes(shapes_dir, tmp_path):
    import torch

    from detdemo.engine.trainer import Trainer, fit
    from detdemo.inference.eager import bf16_supported

    run = tmp_path / "run"
    trainer = Trainer(small_cfg(shapes_dir, run, amp=True), progress=False)
    assert trainer.amp_dtype == (torch.bfloat16 if bf16_supported(torch.device("cpu")) else None)
    trainer.fit()
    fit(None, resume=str(run), progress=False, epochs=2)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and all(np.isfinite(m["loss"]) for m in lines)


def test_backends_of_an_export_folder_are_chosen_by_precision(verified):
    from export.runtime import load_predictor

    assert load_predictor(verified, "onnxruntime").path.name == "model.onnx"
    assert load_predictor(verified, "onnxruntime", precision="int8").path.name == "model.int8.onnx"
    assert load_predictor(verified, "openvino", precision="fp32").precision == "fp32"
    assert load_predictor(verified, "openvino").precision == "fp32"  # the float IR's own choice is fp32
    int8 = load_predictor(verified, "openvino", precision="int8")
    assert int8.path.name == "model.int8.xml" and int8.precision == "int8"
    shutil.copy(verified / "model.xml", verified.parent / "renamed")  # an IR without its .bin
    with pytest.raises(DetDemoError):
        load_predictor(verified.parent / "renamed")


def test_openvino_phantom_rows_are_dropped_and_real_detections_kept():
    """OpenVINO's empty-output row (label 0, uninitialised) goes; detections labelled 1..K stay, row for row."""
    import torch

    from export.openvino_runtime import drop_phantom_rows

    phantom = {"boxes": torch.tensor([[2e-4, 3.8e-41, 8e-34, 2.5e-41]]), "labels": torch.tensor([0]),
               "scores": torch.tensor([1.0]), "masks": torch.zeros(1, 1, 28, 28)}
    assert all(len(v) == 0 for v in drop_phantom_rows(phantom).values())
    real = {"boxes": torch.rand(3, 4), "labels": torch.tensor([1, 0, 2]), "scores": torch.tensor([0.9, 0.5, 0.4]),
            "masks": torch.rand(3, 1, 28, 28)}
    kept = drop_phantom_rows(real)
    assert kept["labels"].tolist() == [1, 2] and torch.equal(kept["boxes"], real["boxes"][[0, 2]])
    assert drop_phantom_rows({"labels": torch.tensor([1, 2])})["labels"].tolist() == [1, 2]


def test_openvino_fp32_is_checked_detection_by_detection_and_bf16_by_ap(verified):
    """OpenVINO's float IR is two choices: fp32 gated per detection with the fp32 tolerances (as ONNX Runtime),
    bf16 judged by AP (gated per detection only where the CPU has no bf16 and runs it in fp32)."""
    from export.openvino_ir import openvino_module
    from export.openvino_runtime import cpu_supports_bf16

    parity = json.loads((verified / "parity.json").read_text())["backends"]
    assert parity["openvino"]["gated"] and parity["openvino"]["passed"], parity["openvino"]["overall"]
    assert parity["openvino"]["overall"]["max_box_diff_px"] <= 0.05
    assert parity["openvino-bf16"]["gated"] == (not cpu_supports_bf16(openvino_module().Core()))
    assert parity["openvino"]["file"] == parity["openvino-bf16"]["file"]  # one file, two ways to run it


def test_onnx_int8_runs_as_fused_integer_kernels(verified):
    """quant_pre_process and the trunk ops give onnxruntime whole DQ -> Conv -> Q patterns: its optimised graph runs
    the convolutions as QLinearConv (counted when exporting, into the metadata, and again here)."""
    import onnx

    from export.int8 import fused_op_counts

    meta = json.loads(onnx.load(str(verified / "model.int8.onnx"), load_external_data=False).metadata_props[0].value)
    recorded = meta["quantization"]["onnxruntime_fused"]
    counted = fused_op_counts(verified / "model.int8.onnx")
    assert counted == recorded
    assert counted["QLinearConv"] > 0 and counted["QLinearConv"] >= meta["quantization"]["quantized_nodes"] - 4
    # float convolutions left: the stem and the answer layers the family keeps float, nothing else
    assert counted["float_conv"] <= len(meta["quantization"]["stem_float_nodes"]) + meta["quantization"][
        "kept_float_nodes"]
    assert counted["QLinearAdd"] > 0  # MobileNetV2's residual additions run in int8 too


def test_a_folder_from_before_openvino_had_two_choices_still_loads(verified, tmp_path):
    """Its manifest lists the IR once, under "openvino", with the verdict of a bf16 run: both choices load, the bf16
    verdict is read as openvino-bf16's, and openvino itself is the fp32 choice (offered like ONNX Runtime)."""
    from detdemo.app.catalogue import entry_from_path
    from export.runtime import folder_files, load_predictor

    old = tmp_path / "old"
    shutil.copytree(verified, old)
    manifest = json.loads((old / "export.json").read_text())
    bf16 = {**manifest["verified"].pop("openvino-bf16"), "precision": "bf16"}
    manifest["verified"]["openvino"] = bf16  # as check-export recorded it on a bf16 CPU before the split
    (old / "export.json").write_text(json.dumps(manifest))
    assert folder_files(old)["openvino-bf16"] == folder_files(old)["openvino"] == old / "model.xml"
    entry = entry_from_path(old)
    assert entry.verified["openvino-bf16"] == bf16 and "openvino" not in entry.verified
    assert "openvino" in entry.backends and "ΔAP" in entry.label("openvino-bf16")
    if bf16["verdict"] == "PASS":  # offered on its own verdict, whichever name recorded it
        assert "openvino-bf16" in entry.backends
    else:
        assert "inconclusive" in entry.missing["openvino-bf16"]
    assert load_predictor(old, "openvino").precision == "fp32"
