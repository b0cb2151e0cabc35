"""When PyTorch removes TorchScript: the default path (export with no --format, predict on the result, the app's
start on the bundled models) never calls ``torch.jit`` or the TorchScript-based ONNX exporter, so it emits none of
their deprecation warnings; and where ``torch.jit.script``/``load`` raise, ``detdemo export`` skips TorchScript
with one line saying why while the CLI and the app serve every other format."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import pytest
import torch

from detdemo import build_model, save_checkpoint
from detdemo.cli import main
from tests.conftest import REPO

IMAGE = sorted((REPO / "models" / "shapes" / "examples").glob("*.jpg"))[0]
# PyTorch's own deprecation notices for the machinery it will remove (torch 2.14.1's wording)
DEPRECATIONS = (r".*torch\.jit\.\w+.* is deprecated", r".*legacy TorchScript-based ONNX export")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small light Mask R-CNN (random weights, every detection kept): what matters here is which code runs."""
    torch.manual_seed(0)
    model, cfg = build_model("maskrcnn_light", 4, ["circle", "square", "triangle"], min_size=128, max_size=160,
                             box_score_thresh=0.0, box_detections_per_img=20)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model.eval(), cfg)


@contextlib.contextmanager
def deprecated_machinery_forbidden(monkeypatch, error: type[BaseException] = AssertionError, why: str = "called"):
    """``torch.jit.script/trace/load/save`` and ``torch.onnx.export(dynamo=False)`` raise; PyTorch's deprecation
    warnings are errors."""
    calls: list[str] = []

    def refuse(name):
        def stub(*args, **kwargs):
            calls.append(name)
            raise error(f"{name} {why}")
        return stub

    for name in ("script", "trace", "load", "save"):
        monkeypatch.setattr(torch.jit, name, refuse(f"torch.jit.{name}"))
    onnx_export = torch.onnx.export

    def dynamo_only(*args, dynamo: bool = True, **kwargs):
        if not dynamo:
            return refuse("torch.onnx.export(dynamo=False)")()
        return onnx_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_only)
    with warnings.catch_warnings():
        for message in DEPRECATIONS:
            warnings.filterwarnings("error", message=message)
        yield calls


def run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue() + err.getvalue()


def test_the_default_path_never_calls_torchscript_or_the_legacy_onnx_exporter(checkpoint, tmp_path, monkeypatch):
    from detdemo.app.catalogue import BUNDLED_MODELS
    from detdemo.app.lineup import default_catalogue
    from detdemo.app.predict import PredictRequest, run_prediction
    from detdemo.app.ui import build_demo

    with deprecated_machinery_forbidden(monkeypatch) as calls:
        rc, text = run(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "exp")])
        assert rc == 0, text
        manifest = json.loads((tmp_path / "exp" / "export.json").read_text())
        assert set(manifest["files"]) == {"eager", "onnx", "pt2"} and "skipped" not in manifest
        for backend in (None, "onnxruntime", "pt2"):
            rc, text = run(["predict", "--model", str(tmp_path / "exp"), "--input", str(IMAGE), "--out",
                            str(tmp_path / f"pred-{backend}"), "--score-threshold", "0",
                            *(["--backend", backend] if backend else [])])
            assert rc == 0, text
            assert json.loads((tmp_path / f"pred-{backend}" / "predictions.json").read_text())
        # the app's start: the exported folder and the bundled models, each verified against PyTorch on first use
        catalogue = default_catalogue(tmp_path / "exp", include_coco=False, bundled=BUNDLED_MODELS)
        build_demo(catalogue)
        for name in catalogue.names:
            catalogue.verify(name)
            entry = catalogue.entry(name)
            assert {"pytorch", "onnxruntime", "pt2"} <= set(entry.backends), (name, entry.missing)
            image = str((entry.examples or [IMAGE])[0])  # the model's own kind of image
            for backend in entry.backends:
                assert run_prediction(catalogue, PredictRequest(image, name, backend, 0.0)).rows, (name, backend)
    assert calls == []


def test_without_torch_jit_export_skips_torchscript_and_every_other_format_serves(checkpoint, tmp_path,
                                                                                    monkeypatch):
    from detdemo.app.catalogue import Catalogue, entry_from_path
    from detdemo.app.predict import PredictRequest, run_prediction
    from detdemo.app.ui import build_demo

    before = tmp_path / "before"  # exported while torch.jit still worked: it holds a TorchScript file
    assert run(["export", "--checkpoint", str(checkpoint), "--out", str(before), "--format", "torchscript",
                "pt2"])[0] == 0
    removed = "has been removed from PyTorch"
    with deprecated_machinery_forbidden(monkeypatch, RuntimeError, removed):
        rc, text = run(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "after"), "--format",
                        "torchscript", "pt2"])
        assert rc == 0, text
        skipped = [line for line in text.splitlines() if "skipped" in line]
        assert len(skipped) == 1 and skipped[0].startswith("torchscript") and removed in skipped[0], text
        assert not (tmp_path / "after" / "model.torchscript.pt").exists()
        manifest = json.loads((tmp_path / "after" / "export.json").read_text())
        assert set(manifest["files"]) == {"eager", "pt2"} and removed in manifest["skipped"]["torchscript"]
        rc, text = run(["predict", "--model", str(before), "--input", str(IMAGE), "--out", str(tmp_path / "p"),
                        "--backend", "torchscript"])
        assert rc == 2 and "cannot load TorchScript" in text and "Traceback" not in text
        assert run(["predict", "--model", str(before), "--input", str(IMAGE), "--out", str(tmp_path / "q"),
                    "--backend", "pt2"])[0] == 0
        entry = entry_from_path(before, "before", examples=IMAGE.parent)
        catalogue = Catalogue([entry])
        build_demo(catalogue)  # verifies: the TorchScript file cannot load, so it is withdrawn with the reason
        assert "torchscript" not in entry.backends and removed in entry.missing["torchscript"]
        assert {"pytorch", "pt2"} <= set(entry.backends)
        for backend in entry.backends:
            assert run_prediction(catalogue, PredictRequest(str(IMAGE), "before", backend, 0.0)).rows
