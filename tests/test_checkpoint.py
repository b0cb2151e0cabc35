from __future__ import annotations

import os
import pickle

import pytest
import torch

from detdemo import build_model, load_model, save_checkpoint
from detdemo.checkpoint import load_checkpoint
from detdemo.errors import CheckpointError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model, cfg = build_model("maskrcnn_light", 3, ["circle", "square"], box_score_thresh=0.0, min_size=160,
                             max_size=200)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, cfg, train_config={"lr": 0.01}, metrics={"bbox_AP": 0.5})
    return model.eval(), cfg, path


def test_round_trip_rebuilds_without_flags(trained):
    model, cfg, path = trained
    loaded, cfg2 = load_model(path)
    assert cfg2 == cfg and cfg2.class_names == ["circle", "square"] and cfg2.kwargs["min_size"] == 160
    assert loaded.transform.min_size == (160,) and loaded.roi_heads.score_thresh == 0.0
    x = [torch.rand(3, 150, 170)]
    with torch.no_grad():
        a, b = model(x)[0], loaded(x)[0]
    assert len(a["boxes"]) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    data = load_checkpoint(path)
    assert data["metrics"] == {"bbox_AP": 0.5} and data["train_config"] == {"lr": 0.01}
    assert data["versions"]["torch"] == torch.__version__


def test_folder_resolves_to_best_or_last(trained, tmp_path):
    _, _, path = trained
    (tmp_path / "last.pt").write_bytes(path.read_bytes())
    assert load_checkpoint(tmp_path)["path"].endswith("last.pt")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CheckpointError, match="folder holds no checkpoint"):
        load_checkpoint(tmp_path / "sub")


def test_truncated_empty_and_garbage_files(trained, tmp_path):
    _, _, path = trained
    blob = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt: cannot read checkpoint: the file is truncated or corrupt"):
        load_model(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: checkpoint file is empty"):
        load_model(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello world")
    with pytest.raises(CheckpointError, match="text.pt: cannot read checkpoint"):
        load_model(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint file not found"):
        load_model(tmp_path / "missing.pt")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refuses_to_unpickle_code(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "detdemo-checkpoint", "x": Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_model(tmp_path / "evil.pt")


def test_foreign_files(trained, tmp_path):
    model, cfg, _ = trained
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain.pt: not a detdemo checkpoint. It looks like a plain state dict"):
        load_model(tmp_path / "plain.pt")
    other, other_cfg = build_model("fasterrcnn_light", 3)
    save_checkpoint(tmp_path / "mixed.pt", other, cfg)  # claims maskrcnn_light, holds faster weights
    with pytest.raises(CheckpointError, match="mixed.pt: weights do not fit maskrcnn_light"):
        load_model(tmp_path / "mixed.pt")


def test_failed_write_keeps_previous_file_and_leaves_no_temp(trained, tmp_path, monkeypatch):
    model, cfg, path = trained
    target = tmp_path / "best.pt"
    save_checkpoint(target, model, cfg, metrics={"v": 1})
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, model, cfg, metrics={"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(target)["metrics"] == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_finetune_from_own_checkpoint_replaces_heads(trained):
    _, _, path = trained
    model, cfg = build_model("maskrcnn_light", 4, ["a", "b", "c"], weights=str(path))
    assert cfg.pretrained == str(path) and cfg.kwargs["min_size"] == 160
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    src = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["backbone.0.0.weight"], src["backbone.0.0.weight"])


WRITER = """
import sys, torch
from detdemo import ModelConfig, save_checkpoint
model, cfg = torch.nn.Linear(1000, 1000), ModelConfig("maskrcnn_light", 2, ["a"])  # 4 MB per write
i = 0
while True:
    i += 1
    save_checkpoint(sys.argv[1], model, cfg, metrics={"i": i})
    print(i, flush=True)
"""


def test_kill_9_at_any_moment_never_leaves_an_unreadable_checkpoint(tmp_path):
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    target = tmp_path / "last.pt"
    rng = random.Random(0)
    seen = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()  # at least one complete write
        time.sleep(rng.uniform(0.0, 0.4))  # then die somewhere inside a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = load_checkpoint(target)  # always the previous or the new file, whole
        assert data["metrics"]["i"] >= 1
        seen += 1
    assert seen == 4
    assert [p.name for p in tmp_path.iterdir() if p.name == "last.pt"] == ["last.pt"]
