"""The parity checker's own regression suite: exports broken the ways users' exports really break, each of which
`check-export` must fail, naming what broke; and the unmutated export, which must pass with nothing excused.

Reference: the bundled model's eager checkpoint. Candidates: its ONNX export, re-exported from damaged weights, or
its real ONNX Runtime session with the graph's outputs damaged on the way out (as a broken graph would return).
Both ONNX exporters are held to it: the bundled file (the dynamo exporter's) and a legacy export of the same
checkpoint; damaged weights go through the legacy exporter (seconds) and, for one damage, the dynamo one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from detdemo.checkpoint import load_checkpoint, save_checkpoint
from detdemo.inference.detections import Detections
from detdemo.models import model_from_checkpoint
from export.exporters import export_onnx
from export.parity import Tolerances, compare, default_probes, run_parity
from export.runtime import OnnxPredictor, load_predictor
from tests.conftest import bundled_like_shapes

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "shapes"
TOL = Tolerances()


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """Unseen shapes images at the bundled model's scale, plus the hard probes (blank, tiny, large, grayscale)."""
    out = tmp_path_factory.mktemp("mutation_probes")
    bundled_like_shapes(out, train=1, val=4, seed=31)
    return default_probes(sorted((out / "val").iterdir()))


@pytest.fixture(scope="module")
def reference():
    return load_predictor(BUNDLED / "model.pt", "pytorch", "cpu")


@pytest.fixture(scope="module", params=["onnx-dynamo", "onnx-legacy", "pt2", "openvino", "aoti"])
def exported(request, tmp_path_factory) -> tuple[Path, str]:
    """(file, backend) of every full-precision format checked detection by detection: the bundled model's ONNX
    file from each exporter, its ExportedProgram, its OpenVINO IR run in fp32 and an AOTInductor package of it."""
    if request.param == "onnx-dynamo":
        assert OnnxPredictor(BUNDLED / "model.onnx").meta["exporter"] == "torch.onnx.export(dynamo=True)"
        return BUNDLED / "model.onnx", "onnxruntime"
    if request.param in ("pt2", "openvino"):
        return BUNDLED / {"pt2": "model.pt2", "openvino": "model.xml"}[request.param], request.param
    if request.param == "aoti":
        return request.getfixturevalue("bundled_aoti") / "model.aoti.pt2", "inductor"
    model, cfg = model_from_checkpoint(load_checkpoint(BUNDLED / "model.pt"))
    folder = tmp_path_factory.mktemp(request.param)
    return export_onnx(model, cfg, folder / "model.onnx", exporter="legacy"), "onnxruntime"


def open_exported(exported: tuple[Path, str]):
    path, backend = exported
    return load_predictor(path, backend, "cpu", precision="fp32" if backend == "openvino" else None)


def verdict(reference, candidate, probes) -> tuple[bool, str, dict]:
    report = run_parity(reference, [candidate], probes, TOL, cap=100, score_threshold=0.05)
    backend = next(iter(report["backends"].values()))
    reasons = "; ".join(r for row in backend["images"] for r in row["reasons"])
    return report["passed"], reasons, backend["overall"]


def damaged_output(mutate, exported: tuple[Path, str]):
    """The real exported file, with ``mutate(raw graph outputs)`` applied to what its runtime returns."""
    predictor = open_exported(exported)
    run = predictor._run_graph
    predictor._run_graph = lambda x: mutate({k: v.clone() for k, v in run(x).items()})
    return predictor


def damaged_weights(tmp_path: Path, damage, exporter: str = "legacy") -> OnnxPredictor:
    """The bundled checkpoint with ``damage(model)`` applied, exported to ONNX by the real exporter."""
    data = load_checkpoint(BUNDLED / "model.pt")
    model, cfg = model_from_checkpoint(data)
    with torch.no_grad():
        damage(model)
    folder = tmp_path / "damaged"
    folder.mkdir()
    export_onnx(model, cfg, folder / "model.onnx", exporter=exporter)
    return OnnxPredictor(folder / "model.onnx", device="cpu")


def test_the_unmutated_export_passes_with_nothing_excused(reference, probes, exported):
    passed, reasons, overall = verdict(reference, open_exported(exported), probes)
    assert passed, reasons
    assert overall["detections"] >= 20 and overall["excused"] == 0 and overall["unmatched"] == 0
    assert overall["max_mask_prob_diff"] is not None and overall["mask_iou_min"] is not None


@pytest.mark.parametrize("name, damage, expected", [
    ("all weights x 1.0001", lambda m: [p.mul_(1.0001) for p in m.parameters()], "differs"),
    ("box regression x 1.01", lambda m: m.roi_heads.box_predictor.bbox_pred.weight.mul_(1.01), "box differs"),
    ("one class's score biased", lambda m: m.roi_heads.box_predictor.cls_score.bias[1].add_(0.02),
     "score differs"),
    ("mask head x 1.03", lambda m: m.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(1.03),
     "soft mask probability differs"),
])
def test_damaged_weights_are_caught(name, damage, expected, reference, probes, tmp_path):
    passed, reasons, _ = verdict(reference, damaged_weights(tmp_path, damage), probes)
    assert not passed and expected in reasons, (name, reasons)


def test_damaged_weights_through_the_dynamo_exporter_are_caught(reference, probes, tmp_path):
    damage = lambda m: m.roi_heads.box_predictor.bbox_pred.weight.mul_(1.01)  # noqa: E731
    passed, reasons, _ = verdict(reference, damaged_weights(tmp_path, damage, "dynamo"), probes)
    assert not passed and "box differs" in reasons, reasons


def _top(raw: dict) -> int:
    return int(torch.argmax(raw["scores"])) if len(raw["scores"]) else -1


def _move_top(raw):
    if _top(raw) >= 0:
        raw["boxes"][_top(raw)] += 3.0
    return raw


def _drop_top(raw):
    keep = torch.ones(len(raw["scores"]), dtype=torch.bool)
    if _top(raw) >= 0:
        keep[_top(raw)] = False
    return {k: v[keep] for k, v in raw.items()}


def _without(key):
    return lambda raw: {k: v for k, v in raw.items() if k != key}


def _squeeze_masks(raw):
    """Every probability above 0.5 squeezed into (0.5, 0.55]: the same masks at 0.5, none at the tutorial's 0.7."""
    m = raw["masks"]
    raw["masks"] = torch.where(m > 0.5, 0.5 + (m - 0.5) * 0.1, m)
    return raw


@pytest.mark.parametrize("name, mutate, expected", [
    ("top detection moved 3 px", _move_top, "box differs"),
    ("top detection dropped", _drop_top, "unmatched"),
    ("masks output missing", _without("masks"), "masks missing from the export"),
    ("soft masks squeezed above 0.5", _squeeze_masks, "soft mask probability differs"),
    ("labels swapped", lambda raw: {**raw, "labels": 4 - raw["labels"]}, "unmatched"),
])
def test_damaged_outputs_are_caught(name, mutate, expected, reference, probes, exported):
    passed, reasons, _ = verdict(reference, damaged_output(mutate, exported), probes)
    assert not passed and expected in reasons, (name, reasons)


def _near_ties(det: Detections) -> list[tuple[int, int]]:
    """Same-label pairs whose confident scores differ by less than the score tolerance (not genuine ties)."""
    out = []
    for i in range(len(det)):
        for j in range(i + 1, len(det)):
            if det.labels[i] == det.labels[j] and abs(det.scores[i] - det.scores[j]) < TOL.score:
                out.append((i, j))
    return out


def test_near_tied_confident_detections_cannot_hide_a_move_or_a_drop(reference, tmp_path):
    """Confident scores bunch near 1.0, so detections of a label often score within 1e-4 of each other. That is
    not a tie: moving or dropping one of them must fail like any other detection."""
    from detdemo.data.images import open_image
    bundled_like_shapes(tmp_path, train=1, val=40, seed=41)
    pool = [(p.name, open_image(p)) for p in sorted((tmp_path / "val").iterdir())]
    tied = [(name, img) for name, img in pool if _near_ties(reference.predict(img))][:4]
    assert tied, "the probes must hold near-tied confident detections for this test to mean anything"

    def move_tied(pixels):
        def mutate(raw):
            scores = raw["scores"]
            for i in range(len(scores)):
                others = (raw["labels"] == raw["labels"][i]) & ((scores - scores[i]).abs() < TOL.score)
                if others.sum() > 1:
                    raw["boxes"][i] += pixels
            return raw
        return mutate

    def drop_one_per_pair(raw):
        scores, keep = raw["scores"], torch.ones(len(raw["scores"]), dtype=torch.bool)
        for i in range(len(scores)):
            partner = (raw["labels"] == raw["labels"][i]) & ((scores - scores[i]).abs() < TOL.score)
            partner[i] = False
            if partner.any() and keep[partner].all():
                keep[i] = False
        return {k: v[keep] for k, v in raw.items()}

    for mutate, expected in ((move_tied(20.0), "unmatched"), (move_tied(2.0), "box differs"),
                             (drop_one_per_pair, "unmatched")):
        damaged = damaged_output(mutate, (BUNDLED / "model.onnx", "onnxruntime"))
        passed, reasons, overall = verdict(reference, damaged, tied)
        assert not passed and expected in reasons, reasons
        assert overall["excused"] == 0


def _dets(boxes, scores, keypoints=None, labels=None):
    n = len(boxes)
    return Detections(np.array(boxes, np.float32), np.array(labels or [1] * n, np.int64),
                      np.array(scores, np.float32), ["person"],
                      keypoints=None if keypoints is None else np.array(keypoints, np.float32), image_size=(100, 100))


def test_keypoints_are_compared_and_must_be_present():
    kps = [[[20, 20, 1], [30, 40, 1]], [[60, 60, 1], [70, 80, 1]]]
    ref = _dets([[10, 10, 50, 50], [55, 55, 90, 95]], [0.9, 0.8], kps)
    assert compare("p", ref, _dets(ref.boxes, ref.scores, kps), TOL).passed
    moved = np.array(kps, np.float32)
    moved[:, :, :2] += 50
    report = compare("p", ref, _dets(ref.boxes, ref.scores, moved), TOL)
    assert not report.passed and report.max_keypoint_diff_px == 50 and "keypoints differ" in report.reasons[0]
    report = compare("p", ref, _dets(ref.boxes, ref.scores), TOL)
    assert not report.passed and "keypoints missing from the export" in report.reasons


def test_a_keypoint_heatmap_tie_is_excused_but_moved_keypoints_are_not():
    rng = np.random.default_rng(0)
    boxes = [[10 + i, 10, 50 + i, 60] for i in range(4)]
    kps = np.concatenate([rng.uniform(10, 50, (4, 17, 2)), np.ones((4, 17, 1))], axis=2).astype(np.float32)
    peaks = rng.uniform(0, 5, (4, 17)).astype(np.float32)
    ref = _dets(boxes, [0.9, 0.8, 0.7, 0.6], kps)
    ref.keypoint_scores = peaks
    flipped = kps.copy()
    flipped[2, 5, :2] += [3.0, -2.0]  # one keypoint, the same peak value: two equal heatmap cells
    cand = _dets(boxes, [0.9, 0.8, 0.7, 0.6], flipped)
    cand.keypoint_scores = peaks.copy()
    report = compare("p", ref, cand, TOL)
    assert report.passed and report.excused == 1 and report.excusals[0]["why"].startswith("keypoint tie")
    cand.keypoint_scores[2, 5] += 0.01  # the peak itself differs: not a tie
    assert not compare("p", ref, cand, TOL).passed
    everywhere = kps.copy()
    everywhere[:, :, :2] += 1.0  # a decoding offset moves every keypoint, peaks unchanged
    cand = _dets(boxes, [0.9, 0.8, 0.7, 0.6], everywhere)
    cand.keypoint_scores = peaks.copy()
    report = compare("p", ref, cand, TOL)
    assert not report.passed and "keypoints differ" in " ".join(report.reasons)


def test_a_genuine_tie_swap_is_excused_and_listed_but_a_drop_is_not():
    """Two detections scoring exactly the same: NMS may keep either. A one-for-one swap of such a detection for
    its twin is excused (and listed); the same score on a detection with no twin is a drop, and fails."""
    ref = _dets([[0, 0, 10, 10], [40, 40, 50, 50], [80, 80, 90, 90]], [0.7, 0.7, 0.9])
    swapped = _dets([[0, 0, 10, 10], [60, 5, 70, 15], [80, 80, 90, 90]], [0.7, 0.7, 0.9])
    report = compare("p", ref, swapped, TOL)
    assert report.passed and report.excused == 1 and report.excusals[0]["why"] == "tie"
    dropped = _dets([[0, 0, 10, 10], [80, 80, 90, 90]], [0.7, 0.9])
    report = compare("p", ref, dropped, TOL)
    assert not report.passed and report.unmatched == 1 and report.excused == 0
    close_not_tied = _dets([[0, 0, 10, 10], [40, 40, 50, 50]], [0.7, 0.70005])
    moved = _dets([[0, 0, 10, 10], [60, 5, 70, 15]], [0.7, 0.70005])
    report = compare("p", close_not_tied, moved, TOL)
    assert not report.passed and report.unmatched == 2


def test_check_export_names_the_damage_on_the_command_line(tmp_path, capsys):
    from detdemo.cli import main

    folder = tmp_path / "export"
    shutil.copytree(BUNDLED, folder)
    data = load_checkpoint(folder / "model.pt")
    model, cfg = model_from_checkpoint(data)
    with torch.no_grad():
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(1.01)
    save_checkpoint(folder / "model.pt", model, cfg, export_id=data["export_id"])
    assert main(["check-export", str(folder), "--probes", "basic"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "box differs" in out
