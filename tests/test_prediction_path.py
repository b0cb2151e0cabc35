"""One prediction path: every file `detdemo export` writes runs through `detdemo predict` and `detdemo eval`, files
are recognised by content, devices are honoured or refused clearly, and threads follow the CPUs we may use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detdemo.cli import main
from detdemo.errors import DetDemoError
from export.runtime import file_kind, load_predictor
from tests.conftest import bundled_like_shapes

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "models" / "shapes"
FILES = {"pytorch": "model.pt", "pt2": "model.pt2", "onnxruntime": "model.onnx"}


@pytest.fixture(scope="module")
def val_set(tmp_path_factory) -> Path:
    """Unseen shapes images of the bundled model's classes, at the sizes it was trained on."""
    out = tmp_path_factory.mktemp("bundled_val")
    bundled_like_shapes(out, train=1, val=6, seed=21)
    return out


def _by_image(results: list[dict]) -> dict:
    out: dict = {}
    for r in results:
        out.setdefault(r["image_id"], []).append(r)
    return {k: sorted(v, key=lambda r: -r["score"]) for k, v in out.items()}


def test_predict_runs_every_exported_file_with_the_same_detections(val_set, tmp_path):
    results = {}
    for backend, name in FILES.items():
        out = tmp_path / backend
        assert main(["predict", "--model", str(BUNDLED / name), "--input", str(val_set / "val"), "--out", str(out),
                     "--score-threshold", "0.3"]) == 0
        assert json.loads((out / "images.json").read_text())["backend"] == backend
        assert len(list(out.glob("*.png"))) == 6
        results[backend] = json.loads((out / "predictions.json").read_text())
    assert len(results["pytorch"]) >= 12  # detections on every image, so the comparison means something
    assert results["pt2"] == results["pytorch"]  # bit-exact
    eager, onnx = _by_image(results["pytorch"]), _by_image(results["onnxruntime"])
    assert eager.keys() == onnx.keys()
    for image_id, ref in eager.items():
        assert [r["category_id"] for r in onnx[image_id]] == [r["category_id"] for r in ref]
        assert np.abs(np.array([r["bbox"] for r in onnx[image_id]]) - [r["bbox"] for r in ref]).max() <= 0.05
        assert np.abs(np.array([r["score"] for r in onnx[image_id]]) - [r["score"] for r in ref]).max() <= 1e-4


def test_eval_measures_the_ap_of_every_exported_file(val_set, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in BUNDLED.iterdir())
    stats = {}
    for backend, name in FILES.items():
        assert main(["eval", "--model", str(BUNDLED / name), "--data", str(val_set)]) == 0
        report = json.loads((tmp_path / "eval_val.json").read_text())  # beside us, not in the model's folder
        assert report["backend"] == backend
        stats[backend] = report["stats"]
    assert sorted(p.name for p in BUNDLED.iterdir()) == before
    assert stats["pytorch"]["bbox"]["AP"] > 0.3 and stats["pytorch"]["segm"]["AP"] > 0.3
    assert stats["pt2"] == stats["pytorch"]
    for iou_type in ("bbox", "segm"):
        assert abs(stats["onnxruntime"][iou_type]["AP"] - stats["pytorch"][iou_type]["AP"]) <= 0.002


def test_files_are_recognised_by_content_not_by_name(tmp_path):
    from detdemo.checkpoint import load_checkpoint
    from detdemo.models import model_from_checkpoint
    from export.exporters import export_torchscript

    model, cfg = model_from_checkpoint(load_checkpoint(BUNDLED / "model.pt"))
    export_torchscript(model, cfg, tmp_path / "x.pt")  # the bundled models hold no TorchScript file
    shutil.copy(BUNDLED / "model.pt2", tmp_path / "program.pt")
    shutil.copy(BUNDLED / "model.onnx", tmp_path / "model_without_suffix")
    shutil.copy(BUNDLED / "model.pt", tmp_path / "weights.onnx")
    assert file_kind(tmp_path / "x.pt") == "torchscript"
    assert file_kind(tmp_path / "program.pt") == "pt2"
    assert file_kind(tmp_path / "model_without_suffix") == "onnx"
    assert file_kind(tmp_path / "weights.onnx") == "checkpoint"
    assert load_predictor(tmp_path / "x.pt").backend == "torchscript"
    assert load_predictor(tmp_path / "program.pt").backend == "pt2"
    assert load_predictor(tmp_path / "model_without_suffix").backend == "onnxruntime"
    assert load_predictor(tmp_path / "weights.onnx").backend == "pytorch"
    with pytest.raises(DetDemoError, match="is a torchscript file; the ONNX Runtime backend runs onnx files"):
        load_predictor(tmp_path / "x.pt", "onnxruntime")
    with pytest.raises(DetDemoError, match="is a pt2 file; the TorchScript backend runs torchscript files"):
        load_predictor(tmp_path / "program.pt", "torchscript")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(DetDemoError, match="notes.txt: not a model detdemo can run"):
        load_predictor(tmp_path / "notes.txt")
    # a folder picks the backend's file through the export manifest
    assert load_predictor(BUNDLED, "onnxruntime").path.name == "model.onnx"
    assert load_predictor(BUNDLED).backend == "pytorch"


def test_cuda_on_a_machine_without_a_gpu_is_a_clear_error(val_set, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for backend in FILES:
        rc = main(["predict", "--model", str(BUNDLED), "--backend", backend, "--device", "cuda", "--input",
                   str(val_set / "val"), "--out", str(tmp_path / "p")])
        err = capsys.readouterr().err
        assert rc == 2 and "'cuda' requested, but PyTorch sees no CUDA GPU" in err and "Traceback" not in err
    rc = main(["eval", "--model", str(BUNDLED), "--device", "gpu0", "--data", str(val_set)])
    assert rc == 2 and "unknown device 'gpu0'" in capsys.readouterr().err


def test_onnx_runtime_falling_back_to_the_cpu_is_said(monkeypatch):
    """Asked for CUDA, onnxruntime quietly runs on the CPU when its CUDA provider cannot start: we say so."""
    import export.runtime as runtime

    monkeypatch.setattr(runtime, "resolve_device", lambda device: torch.device("cuda", 0))
    with pytest.warns(UserWarning, match="could not use CUDA"):
        predictor = runtime.OnnxPredictor(BUNDLED / "model.onnx", device="cuda")
    if predictor.device.startswith("cuda"):
        pytest.skip("this machine really has a working CUDA provider")
    assert predictor.device == "cpu" and "runs on the CPU" in predictor.notes[0]


def test_thread_counts_follow_the_cpus_this_process_may_use(tmp_path):
    script = ("import os; os.sched_setaffinity(0, {0}); from detdemo.inference.device import usable_cpus; "
              "from export.runtime import onnx_session; "
              f"s, _, _ = onnx_session({str(BUNDLED / 'model.onnx')!r}, 'cpu'); "
              "print(usable_cpus(), s.get_session_options().intra_op_num_threads)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["1", "1"]


def test_onnx_runtime_workers_sleep_rather_than_spin_between_tasks():
    """Spinning workers take the cores the host pipeline (and a video's drawing and encoding threads) run on."""
    from export.runtime import onnx_session

    session, _, _ = onnx_session(BUNDLED / "model.onnx", "cpu")
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_thread_started_with_its_own_torch_thread_count_leaves_the_others_alone():
    import threading

    from detdemo.inference.device import start_thread

    def count(into: list) -> None:
        torch.ones(1000).add_(1)  # a parallel operation: the thread has settled on its count
        into.append(torch.get_num_threads())

    before = torch.get_num_threads()
    inside: list = []
    start_thread(lambda: count(inside), name="one-thread", torch_threads=1).join()
    later: list = []
    thread = threading.Thread(target=count, args=(later,))
    thread.start()
    thread.join()
    assert inside == [1]
    assert torch.get_num_threads() == before and later == [before]  # this thread's, and a new thread's default


def test_cgroup_cpu_quota_caps_the_thread_count(tmp_path):
    import os

    from detdemo.inference.device import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # one CPU's worth (cgroup v2)
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # half a CPU rounds up to one
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(v1) == 1


def test_eval_equals_pycocotools_run_on_our_own_results_file(val_set, tmp_path):
    """The whole path: model outputs -> our COCO results JSON (`detdemo predict`) -> pycocotools' own loadRes and
    COCOeval on the dataset's annotation file -> the same twelve figures as `detdemo eval`."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from detdemo.data.images import open_image
    from detdemo.engine.evaluate import STAT_NAMES

    assert main(["eval", "--model", str(BUNDLED), "--data", str(val_set), "--out", str(tmp_path / "e.json")]) == 0
    ours = json.loads((tmp_path / "e.json").read_text())["stats"]
    assert main(["predict", "--model", str(BUNDLED), "--input", str(val_set / "val"), "--out", str(tmp_path / "p"),
                 "--score-threshold", "0"]) == 0
    results_file = tmp_path / "p" / "predictions.json"
    results = json.loads(results_file.read_text())
    # boxes are COCO's x, y, width, height: checked against the predictor's own XYXY output
    first = load_predictor(BUNDLED).predict(open_image(sorted((val_set / "val").iterdir())[0]), score_threshold=0)
    x0, y0, x1, y1 = first.boxes[0].tolist()
    assert results[0]["image_id"] == 1 and results[0]["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_set / "annotations" / "instances_val.json"))
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(gt, gt.loadRes(str(results_file)), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ours[iou_type] == pytest.approx(dict(zip(STAT_NAMES, ev.stats.tolist())), abs=1e-12), iou_type
    assert ours["bbox"]["AP"] > 0.5 and ours["segm"]["AP"] > 0.5  # a well-working model: xyxy boxes would sink it
