"""Evaluation pictures: the numbers drawn are read back from ``pictures.json`` and checked against a direct count
(confusion matrix) and against pycocotools run on the dataset's own annotation file (precision-recall curves).

The dataset is made by hand and the detections come from a predictor whose every output the test decides, each
labelled with the outcome it was built to have: so the expected matrix is counted from those labels, not from
the code under test."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detdemo.engine.eval_pictures import (
    CONFUSION_PNG,
    CORRECT,
    FALSE_ALARM,
    GALLERY_DIR,
    IGNORED,
    MISSED,
    MODEL_EVALUATION,
    PER_CLASS_AP_PNG,
    PICTURES_JSON,
    PR_CURVES_PNG,
    WRONG_CLASS,
    match_image,
    pictures_dir,
)
from detdemo.inference.detections import Detections
from tests.conftest import REPO

CLASSES = ["ant", "bee"]
A, B = 0, 1  # class indices in the matrix; background is len(CLASSES)
BG = len(CLASSES)
# Per image (told apart by width): ground truth (class, box) and detections (class, box, score, outcome, which GT)
IMAGES = {
    64: {"gt": [(A, [0, 0, 20, 20]), (B, [30, 30, 50, 50])],
         "det": [(A, [0, 0, 20, 20], 0.9, CORRECT, 0), (B, [31, 31, 50, 50], 0.8, CORRECT, 1),
                 (A, [40, 0, 60, 10], 0.7, FALSE_ALARM, None), (A, [0, 40, 10, 60], 0.3, "below", None)]},
    65: {"gt": [(A, [5, 5, 25, 25]), (B, [40, 40, 60, 60])],  # the bee is missed
         "det": [(B, [5, 5, 25, 25], 0.95, WRONG_CLASS, 0)]},
    66: {"gt": [], "det": [(B, [10, 10, 30, 30], 0.6, FALSE_ALARM, None)]},
    # A higher-scored bee on the ant does not steal it from the ant detection: same class is matched first.
    67: {"gt": [(A, [0, 0, 20, 20])],
         "det": [(B, [0, 0, 20, 20], 0.9, FALSE_ALARM, None), (A, [1, 1, 20, 20], 0.8, CORRECT, 0)]},
    68: {"gt": [(B, [10, 10, 40, 40])], "det": [(B, [10, 10, 40, 41], 0.99, CORRECT, 0)]},  # nothing wrong
}
MISSES = {65: [1]}


def expected_matrix() -> np.ndarray:
    """Counted from the outcome each detection was built to have."""
    m = np.zeros((BG + 1, BG + 1), dtype=int)
    for width, spec in IMAGES.items():
        for cls, _, _, outcome, gt in spec["det"]:
            if outcome in (CORRECT, WRONG_CLASS):
                m[spec["gt"][gt][0], cls] += 1
            elif outcome == FALSE_ALARM:
                m[BG, cls] += 1
        for g in MISSES.get(width, []):
            m[spec["gt"][g][0], BG] += 1
    return m


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    (root / "val").mkdir()
    (root / "annotations").mkdir()
    images, anns = [], []
    for i, (width, spec) in enumerate(IMAGES.items(), start=1):
        name = f"img_{width}.png"
        Image.fromarray(np.full((64, width, 3), 40 * i, np.uint8)).save(root / "val" / name)
        images.append({"id": i, "file_name": name, "width": width, "height": 64})
        for cls, (x0, y0, x1, y1) in spec["gt"]:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cls + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    return root


class ScriptedPredictor:
    """Returns the detections the table above gives for the image of that width."""

    backend, device, notes = "pytorch", "cpu", []

    def __init__(self) -> None:
        self.path = Path("scripted")
        self.class_names = list(CLASSES)

    def predict(self, image, *, score_threshold=None, timings=None) -> Detections:
        width = int(image.shape[-1])
        dets = IMAGES[width]["det"]
        return Detections(np.array([d[1] for d in dets], np.float32).reshape(-1, 4),
                          np.array([d[0] + 1 for d in dets], np.int64), np.array([d[2] for d in dets], np.float32),
                          CLASSES, image_size=(64, width))


@pytest.fixture(scope="module")
def written(dataset_dir, tmp_path_factory):
    """`detdemo eval` with the scripted predictor in place of a model file."""
    import detdemo.commands.common as common
    from detdemo.cli import main

    out = tmp_path_factory.mktemp("eval") / "eval_val.json"
    original = common.load_from_args
    common.load_from_args = lambda args: ScriptedPredictor()
    try:
        assert main(["eval", "--model", "scripted", "--data", str(dataset_dir), "--out", str(out)]) == 0
    finally:
        common.load_from_args = original
    return out


def test_eval_writes_the_pictures_beside_its_json(written):
    folder = pictures_dir(written)
    assert folder == written.parent / "eval_val"
    assert json.loads(written.read_text())["pictures"] == "eval_val"
    numbers = json.loads((folder / PICTURES_JSON).read_text())
    for name in (PR_CURVES_PNG, CONFUSION_PNG, PER_CLASS_AP_PNG, *(g["file"] for g in numbers["gallery"])):
        path = folder / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as im:
            im.verify()
    assert {p.name for p in (folder / GALLERY_DIR).iterdir()} == {Path(g["file"]).name for g in numbers["gallery"]}


def test_confusion_matrix_equals_a_direct_count(written):
    numbers = json.loads((pictures_dir(written) / PICTURES_JSON).read_text())
    assert numbers["matrix_labels"] == [*CLASSES, "background"]
    assert numbers["score_threshold"] == 0.5 and numbers["iou_threshold"] == 0.5
    assert np.array_equal(np.array(numbers["confusion"]), expected_matrix())
    assert np.array(numbers["confusion"]).sum() == 9  # 4 right, 1 wrong class, 3 false alarms, 1 miss
    per_image = {im["file"].rsplit("_", 1)[-1]: im for im in numbers["images"]}
    assert per_image["65.png"]["missed"] == 1 and per_image["65.png"]["wrong_class"] == 1
    assert per_image["64.png"]["false_alarms"] == 1 and per_image["64.png"]["detections"] == 3  # 0.3 is below
    # the gallery: images with mistakes only, most mistakes first
    shown = [g["image"] for g in numbers["gallery"]]
    assert "img_68.png" not in shown and shown[0] == "img_65.png" and len(shown) == 4


def test_a_lower_threshold_moves_the_low_score_detection_into_the_matrix(dataset_dir, tmp_path, monkeypatch):
    import detdemo.commands.common as common
    from detdemo.cli import main

    monkeypatch.setattr(common, "load_from_args", lambda args: ScriptedPredictor())
    out = tmp_path / "e.json"
    assert main(["eval", "--model", "x", "--data", str(dataset_dir), "--out", str(out), "--score-threshold",
                 "0.2"]) == 0
    matrix = np.array(json.loads((tmp_path / "e" / PICTURES_JSON).read_text())["confusion"])
    expected = expected_matrix()
    expected[BG, A] += 1  # the 0.3 ant over nothing is a false alarm now
    assert np.array_equal(matrix, expected)
    assert main(["eval", "--model", "x", "--data", str(dataset_dir), "--out", str(tmp_path / "n.json"),
                 "--no-pictures"]) == 0
    assert not (tmp_path / "n").exists() and "pictures" not in json.loads((tmp_path / "n.json").read_text())


def test_a_model_that_finds_nothing_still_gets_its_pictures(dataset_dir, tmp_path, monkeypatch):
    """No detections at all: pycocotools is not run (it cannot load an empty result list); every object is missed."""
    import detdemo.commands.common as common
    from detdemo.cli import main

    blind = ScriptedPredictor()
    blind.predict = lambda image, **kw: Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                                   np.zeros(0, np.float32), CLASSES)
    monkeypatch.setattr(common, "load_from_args", lambda args: blind)
    assert main(["eval", "--model", "x", "--data", str(dataset_dir), "--out", str(tmp_path / "e.json")]) == 0
    numbers = json.loads((tmp_path / "e" / PICTURES_JSON).read_text())
    objects = [sum(c == k for spec in IMAGES.values() for c, _ in spec["gt"]) for k in (A, B)]
    assert [row[BG] for row in numbers["confusion"][:BG]] == objects  # every object missed, nothing else
    assert np.array(numbers["confusion"]).sum() == sum(objects)
    assert len(numbers["gallery"]) == 4  # every image with an object; not the empty one
    assert all((tmp_path / "e" / name).is_file() for name in (PR_CURVES_PNG, CONFUSION_PNG, PER_CLASS_AP_PNG))


def test_precision_curves_are_cocoevals_own_array(written, dataset_dir):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    numbers = json.loads((pictures_dir(written) / PICTURES_JSON).read_text())
    results = []
    for i, spec in enumerate(IMAGES.values(), start=1):
        for cls, (x0, y0, x1, y1), score, _, _ in spec["det"]:
            results.append({"image_id": i, "category_id": cls + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset_dir / "annotations" / "instances_val.json"))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]; all areas = 0, maxDets 100 = -1
    curves = numbers["curves"]["bbox"]
    assert curves["recall"] == pytest.approx(ev.params.recThrs.tolist())
    for k, name in enumerate(CLASSES):
        assert curves["iou_0.50"][name] == pytest.approx(precision[0, :, k, 0, -1].tolist(), abs=1e-12)
        assert curves["iou_0.50:0.95"][name] == pytest.approx(precision[:, :, k, 0, -1].mean(axis=0).tolist())
        assert numbers["per_class_ap"]["bbox"][name]["AP50"] == pytest.approx(precision[0, :, k, 0, -1].mean())
    # the curves mean something: two of the three ants are found (the third was called a bee) before any false alarm
    ant = np.array(curves["iou_0.50"]["ant"])
    recall = np.array(curves["recall"])
    assert (ant[recall <= 2 / 3] == 1.0).all() and (ant[recall > 2 / 3 + 0.01] == 0.0).all()


def test_matching_rules_crowd_and_iou():
    """A detection inside a crowd region is ignored; under IoU 0.5 it is no match."""
    outcome = match_image(1, np.array([[0, 0, 10, 10]], float), np.array([0]),
                          np.array([[0, 0, 10, 10.1], [50, 50, 60, 60], [0, 0, 30, 30]], float),
                          np.array([0, 0, 0]), np.array([0.9, 0.8, 0.7]), 0.5,
                          crowd_boxes=np.array([[45, 45, 100, 100]], float))
    assert outcome.det_status == [CORRECT, IGNORED, FALSE_ALARM]  # [0,0,30,30] has IoU 0.11 with the object
    assert outcome.gt_status == ["found"] and outcome.count(MISSED) == 0


def test_training_writes_best_pt_pictures_from_its_own_evaluation(shapes_dir, tmp_path, monkeypatch):
    """The trainer draws best.pt's pictures from the evaluation it already made: the model runs once per epoch."""
    import detdemo.engine.trainer as trainer
    from tests.test_train import small_cfg

    runs = []
    real = trainer.evaluate_model
    monkeypatch.setattr(trainer, "evaluate_model", lambda *a, **k: runs.append(1) or real(*a, **k))
    out = trainer.fit(small_cfg(shapes_dir, tmp_path / "run", max_iters_per_epoch=1), progress=False)
    assert len(runs) == 1
    report = json.loads((out / MODEL_EVALUATION).read_text())
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert report["stats"]["bbox"]["AP"] == metrics["bbox_AP"] and report["model"] == "best.pt"
    numbers = json.loads((out / "evaluation" / PICTURES_JSON).read_text())
    assert numbers["class_names"] == ["circle", "square", "triangle"]
    assert sum(im["objects"] for im in numbers["images"]) == sum(numbers["confusion"][k][j] for k in range(3)
                                                                  for j in range(4))
    assert (out / "evaluation" / CONFUSION_PNG).is_file()


def test_the_model_tab_shows_a_bundled_models_pictures_and_reports():
    from detdemo.app.catalogue import entry_from_path
    from detdemo.app.model_tab import model_page

    page = model_page(entry_from_path(REPO / "models" / "bccd"))
    names = [Path(path).name for path, _ in page.pictures]
    assert names[:3] == [PR_CURVES_PNG, CONFUSION_PNG, PER_CLASS_AP_PNG] and len(names) > 3
    assert all(Path(path).is_file() for path, _ in page.pictures)
    assert "Platelets" in page.figures and "parity" in page.reports.lower() and "accuracy" in page.reports.lower()
    numbers = json.loads((REPO / "models" / "bccd" / "evaluation" / PICTURES_JSON).read_text())
    assert any(g["caption"] == caption for g in numbers["gallery"] for _, caption in page.pictures)


def test_the_model_tab_says_plainly_when_a_model_has_no_pictures(tmp_path):
    from detdemo.app.catalogue import ModelEntry
    from detdemo.app.model_tab import model_page

    page = model_page(ModelEntry("bare", folder=tmp_path))
    assert page.pictures == [] and "no evaluation pictures" in page.figures.lower()
    assert model_page(ModelEntry("coco")).pictures == []


# -- a mask model's gallery ------------------------------------------------------------------------------------------
# Two images (told apart by width), 64 px high. A triangle (an ant) the model misses, whose mask is half its box;
# a square bee found with its mask, and a round false alarm with a mask. Polygons in the annotation file, masks
# from the predictor: the gallery must draw both kinds, in their own styles.
TRIANGLE = [0, 0, 0, 40, 40, 40]  # lower-left half of the box (0, 0)-(40, 40): the diagonal y = x is its edge
SQUARE = [10, 10, 50, 10, 50, 50, 10, 50]
MASK_IMAGES = {80: {"gt": [(A, TRIANGLE)], "det": []},
               81: {"gt": [(B, SQUARE)],
                    "det": [(B, [10, 10, 50, 50], 0.9, "square"), (A, [55, 5, 75, 25], 0.8, "disk")]}}


def _polygon_box(poly: list[float]) -> list[float]:
    xs, ys = poly[0::2], poly[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def _det_mask(kind: str, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:64, :width]
    if kind == "square":
        return (xx >= 10) & (xx < 50) & (yy >= 10) & (yy < 50)
    return (xx - 65) ** 2 + (yy - 15) ** 2 <= 81


@pytest.fixture(scope="module")
def mask_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_masks")
    (root / "val").mkdir()
    (root / "annotations").mkdir()
    images, anns = [], []
    for i, (width, spec) in enumerate(MASK_IMAGES.items(), start=1):
        name = f"img_{width}.png"
        Image.fromarray(np.full((64, width, 3), 90, np.uint8)).save(root / "val" / name)
        images.append({"id": i, "file_name": name, "width": width, "height": 64})
        for cls, poly in spec["gt"]:
            x0, y0, x1, y1 = _polygon_box(poly)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cls + 1, "segmentation": [poly],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0) / 2, "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    return root


class MaskPredictor(ScriptedPredictor):
    def predict(self, image, *, score_threshold=None, timings=None) -> Detections:
        width = int(image.shape[-1])
        dets = MASK_IMAGES[width]["det"]
        return Detections(np.array([d[1] for d in dets], np.float32).reshape(-1, 4),
                          np.array([d[0] + 1 for d in dets], np.int64), np.array([d[2] for d in dets], np.float32),
                          CLASSES, masks=np.array([_det_mask(d[3], width) for d in dets], bool).reshape(-1, 64, width),
                          image_size=(64, width))


def test_a_mask_models_gallery_draws_ground_truth_and_detected_masks(mask_dataset, tmp_path, monkeypatch):
    import dataclasses

    import detdemo.commands.common as common
    from detdemo.cli import main
    from detdemo.data.images import open_image
    from detdemo.engine.eval_pictures import GALLERY_WIDTH_PX, draw_outcome, match_image

    monkeypatch.setattr(common, "load_from_args", lambda args: MaskPredictor())
    assert main(["eval", "--model", "x", "--data", str(mask_dataset), "--out", str(tmp_path / "e.json")]) == 0
    numbers = json.loads((tmp_path / "e" / PICTURES_JSON).read_text())
    assert numbers["gallery_masks"] is True and "segm" in numbers["curves"]
    drawn = {g["image"]: g["masks"] for g in numbers["gallery"]}
    assert drawn == {"img_80.png": {"ground_truth": 1, "detections": 0},
                     "img_81.png": {"ground_truth": 1, "detections": 2}}

    def picture(width: int, masks: bool) -> np.ndarray:
        """The gallery picture of one image, drawn with its masks or, for comparison, with its boxes only."""
        from pycocotools import mask as mask_utils

        spec = MASK_IMAGES[width]
        gt_masks = [mask_utils.merge(mask_utils.frPyObjects([poly], 64, width)) for _, poly in spec["gt"]]
        det_masks = [mask_utils.encode(np.asfortranarray(_det_mask(d[3], width).astype(np.uint8)))
                     for d in spec["det"]]
        outcome = match_image(1, np.array([_polygon_box(p) for _, p in spec["gt"]], float).reshape(-1, 4),
                              np.array([c for c, _ in spec["gt"]]),
                              np.array([d[1] for d in spec["det"]], float).reshape(-1, 4),
                              np.array([d[0] for d in spec["det"]]), np.array([d[2] for d in spec["det"]]), 0.5,
                              gt_masks=gt_masks, det_masks=det_masks)
        if not masks:
            outcome = dataclasses.replace(outcome, gt_masks=None, det_masks=None)
        path = draw_outcome(open_image(mask_dataset / "val" / f"img_{width}.png"), outcome, CLASSES,
                            tmp_path / f"{width}_{masks}.png", "caption")
        return np.asarray(Image.open(path).convert("RGB")).astype(int)

    def differs(a: np.ndarray, b: np.ndarray, points) -> int:
        return sum(int(np.abs(a[y, x] - b[y, x]).sum() > 30) for x, y in points)

    for width in MASK_IMAGES:
        scale = GALLERY_WIDTH_PX / width
        with_masks, boxes_only = picture(width, True), picture(width, False)
        assert with_masks.shape[1] == boxes_only.shape[1] == GALLERY_WIDTH_PX
        if width == 80:  # the missed triangle: its outline runs along the box's diagonal, inside the box
            diagonal = [(round(t * scale), round(t * scale)) for t in np.linspace(12, 28, 40)]
            beside = [(round((t + 8) * scale), round(t * scale)) for t in np.linspace(12, 28, 40)]  # off the edge
            assert differs(with_masks, boxes_only, diagonal) >= 10  # dotted: most, not all, of the line
            assert differs(with_masks, boxes_only, beside) == 0  # an outline, not a fill
        else:  # the found square and the false alarm's disk: filled inside, away from the boxes and labels
            inside = [(round(x * scale), round(y * scale)) for x, y in ((30, 35), (40, 40), (25, 45), (65, 17))]
            assert differs(with_masks, boxes_only, inside) == len(inside)
            background = [(round(x * scale), round(y * scale)) for x, y in ((5, 58), (70, 55))]
            assert differs(with_masks, boxes_only, background) == 0
