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
