"""The bootstrap's re-accumulation is pycocotools' AP exactly at weight 1, and a paired interval of a model with
itself is zero while a damaged copy's is not."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.cocoeval import COCOeval

from detdemo.engine.bootstrap import match_tables, paired_delta_interval, weighted_ap


def _evals(shapes_dir):
    from detdemo.data import eval_transforms, open_dataset
    from detdemo.engine.evaluate import dataset_to_coco, predict_dataset
    from export.runtime import load_predictor
    from tests.test_parity_mutations import BUNDLED

    ds = open_dataset(shapes_dir, "val", None, eval_transforms())
    gt = dataset_to_coco(ds, with_masks=False)
    results = predict_dataset(load_predictor(BUNDLED / "model.pt", "pytorch", "cpu"), ds, progress=False)
    damaged = [dict(r, score=r["score"] * (0.2 if i % 2 else 1.0)) for i, r in enumerate(results)]
    out = []
    for res in (results, damaged):
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes([{k: v for k, v in r.items() if k != "segmentation"} for r in res]), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out.append(ev)
    return out


def test_weighted_ap_equals_pycocotools_and_paired_intervals(shapes_dir):
    ev, damaged = _evals(shapes_dir)
    tables, damaged_tables = match_tables(ev), match_tables(damaged)
    ones = np.ones((1, len(tables.image_ids)))
    assert abs(weighted_ap(tables, ones)[0] - ev.stats[0]) < 1e-12
    assert abs(weighted_ap(damaged_tables, ones)[0] - damaged.stats[0]) < 1e-12
    same = paired_delta_interval(tables, tables, n_resamples=200)
    assert same.delta == same.low == same.high == 0.0
    moved = paired_delta_interval(tables, damaged_tables, n_resamples=200)
    assert moved.delta != 0 and abs(moved.delta - (damaged.stats[0] - ev.stats[0])) < 1e-12
    assert moved.low <= moved.delta <= moved.high and moved.high > moved.low


def test_a_file_without_detections_and_a_shared_reference(shapes_dir):
    """pycocotools cannot load an empty result list: its tables come from the ground truth alone, counted as
    pycocotools counts it, and its AP is 0; eager's resamples, computed once, serve every file alike."""
    from detdemo.engine.bootstrap import PairedBootstrap, tables_without_detections

    ev, damaged = _evals(shapes_dir)
    tables = match_tables(ev)
    empty = tables_without_detections(ev.cocoGt)
    assert empty.image_ids == tables.image_ids and np.array_equal(empty.rec_thrs, tables.rec_thrs)
    for a, b in zip(empty.categories, tables.categories):
        assert np.array_equal(a.gt_per_image, b.gt_per_image) and a.tps.shape == (10, 0)
    assert weighted_ap(empty, np.ones((1, len(tables.image_ids))))[0] == 0.0
    boot = PairedBootstrap(tables, n_resamples=200)
    nothing = boot.interval(empty)
    assert abs(nothing.delta + ev.stats[0]) < 1e-12 and nothing.high < 0
    assert boot.interval(match_tables(damaged)) == paired_delta_interval(tables, match_tables(damaged), 200)


def test_a_resample_is_pycocotools_on_the_images_literally_repeated():
    """The claim the interval rests on: an image drawn k times weighs as k copies of it would in pycocotools. Real
    COCO ground truth (crowd objects, non-contiguous ids, categories absent from the split), bbox and segm, with
    synthetic detections (jittered ground truth and false alarms): weighted AP equals pycocotools run on a ground
    truth where each image is repeated as often as a resample draws it."""
    import json

    from pycocotools.coco import COCO

    from tests.conftest import shared

    src = json.loads(shared("coco128", "annotations", "instances_val2017.json").read_text())
    rng = np.random.default_rng(1)
    dets = []
    for a in src["annotations"]:
        if rng.random() < 0.75:
            x, y, w, h = a["bbox"]
            dx, dy, dw, dh = rng.normal(0, 0.08, 4) * [w, h, w, h]
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                         "bbox": [x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh)],
                         "segmentation": a["segmentation"]})
    cats = [c["id"] for c in src["categories"]]
    for im in src["images"]:
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(10, 200, 2)
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)), "score": float(rng.random()),
                         "bbox": [10, 10, w, h], "segmentation": [[10, 10, 10 + w, 10, 10 + w, 10 + h, 10, 10 + h]]})

    def evaluated(dataset: dict, results: list[dict], iou_type: str) -> COCOeval:
        gt = COCO()
        gt.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev

    ids = sorted(im["id"] for im in src["images"])
    draw = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)))
    repeated: dict = {"images": [], "annotations": [], "categories": src["categories"]}
    repeated_dets = []
    for image_id, times in zip(ids, draw):
        for _ in range(times):
            copy_id = len(repeated["images"]) + 10**7
            repeated["images"].append({**next(im for im in src["images"] if im["id"] == image_id), "id": copy_id})
            repeated["annotations"] += [{**a, "id": len(repeated["annotations"]) + i + 1, "image_id": copy_id}
                                        for i, a in enumerate(a for a in src["annotations"]
                                                              if a["image_id"] == image_id)]
            repeated_dets += [{**r, "image_id": copy_id} for r in dets if r["image_id"] == image_id]
    for iou_type in ("bbox", "segm"):
        ev = evaluated(src, dets, iou_type)
        tables = match_tables(ev)
        assert abs(weighted_ap(tables, np.ones((1, len(ids))))[0] - ev.stats[0]) < 1e-12
        literal = evaluated(repeated, repeated_dets, iou_type).stats[0]
        assert abs(weighted_ap(tables, draw[None].astype(float))[0] - literal) < 1e-12, iou_type
