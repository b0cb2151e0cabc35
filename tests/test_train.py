from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detdemo import load_model
from detdemo.checkpoint import load_checkpoint
from detdemo.cli import main
from detdemo.data import open_dataset
from detdemo.engine.config import TrainConfig
from detdemo.engine.evaluate import STAT_NAMES, coco_evaluate, dataset_to_coco
from detdemo.engine.trainer import Trainer, TrainingDiverged, fit
from tests.conftest import REPO, shared

SMALL = {"min_size": 96, "max_size": 128}


def small_cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), model="maskrcnn_light", out=str(out), epochs=1, batch_size=2, workers=0,
                min_size=96, max_size=128, warmup_iters=2, max_iters_per_epoch=3, seed=0,
                model_kwargs={"box_detections_per_img": 20})
    base.update(kw)
    return TrainConfig(**base)


def test_one_epoch_train_and_eval_writes_everything(shapes_dir, tmp_path):
    out = fit(small_cfg(shapes_dir, tmp_path / "run"), progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    m = json.loads(lines[0])
    for key in ("bbox_AP", "bbox_AP50", "segm_AP", "loss", "loss_mask", "lr", "s_per_iter", "images_per_s"):
        assert key in m, key
    assert 0.0 <= m["bbox_AP"] <= 1.0 and set(m["per_class_AP"]["bbox"]) == {"circle", "square", "triangle"}
    assert m["iterations"] == 3 and 0 < m["s_per_iter"] < m["train_time_s"]  # means, not sums, with progress off
    parts = sum(v for k, v in m.items() if k.startswith("loss_"))
    assert m["loss"] == pytest.approx(parts) and m["loss"] < 10
    for name in ("last.pt", "best.pt", "curves.png", "config.json"):
        assert (out / name).stat().st_size > 0, name
    model, cfg = load_model(out / "best.pt")
    assert cfg.class_names == ["circle", "square", "triangle"] and cfg.kwargs["min_size"] == 96
    assert "training_state" in load_checkpoint(out / "last.pt")
    assert "training_state" not in load_checkpoint(out / "best.pt")
    # what the data states about itself, for publish (detdemo.data.provenance)
    assert load_checkpoint(out / "best.pt")["dataset"]["license"] == "cc0-1.0"
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["train"]["lr"] == 0.005 and resolved["train"]["weight_decay"] == 5e-4
    with pytest.raises(Exception, match="already holds a run"):
        Trainer(small_cfg(shapes_dir, out), progress=False)


def test_resume_is_exact_on_cpu(shapes_dir, tmp_path):
    kw = {"max_iters_per_epoch": 2, "eval_every": 100}
    straight = fit(small_cfg(shapes_dir, tmp_path / "a", epochs=2, **kw), progress=False)
    fit(small_cfg(shapes_dir, tmp_path / "b", epochs=1, **kw), progress=False)
    resumed = fit(None, resume=str(tmp_path / "b"), progress=False, epochs=2)
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(resumed / "last.pt")
    assert a["training_state"]["epoch"] == b["training_state"]["epoch"] == 1
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for g1, g2 in zip(a["training_state"]["optimizer"]["state"].values(),
                      b["training_state"]["optimizer"]["state"].values()):
        assert torch.equal(g1["momentum_buffer"], g2["momentum_buffer"])
    assert len((resumed / "metrics.jsonl").read_text().splitlines()) == 2


class _NaNAfter(torch.nn.Module):
    """Wraps a detector; from call ``after`` on, the classifier loss is NaN."""

    def __init__(self, model, after: int):
        super().__init__()
        self.model, self.after, self.calls = model, after, 0

    def forward(self, images, targets):
        losses = self.model(images, targets)
        self.calls += 1
        if self.calls > self.after:
            losses["loss_classifier"] = losses["loss_classifier"] * float("nan")
        return losses


def test_non_finite_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(shapes_dir, tmp_path):
    trainer = Trainer(small_cfg(shapes_dir, tmp_path / "run", epochs=3, max_iters_per_epoch=2, eval_every=100),
                      progress=False)
    trainer.ddp = _NaNAfter(trainer.model, after=3)  # epoch 1 is fine, epoch 2 step 2 diverges
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: loss_classifier=nan.*last good checkpoint"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["training_state"]["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_torchrun_two_processes_gloo(shapes_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "detdemo", "train", "--data", str(shapes_dir), "--model", "fasterrcnn_light", "--epochs", "1",
           "--batch-size", "1", "--workers", "0", "--min-size", "96", "--max-size", "128",
           "--max-iters-per-epoch", "2", "--device", "cpu", "--quiet", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # rank 0 only
    m = json.loads(lines[0])
    assert m["images_per_s"] > 0 and "bbox_AP" in m
    ckpt = load_checkpoint(out / "last.pt")
    assert len(ckpt["training_state"]["rng"]) == 2  # both ranks' RNG kept for an exact resume
    assert proc.stdout.count("done:") == 1


def _fixed_detections(gt: COCO) -> list[dict]:
    """GT boxes shifted and rescored, box-shaped masks, plus false positives: deterministic, mid-range AP."""
    from pycocotools import mask as mask_utils

    g = torch.Generator().manual_seed(0)
    results = []
    for ann in gt.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        dx, dy = ((torch.rand(2, generator=g) - 0.5) * 0.6 * torch.tensor([w, h])).tolist()
        box = [x + dx, y + dy, w, h]
        img = gt.imgs[ann["image_id"]]
        rle = mask_utils.frPyObjects(np.array([box], dtype=np.float64), img["height"], img["width"])[0]
        rle["counts"] = rle["counts"].decode()
        r = {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": box,
             "score": float(torch.rand(1, generator=g)), "segmentation": rle}
        results.append(r)
        if len(results) % 3 == 0:  # a false positive of another class
            other = [c for c in gt.getCatIds() if c != ann["category_id"]][0]
            results.append(dict(r, category_id=other, score=r["score"] * 0.9))
    return results


@pytest.mark.parametrize("source", ["shapes", "coco128"])
def test_eval_equals_pycocotools(source, shapes_dir):
    if source == "shapes":
        root, json_path = shapes_dir, shapes_dir / "annotations" / "instances_val.json"
    else:
        root = shared("coco128")
        json_path = root / "annotations" / "instances_val2017.json"
    ds = open_dataset(root, "val")
    ours_gt = dataset_to_coco(ds, with_masks=True)
    reference_gt = COCO(str(json_path))
    results = _fixed_detections(reference_gt)
    ours = coco_evaluate(ours_gt, results, ("bbox", "segm"), ds.class_names)
    for iou_type in ("bbox", "segm"):
        ev = COCOeval(reference_gt, reference_gt.loadRes([dict(r) for r in results]), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        expected = dict(zip(STAT_NAMES, ev.stats.tolist()))
        assert ours.stats[iou_type] == expected
        assert 0.05 < expected["AP"] < 0.9, expected["AP"]  # a meaningful, non-degenerate comparison


def test_cli_train_eval_predict_end_to_end(shapes_dir, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--data", str(shapes_dir), "--model", "fasterrcnn_light", "--epochs", "1", "--workers", "0",
               "--min-size", "96", "--max-size", "128", "--max-iters-per-epoch", "2", "--quiet", "--out", str(run),
               "--model-arg", "representation_size=64", "--model-arg", "box_score_thresh=0.01"])
    assert rc == 0 and "done:" in capsys.readouterr().out
    kwargs = load_checkpoint(run / "best.pt")["model_config"]["kwargs"]
    assert kwargs["representation_size"] == 64 and kwargs["box_score_thresh"] == 0.01
    rc = main(["eval", "--checkpoint", str(run), "--data", str(shapes_dir), "--out", str(tmp_path / "e.json")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in text
    assert "circle" in text and "bbox AP" in text
    report = json.loads((tmp_path / "e.json").read_text())
    assert set(report["stats"]["bbox"]) == set(STAT_NAMES) and report["num_images"] == 4
    (tmp_path / "imgs").mkdir()
    for p in sorted((shapes_dir / "val").iterdir())[:2]:
        (tmp_path / "imgs" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    rc = main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(tmp_path / "imgs"),
               "--out", str(tmp_path / "pred"), "--score-threshold", "0.0"])
    captured = capsys.readouterr()
    assert rc == 0 and "broken.jpg" in captured.err
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == ["val_000000.png", "val_000001.png"]
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert all({"image_id", "category_id", "bbox", "score"} <= set(p) for p in preds)
    # bad inputs: one line, exit code 2, no traceback
    (tmp_path / "bad.pt").write_text("nope")
    rc = main(["eval", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(shapes_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.pt: cannot read checkpoint" in err and "Traceback" not in err
    rc = main(["train", "--data", str(tmp_path / "nowhere"), "--quiet"])
    assert rc == 2 and "dataset path not found" in capsys.readouterr().err


def test_time_limit_stops_after_the_epoch_and_evaluates_it(shapes_dir, tmp_path):
    out = fit(small_cfg(shapes_dir, tmp_path / "run", epochs=5, max_iters_per_epoch=1, eval_every=100,
                        time_limit_min=1e-6), progress=False)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and "bbox_AP" in lines[0]
    assert load_checkpoint(out / "last.pt")["training_state"]["epoch"] == 0


def test_mask_model_on_box_only_data_is_refused(tmp_path):
    with pytest.raises(Exception, match="has no instance masks"):
        Trainer(small_cfg(shared("BCCD"), tmp_path / "r"), progress=False)


def test_scaled_lr_and_schedules():
    from detdemo.engine.schedule import lr_factor

    cfg = TrainConfig(data="x", batch_size=8, scale_lr=True)
    assert cfg.effective_lr(world_size=2) == pytest.approx(0.005 * 16 / 2)
    step = TrainConfig(data="x", warmup_iters=10, epochs=9)
    assert lr_factor(0, step, 100) == pytest.approx(0.001)
    assert lr_factor(10, step, 100) == 1.0 and lr_factor(300, step, 100) == pytest.approx(0.1)
    assert lr_factor(600, step, 100) == pytest.approx(0.01)
    cos = TrainConfig(data="x", warmup_iters=0, schedule="cosine", epochs=4)
    assert lr_factor(200, cos, 100) == pytest.approx(0.5) and lr_factor(400, cos, 100) == pytest.approx(0.0)


def test_resume_refuses_settings_it_cannot_honour_and_takes_the_ones_it_can(shapes_dir, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["--data", str(shapes_dir), "--model", "fasterrcnn_light", "--workers", "0", "--min-size", "96",
            "--max-size", "128", "--max-iters-per-epoch", "1", "--quiet", "--out", str(run)]
    assert main(["train", *base, "--epochs", "1"]) == 0
    capsys.readouterr()
    rc = main(["train", "--resume", str(run), "--lr", "0.1", "--no-augment"])
    err = capsys.readouterr().err
    assert rc == 2 and "--lr (the run has lr=0.005)" in err and "--no-augment" in err
    assert "--epochs, --workers" in err and "Traceback" not in err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # nothing ran
    assert main(["train", "--resume", str(run), "--epochs", "2", "--workers", "0", "--quiet"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert load_checkpoint(run / "last.pt")["train_config"]["epochs"] == 2


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "0", "must be at least 1"), ("--lr", "nan", "finite number above 0"),
    ("--lr", "inf", "finite number above 0"), ("--batch-size", "-2", "must be at least 1"),
    ("--val-fraction", "1.5", "between 0 and 1"),
])
def test_bad_training_numbers_are_refused_when_parsed(flag, value, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path), flag, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
