"""Publishing to the Hugging Face Hub, offline: portable weights, the model card, loading by repo id from a Hub
cache laid out by hand, the upload path with a fake HfApi, and the staged Space installed and started alone.

The real Hub cannot be reached from these machines; every test here runs with no network."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from detdemo.errors import DetDemoError
from detdemo.models.portable import CONFIG_FILE, WEIGHTS_FILE, load_portable, save_portable
from tests.conftest import REPO
from tests.hubcache import populate

SHAPES = REPO / "models" / "shapes"
IMAGE = sorted((SHAPES / "examples").glob("*.jpg"))[0]
REPO_ID = "alice/shapes"


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """``detdemo publish`` of the bundled shapes model, staged only (no upload)."""
    from detdemo.cli import main

    out = tmp_path_factory.mktemp("publish")
    assert main(["publish", "--model", str(SHAPES), "--out", str(out), "--repo-id", REPO_ID, "--dataset",
                 "synthetic-shapes", "--license", "bsd-3-clause"]) == 0
    return out


@pytest.fixture(scope="module")
def hub_cache(staged, tmp_path_factory) -> tuple[Path, str]:
    cache = tmp_path_factory.mktemp("hub")
    return cache, populate(cache, REPO_ID, staged / "model")


def _outputs(predictor, image=IMAGE):
    det = predictor.predict(__import__("PIL.Image", fromlist=["Image"]).open(image), score_threshold=0.0)
    return det.boxes, det.scores, det.labels, det.mask_probs


def test_safetensors_and_config_rebuild_the_model_with_identical_outputs(tmp_path, monkeypatch):
    from detdemo.checkpoint import load_checkpoint
    from export.runtime import load_predictor

    save_portable(tmp_path, load_checkpoint(SHAPES / "model.pt"))
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["architecture"] == "maskrcnn_light" and config["class_names"] == ["circle", "square", "triangle"]
    assert config["preprocessing"]["min_size"] and config["model_config"]["kwargs"]
    reference = load_predictor(SHAPES / "model.pt")

    def no_pickles(*args, **kwargs):
        raise AssertionError("torch.load called while loading safetensors")

    monkeypatch.setattr(torch, "load", no_pickles)
    portable = load_predictor(tmp_path)  # a folder with safetensors + config.json
    assert portable.backend == "pytorch" and Path(portable.path).name == WEIGHTS_FILE
    for a, b in zip(_outputs(reference), _outputs(portable)):
        assert np.array_equal(a, b)
    model, cfg, _ = load_portable(tmp_path / WEIGHTS_FILE)
    assert cfg.arch == "maskrcnn_light" and not model.training


def test_portable_weights_fail_clearly(tmp_path):
    from export.runtime import load_predictor

    folder = tmp_path / "w"
    folder.mkdir()
    shutil.copyfile(SHAPES / "model.pt", tmp_path / "ck.pt")
    from detdemo.checkpoint import load_checkpoint

    save_portable(folder, load_checkpoint(tmp_path / "ck.pt"))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(folder / WEIGHTS_FILE, alone / WEIGHTS_FILE)
    with pytest.raises(DetDemoError, match="config.json beside them"):
        load_predictor(alone / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(DetDemoError, match="not a detdemo model config"):
        load_predictor(folder / WEIGHTS_FILE)
    data = (alone / WEIGHTS_FILE).read_bytes()
    (alone / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    shutil.copyfile(SHAPES / "model.pt", tmp_path / "x.pt")
    save_portable(tmp_path / "ok", load_checkpoint(tmp_path / "x.pt"))
    shutil.copyfile(alone / WEIGHTS_FILE, tmp_path / "ok" / WEIGHTS_FILE)
    with pytest.raises(DetDemoError, match="safetensors"):
        load_predictor(tmp_path / "ok" / WEIGHTS_FILE)


def test_model_repo_holds_no_pickle_and_a_card_the_hub_reads(staged):
    from huggingface_hub import ModelCard

    model = staged / "model"
    names = {p.name for p in model.iterdir()}
    assert {WEIGHTS_FILE, CONFIG_FILE, "model.onnx", "model.pt2", "export.json", "parity.md",
            "README.md", "examples"} <= names
    assert "model.pt" not in names
    manifest = json.loads((model / "export.json").read_text())
    assert manifest["files"]["eager"] == WEIGHTS_FILE and "/" not in manifest["source"]
    assert json.loads((model / CONFIG_FILE).read_text())["export_id"] == manifest["export_id"]
    card = ModelCard.load(model / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "object-detection" and data["library_name"] == "detdemo"
    assert data["license"] == "bsd-3-clause" and data["datasets"] == ["synthetic-shapes"]
    assert {"detdemo", "maskrcnn_light", "instance-segmentation"} <= set(data["tags"])
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    recorded = json.loads((SHAPES / "export.json").read_text())["metrics"]
    assert metrics["bbox_ap"] == round(recorded["bbox_AP"], 4) and metrics["segm_ap"] == round(recorded["segm_AP"], 4)
    assert card.data.eval_results[0].dataset_name == "synthetic-shapes"
    text = card.text
    assert f"detdemo predict --model {REPO_ID}" in text and "onnxruntime" in text and "PASS" in text
    assert "Loading `model.pt2` runs code from the file" in text
    # the evaluation pictures are staged and shown in the card by links relative to the repo
    pictures = json.loads((model / "evaluation" / "pictures.json").read_text())
    assert pictures == json.loads((SHAPES / "evaluation" / "pictures.json").read_text())
    assert (model / "evaluation.json").is_file() and len(pictures["gallery"]) > 0
    charts = ("pr_curves.png", "confusion_matrix.png", "per_class_ap.png")
    for name in (*charts, *(g["file"] for g in pictures["gallery"])):
        assert (model / "evaluation" / name).read_bytes()[:4] == b"\x89PNG" and f"](evaluation/{name})" in text, name


def test_check_export_verifies_a_published_model_repo(staged, tmp_path):
    """The repo's reference is model.safetensors: check-export compares every file with it."""
    from detdemo.cli import main

    assert main(["check-export", str(staged / "model"), "--probes", "basic", "--report-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "parity.json").read_text())
    from export.runtime import folder_files

    published = set(folder_files(staged / "model")) - {"eager"}  # every file the repo holds, fast files included
    assert report["passed"] and {"onnx", "pt2"} <= published and set(report["backends"]) == published


def test_the_card_states_the_ap_verdicts_the_manifest_recorded(tmp_path):
    """An export folder checked with --data: each file's AP verdict comes from its manifest's verified figures."""
    from export.publish import stage_model_repo

    bccd = REPO / "models" / "bccd"
    verified = json.loads((bccd / "export.json").read_text())["verified"]
    facts = stage_model_repo(bccd, tmp_path / "model", "me/bccd", dataset="BCCD")
    text = (tmp_path / "model" / "README.md").read_text()
    for name, figures in verified.items():
        line = next(v for v in facts.verification if v.startswith(_label_of(name) + ", AP on BCCD val"))
        assert f"{figures['dbbox_AP']:+.4f}" in line and line in text


def _label_of(fmt: str) -> str:
    from export.formats import choice_label, choice_of

    return choice_label(choice_of(fmt))


def _run(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detdemo", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _offline_env(cache: Path) -> dict:
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent / "home")}


def test_predict_by_repo_id_from_the_hub_cache_offline(hub_cache, tmp_path):
    cache, commit = hub_cache
    env = _offline_env(cache)
    local = tmp_path / "local"
    assert _run(["predict", "--model", str(SHAPES / "model.onnx"), "--input", str(IMAGE), "--out", str(local)],
                env).returncode == 0
    for ref, backend in ((REPO_ID, None), (f"{REPO_ID}@{commit}", "onnxruntime")):
        out = tmp_path / backend if backend else tmp_path / "default"
        args = ["predict", "--model", ref, "--input", str(IMAGE), "--out", str(out)]
        done = _run(args + (["--backend", backend] if backend else []), env)
        assert done.returncode == 0, done.stderr
        index = json.loads((out / "images.json").read_text())
        assert index["backend"] == (backend or "pytorch") and str(cache) in index["model"]
        assert index["model"].endswith(WEIGHTS_FILE if backend is None else "model.onnx")
        got = json.loads((out / "predictions.json").read_text())
        want = json.loads((local / "predictions.json").read_text())
        assert [r["category_id"] for r in got] == [r["category_id"] for r in want]
        assert np.allclose([r["bbox"] for r in got], [r["bbox"] for r in want], atol=0.05)
    done = _run(["predict", "--model", "bob/nothing", "--input", str(IMAGE), "--out", str(tmp_path / "x")], env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "offline (HF_HUB_OFFLINE=1) and the Hub cache holds no copy" in done.stderr
    done = _run(["predict", "--model", f"{REPO_ID}@0123456789012345678901234567890123456789", "--input",
                 str(IMAGE), "--out", str(tmp_path / "y")], env)
    assert done.returncode == 2 and "no copy" in done.stderr


def test_only_what_the_backend_reads_is_fetched_and_names_stay_inside(tmp_path):
    from export.hub_files import _names_for

    manifest = {"files": {"eager": WEIGHTS_FILE, "torchscript": "model.torchscript.pt", "onnx": "model.onnx",
                          "onnx-int8": "model.int8.onnx", "openvino": "model.xml", "pt2": "model.pt2",
                          "aoti": "model.aoti.pt2"}}
    assert _names_for(manifest, True, None, tmp_path) == [WEIGHTS_FILE, CONFIG_FILE]  # safe default, no code
    assert _names_for(manifest, True, {"onnxruntime"}, tmp_path) == ["model.onnx", "model.int8.onnx"]
    assert _names_for(manifest, True, {"torchscript"}, tmp_path) == ["model.torchscript.pt"]
    assert _names_for(manifest, True, {"pt2"}, tmp_path) == ["model.pt2"]
    assert _names_for(manifest, True, {"inductor"}, tmp_path) == ["model.aoti.pt2"]
    from export.hub_files import hub_backends

    assert hub_backends(None) == {"pytorch", "onnxruntime", "openvino"} == hub_backends("onnxruntime")
    assert hub_backends("pt2") == {"pytorch", "onnxruntime", "openvino", "pt2"}
    assert _names_for(manifest, True, {"openvino"}, tmp_path) == ["model.xml", "model.bin"]
    pickled = {"files": {"eager": "model.pt", "onnx": "model.onnx"}}
    assert _names_for(pickled, False, None, tmp_path) == ["model.onnx"]  # a pickle is never fetched
    with pytest.raises(DetDemoError, match="no file for PyTorch"):
        _names_for(pickled, False, {"pytorch"}, tmp_path)
    assert _names_for(None, False, None, tmp_path) == ["*.onnx"]  # a repo with only an ONNX file
    for evil in ("../../../etc/passwd", "/etc/passwd", "a/../../b.onnx", "..\\x.onnx"):
        with pytest.raises(DetDemoError, match="refusing file name"):
            _names_for({"files": {"onnx": evil}}, False, None, tmp_path)


def test_a_repo_holding_only_an_onnx_file_serves(tmp_path):
    from export.runtime import load_predictor

    folder = tmp_path / "onnx_only"
    folder.mkdir()
    shutil.copyfile(SHAPES / "model.onnx", folder / "detector.onnx")
    cache = tmp_path / "cache"
    populate(cache, "carol/onnx-only", folder)
    code = ("import sys, json; from export.runtime import load_predictor; from PIL import Image; "
            "p = load_predictor('carol/onnx-only'); d = p.predict(Image.open(sys.argv[1]), score_threshold=0.5); "
            "print(json.dumps([p.backend, len(d), p.class_names]))")
    done = subprocess.run([sys.executable, "-c", code, str(IMAGE)], env=_offline_env(cache), capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    backend, count, names = json.loads(done.stdout.strip().splitlines()[-1])
    local = load_predictor(SHAPES / "model.onnx")
    from PIL import Image

    assert backend == "onnxruntime" and names == local.class_names
    assert count == len(local.predict(Image.open(IMAGE), score_threshold=0.5)) > 0


def test_the_app_serves_a_repo_holding_only_an_onnx_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from detdemo.app.catalogue import Catalogue, entry_from_path
    from detdemo.app.predict import PredictRequest, run_prediction

    folder = tmp_path / "onnx_only"
    folder.mkdir()
    shutil.copyfile(SHAPES / "model.onnx", folder / "model.onnx")
    populate(tmp_path / "cache", "carol/onnx-only", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    entry = entry_from_path("carol/onnx-only")
    assert entry.backends == ["onnxruntime"] and entry.name == "onnx-only"
    result = run_prediction(Catalogue([entry]), PredictRequest(str(IMAGE), "onnx-only", "onnxruntime", 0.5))
    assert result.rows


def test_app_loads_a_repo_id_without_its_code_running_files_unless_asked(hub_cache, monkeypatch):
    from huggingface_hub import constants

    from detdemo.app.catalogue import entry_from_path

    cache, commit = hub_cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    entry = entry_from_path(f"{REPO_ID}@{commit}")
    assert entry.name == "shapes" and {"pytorch", "onnxruntime"} <= set(entry.backends)
    assert "pt2" not in entry.backends and "runs code" in entry.missing["pt2"] and entry.examples
    asked = entry_from_path(f"{REPO_ID}@{commit}", backend="pt2")
    assert "pt2" in asked.backends


def _booby_trapped(pt2: Path, out: Path, marker: Path) -> Path:
    """``pt2`` rewritten so that loading it runs code (touches ``marker``): torch.export.load parses the graph's
    symbolic sizes with sympy.sympify, which evaluates the text (docs/export.md)."""
    from torch.export.pt2_archive._package import PT2ArchiveReader, PT2ArchiveWriter

    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or "
    with PT2ArchiveReader(str(pt2)) as reader, PT2ArchiveWriter(str(out)) as writer:
        for name in reader.get_file_names():
            data = reader.read_bytes(name)
            if name.endswith("models/model.json"):
                text = data.decode()
                assert '"expr_str": "Symbol(' in text
                data = text.replace('"expr_str": "Symbol(', '"expr_str": "' + payload + 'Symbol(', 1).encode()
            if not writer.has_record(name):
                writer.write_bytes(name, data)
    return out


def test_a_strangers_pt2_is_never_loaded_unless_asked_for_by_name(staged, tmp_path, monkeypatch):
    """A Hub repo whose model.pt2 runs code when loaded: predicting, and the app's start with its first-use check,
    use the safe files and never touch it; it is offered only when its backend is asked for by name."""
    from huggingface_hub import constants

    from detdemo.app.catalogue import Catalogue, entry_from_path
    from detdemo.app.ui import build_demo

    repo = tmp_path / "repo"
    shutil.copytree(staged / "model", repo)
    marker = tmp_path / "code-ran"
    _booby_trapped(staged / "model" / "model.pt2", repo / "model.pt2", marker)
    cache = tmp_path / "cache"
    commit = populate(cache, "mallory/shapes", repo)
    done = _run(["predict", "--model", "mallory/shapes", "--input", str(IMAGE), "--out", str(tmp_path / "p")],
                _offline_env(cache))
    assert done.returncode == 0, done.stderr
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    entry = entry_from_path(f"mallory/shapes@{commit}")
    build_demo(Catalogue([entry]))  # the start: every offered backend checked against PyTorch
    assert "pt2" not in entry.backends and not marker.exists()
    assert "pt2" in entry_from_path(f"mallory/shapes@{commit}", backend="pt2").backends  # asked: the user's call
    assert not marker.exists()


class FakeHfApi:
    """Records what publishing asks of the Hub; answers like HfApi with a commit id."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, space_sdk=None, **kw):
        self.calls.append(("create_repo", repo_id, repo_type, private, space_sdk))

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kw):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, repo_type, files))
        return argparse.Namespace(oid=f"{len(self.calls):040d}")


def _publish_args(out: Path, **kw) -> argparse.Namespace:
    from detdemo.cli import build_parser

    extra = [x for k, v in kw.items() for x in ([f"--{k.replace('_', '-')}", v] if v is not True else
                                                  [f"--{k.replace('_', '-')}"])]
    return build_parser().parse_args(["publish", "--model", str(SHAPES), "--out", str(out), *extra])


def test_publish_uploads_model_then_a_space_pinned_to_its_commit(tmp_path):
    from detdemo.commands.publish import run

    api = FakeHfApi()
    assert run(_publish_args(tmp_path, push="alice/shapes", space="alice/shapes-demo", private=True), api=api) == 0
    kinds = [(c[0], c[1], c[2]) for c in api.calls]
    assert kinds == [("create_repo", "alice/shapes", "model"), ("upload_folder", "alice/shapes", "model"),
                     ("create_repo", "alice/shapes-demo", "space"), ("upload_folder", "alice/shapes-demo", "space")]
    assert api.calls[0][3] is True and api.calls[2][4] == "gradio"
    model_files, space_files = api.calls[1][3], api.calls[3][3]
    assert WEIGHTS_FILE in model_files and "model.pt" not in model_files and "README.md" in model_files
    assert {"app.py", "requirements.txt", "README.md", "detdemo/app/main.py", "export/runtime.py"} <= set(space_files)
    commit = f"{2:040d}"  # the fake's answer to the model upload
    assert f'MODEL = "alice/shapes@{commit}"' in (tmp_path / "space" / "app.py").read_text()
    readme = (tmp_path / "space" / "README.md").read_text()
    assert "models:\n  - alice/shapes" in readme and "sdk: gradio" in readme and "app_file: app.py" in readme


def test_publish_from_a_training_run_exports_and_checks_first(tmp_path):
    from detdemo.cli import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(SHAPES / "model.pt", run / "best.pt")
    shutil.copytree(SHAPES / "evaluation", run / "evaluation")  # as the trainer writes them for best.pt
    shutil.copyfile(SHAPES / "evaluation.json", run / "evaluation.json")
    out = tmp_path / "out"
    assert main(["publish", "--model", str(run), "--out", str(out), "--repo-id", "alice/run"]) == 0
    model = out / "model"
    assert {WEIGHTS_FILE, "model.onnx", "model.pt2", "parity.md", "README.md", "evaluation"} <= {
        p.name for p in model.iterdir()}
    assert "](evaluation/confusion_matrix.png)" in (model / "README.md").read_text()
    assert json.loads((out / "export" / "parity.json").read_text())["passed"]
    assert "**PASS**" in (model / "README.md").read_text()
    assert 'MODEL = "alice/run@main"' in (out / "space" / "app.py").read_text()


def test_publish_without_a_token_says_so_before_any_work(tmp_path, monkeypatch, capsys):
    from detdemo.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    assert main(["publish", "--model", str(SHAPES), "--out", str(tmp_path / "out"), "--push", "alice/x"]) == 2
    err = capsys.readouterr().err
    assert "no Hugging Face token: set HF_TOKEN" in err and not (tmp_path / "out").exists()
    assert main(["publish", "--model", str(SHAPES), "--out", str(tmp_path / "o2"), "--space", "alice/x"]) == 2
    assert "--space needs the model repo" in capsys.readouterr().err
    assert main(["publish", "--model", str(SHAPES), "--out", str(tmp_path / "o3"), "--push", "not a repo"]) == 2


@pytest.mark.slow
def test_staged_space_installs_alone_and_answers_gradio_client(staged, hub_cache, tmp_path):
    """The Space folder, copied alone, in a fresh virtual environment from its own requirements.txt."""
    from gradio_client import Client, handle_file

    from detdemo.app.lineup import default_catalogue
    from detdemo.app.predict import PredictRequest, run_prediction

    cache, _ = hub_cache
    space = tmp_path / "space"
    shutil.copytree(staged / "space", space)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--no-compile",
                          "-r", str(space / "requirements.txt")], capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-3000:]
    port = __import__("tests.test_live_app", fromlist=["_free_port"])._free_port()
    env = {**_offline_env(cache), "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": ""}
    server = subprocess.Popen([str(venv / "bin" / "python"), "app.py"], cwd=space, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        client, deadline = None, time.time() + 240
        while client is None and time.time() < deadline:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                client = Client(url, verbose=False, analytics_enabled=False)
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        assert client is not None, "the Space did not start in 4 minutes"
        result = client.predict(handle_file(str(IMAGE)), "shapes", "pytorch", 0.5, True, True, True,
                                api_name="/predict")
    finally:
        server.terminate()
        server.wait(timeout=30)
    want = run_prediction(default_catalogue(SHAPES / "model.pt", include_coco=False, bundled=[]),
                          PredictRequest(str(IMAGE), "model.pt", "pytorch", 0.5))
    assert result[1]["data"] == want.rows and len(want.rows) > 0
