"""YOLO-format datasets (Ultralytics data.yaml + labels/*.txt) and ``detdemo data convert`` between layouts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detdemo.cli import main
from detdemo.data import detect_layout, open_dataset
from detdemo.data.coco import segmentation_to_rle
from detdemo.data.convert import convert_dataset, join_polygons, mask_polygons
from detdemo.data.yolo import YoloDataset, polygon_mask
from detdemo.errors import DataError
from tests.conftest import shared

W, H = 64, 48


def write_yolo(root: Path, labels: dict[str, str], yaml_text: str | None = None, split: str = "train") -> Path:
    """A YOLO dataset: one 64x48 image per entry of ``labels`` (None: no label file), names a, b."""
    for stem, text in labels.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (90, 120, 150)).save(root / "images" / split / f"{stem}.png")
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(yaml_text or "train: images/train\nnames:\n  0: a\n  1: b\n")
    return root


def test_yolo_boxes_are_detected_and_read_as_pixel_boxes(tmp_path):
    root = write_yolo(tmp_path / "ds", {"one": "1 0.5 0.5 0.25 0.5\n\n0 0.25 0.25 0.1 0.1\n", "neg": None,
                                        "empty": ""})
    (root / "images" / "val").mkdir()
    Image.new("RGB", (W, H)).save(root / "images" / "val" / "v.png")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    assert detect_layout(root) == ("yolo", root)
    assert detect_layout(root / "data.yaml") == ("yolo", root / "data.yaml")
    assert detect_layout(tmp_path) == ("yolo", root)  # a wrapper folder one level up

    ds = open_dataset(root, "train")
    assert isinstance(ds, YoloDataset) and ds.layout == "yolo" and not ds.has_masks
    assert ds.class_names == ["a", "b"] and len(ds) == 3 and ds.num_objects() == 2
    by_name = {r.path.stem: i for i, r in enumerate(ds.records)}
    image, target = ds[by_name["one"]]
    assert image.shape == (3, H, W)
    expected = torch.tensor([[24.0, 12.0, 40.0, 36.0], [12.8, 9.6, 19.2, 14.4]])  # cx 32 cy 24 w 16 h 24; ...
    assert torch.allclose(target["boxes"], expected, atol=1e-4)
    assert target["labels"].tolist() == [2, 1]  # YOLO class 1 -> label 2 (0 is background)
    for negative in ("neg", "empty"):  # no label file, or an empty one: a background image, not an error
        assert len(ds.load_target(by_name[negative], H, W)["boxes"]) == 0
    assert len(open_dataset(root, "val")) == 1 and len(open_dataset(root, "all")) == 4


def test_roboflow_paths_and_image_lists(tmp_path):
    """Roboflow writes ``train: ../train/images`` beside the YAML; Ultralytics' lists hold ``./images/...`` lines."""
    for split in ("train", "valid"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir()
        Image.new("RGB", (W, H)).save(tmp_path / split / "images" / f"{split}.jpg")
        (tmp_path / split / "labels" / f"{split}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "valid.txt").write_text("./valid/images/valid.jpg\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: valid.txt\nnc: 1\nnames: ['cell']\n")
    train, val = open_dataset(tmp_path, "train"), open_dataset(tmp_path, "val")
    assert [r.path.name for r in train.records] == ["train.jpg"] and [r.path.name for r in val.records] == ["valid.jpg"]
    assert val.load_target(0, H, W)["boxes"].tolist() == [[16.0, 12.0, 48.0, 36.0]]
    (tmp_path / "valid.txt").write_text("./valid/images/valid.jpg\n./valid/images/gone.jpg\n")
    with pytest.raises(DataError, match=r"valid.txt: 1 problem\(s\): line 2: image '\./valid/images/gone.jpg' not"):
        open_dataset(tmp_path, "val")


def test_yolo_without_val_gets_the_seeded_holdout(tmp_path):
    root = write_yolo(tmp_path, {f"i{k}": "0 0.5 0.5 0.2 0.2\n" for k in range(5)})
    train, val = open_dataset(root, "train"), open_dataset(root, "val")
    assert (len(train), len(val)) == (4, 1)
    assert not {r.path for r in train.records} & {r.path for r in val.records}


def test_yolo_polygons_become_masks(tmp_path):
    root = write_yolo(tmp_path, {"p": "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n"})
    ds = open_dataset(root)
    assert ds.has_masks
    target = ds.load_target(0, H, W)
    assert target["boxes"].tolist() == [[16.0, 12.0, 48.0, 36.0]]  # the polygon's extent
    mask = target["masks"][0].numpy().astype(bool)
    assert mask.shape == (H, W)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (16, 48, 12, 36)
    assert mask.sum() == 32 * 24


def test_mixed_box_and_polygon_lines_load_boxes_only(tmp_path):
    root = write_yolo(tmp_path, {"p": "0 0.25 0.25 0.75 0.25 0.75 0.75\n1 0.5 0.5 0.2 0.2\n"})
    with pytest.warns(UserWarning, match="mixes box and polygon"):
        ds = open_dataset(root)
    assert not ds.has_masks and "masks" not in ds.load_target(0, H, W)
    assert ds.load_target(0, H, W)["boxes"][0].tolist() == pytest.approx([16.0, 12.0, 48.0, 36.0])


def test_zero_size_boxes_are_dropped_and_overhangs_clipped_with_one_warning_each(tmp_path):
    root = write_yolo(tmp_path, {"z": "0 0.5 0.5 0 0.2\n0 0.9 0.5 0.4 0.2\n"})
    with pytest.warns(UserWarning) as caught:
        ds = open_dataset(root)
    messages = " | ".join(str(w.message) for w in caught)
    assert "dropped 1 degenerate" in messages and "clipped 1 box(es) that overhang" in messages
    assert ds.load_target(0, H, W)["boxes"].tolist() == [pytest.approx([44.8, 19.2, 64.0, 28.8])]


def test_data_info_shows_the_yolo_layout(tmp_path, capsys):
    root = write_yolo(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n1 0.6 0.6 0.1 0.1\n", "y": None})
    assert main(["data", "info", "--data", str(root), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert f"layout: yolo (root {root})" in out
    assert "2 images, 3 objects, masks: no" in out and "a: 1" in out and "b: 2" in out


BAD_LINES = [
    ("0 0.5 0.5 0.2", "4 fields; expected 5"),
    ("0 0.5 0.5 0.2 0.2 0.3 0.3 0.4", "8 fields; expected 5"),  # an odd count of polygon coordinates
    ("0 0.5 0.5 0.2 abc", "not a number"),
    ("0 0.5 0.5 1.2 0.2", "normalised to [0, 1]"),
    ("0 0.1 0.1 0.9 -0.5 0.5 0.5", "normalised to [0, 1]"),
    ("2 0.5 0.5 0.2 0.2", "class index 2 is outside 'names'"),
    ("-1 0.5 0.5 0.2 0.2", "class index -1 is outside 'names'"),
    ("0.5 0.5 0.5 0.2 0.2", "not a whole number"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_label_lines_name_the_file_and_line(tmp_path, line, message):
    root = write_yolo(tmp_path, {"good": "0 0.5 0.5 0.2 0.2\n", "bad": f"0 0.5 0.5 0.2 0.2\n{line}\n"})
    with pytest.raises(DataError, match="problem") as err:
        open_dataset(root)
    text = str(err.value)
    assert f"{root / 'labels' / 'train' / 'bad.txt'}:2:" in text and message in text
    assert "good.txt" not in text


def test_every_bad_line_is_reported_at_once(tmp_path):
    root = write_yolo(tmp_path, {"a": "0 0.5 0.5 0.2\n", "b": "7 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n0 2 2 2 2\n"})
    with pytest.raises(DataError, match="3 problem") as err:
        open_dataset(root)
    assert "a.txt:1:" in str(err.value) and "b.txt:1:" in str(err.value) and "b.txt:3:" in str(err.value)


def test_a_label_file_with_no_image_is_an_error(tmp_path):
    root = write_yolo(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"})
    (root / "labels" / "train" / "renamed.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "classes.txt").write_text("a\nb\n")  # LabelImg's class list: not a label file
    with pytest.raises(DataError, match="renamed.txt: label file with no image") as err:
        open_dataset(root)
    assert "classes.txt" not in str(err.value)


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("train: images/train\nnames: [a, b\n", "malformed YAML"),
    ("train: images/train\n", "no 'names'"),
    ("train: images/nowhere\nnames: [a]\n", "'train' path 'images/nowhere' does not exist"),
    ("train: images/train\nnames: {0: a, 2: b}\n", "without gaps"),
    ("train: images/train\nnc: 3\nnames: [a, b]\n", "'nc' is 3"),
])
def test_bad_data_yaml_is_a_data_error_naming_it(tmp_path, yaml_text, message):
    root = write_yolo(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"}, yaml_text=yaml_text)
    with pytest.raises(DataError, match=message) as err:
        open_dataset(root)
    assert str(root / "data.yaml") in str(err.value)


def test_detection_is_not_greedy_about_yaml(tmp_path, shapes_dir):
    (tmp_path / "annotations").mkdir()
    src = shapes_dir / "annotations" / "instances_train.json"
    (tmp_path / "annotations" / "instances_train.json").write_text(src.read_text())
    (tmp_path / "config.yaml").write_text("epochs: 3\nlr: 0.01\n")  # a YAML without names: not a dataset
    assert detect_layout(tmp_path)[0] == "coco"
    other = tmp_path / "other"
    write_yolo(other, {"x": "0 0.5 0.5 0.2 0.2\n"})
    (other / "data.yaml").rename(other / "blood.yaml")  # another name, but it reads like a dataset YAML
    assert detect_layout(other) == ("yolo", other)
    assert len(open_dataset(other)) == 1


def test_mask_polygons_keep_holes_and_separate_parts():
    from pycocotools import mask as mask_utils

    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 10:50] = 1
    mask[20:40, 22:40] = 0  # a hole: the object seen around an occluder
    mask[5:15, 60:75] = 1  # a second part
    polygons = mask_polygons(mask)
    assert len(polygons) == 2  # one per part, the hole bridged into its part
    xs = np.concatenate([p[:, 0] for p in polygons])
    assert (xs.min(), xs.max()) == (10, 75)  # pixel-edge extent: the box survives simplification
    coco = mask_utils.decode(segmentation_to_rle([p.ravel().tolist() for p in polygons], 60, 80))
    yolo = polygon_mask([join_polygons(polygons) / np.array([80, 60])], 60, 80)[0]  # one line, as YOLO writes it
    for rasterised in (coco, yolo):
        assert rasterised[20:40, 22:40].sum() == 0
        assert mask_iou(torch.from_numpy(rasterised), torch.from_numpy(mask)) > 0.99


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return (a & b).sum().item() / (a | b).sum().item()


def test_coco_to_yolo_to_coco_keeps_boxes_and_masks(shapes_dir, tmp_path, capsys):
    assert main(["data", "convert", "--data", str(shapes_dir), "--to", "yolo", "--out", str(tmp_path / "y")]) == 0
    assert "wrote yolo dataset" in capsys.readouterr().out
    assert detect_layout(tmp_path / "y")[0] == "yolo"
    summary = convert_dataset(tmp_path / "y", "coco", tmp_path / "c")
    assert [s.name for s in summary.splits] == ["train", "val"]
    coco = json.loads((tmp_path / "c" / "annotations" / "instances_val.json").read_text())
    assert all(isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6 for a in coco["annotations"])

    ious = []
    for split in ("train", "val"):
        src, yolo, back = (open_dataset(p, split) for p in (shapes_dir, tmp_path / "y", tmp_path / "c"))
        assert yolo.has_masks and back.has_masks and back.layout == "coco"
        assert len(src) == len(yolo) == len(back) and src.class_names == back.class_names
        for i in range(len(src)):
            hw = src.get_height_and_width(i)
            assert yolo.get_height_and_width(i) == back.get_height_and_width(i) == hw
            t0, t1, t2 = (d.load_target(i, *hw) for d in (src, yolo, back))
            assert t0["labels"].tolist() == t1["labels"].tolist() == t2["labels"].tolist()
            assert (t1["boxes"] - t0["boxes"]).abs().max() <= 1.0  # within a pixel after 6-decimal normalising
            assert (t2["boxes"] - t0["boxes"]).abs().max() <= 1.0
            ious += [mask_iou(a, b) for a, b in zip(t0["masks"], t2["masks"])]
    # Measured: IoU 1.0 for every object (here and on 212 objects of 400-px shapes): the polygons are simplified by
    # less than any pixel centre's distance from the contour, so rasterising them gives the same pixels back.
    assert min(ious) > 0.99 and np.mean(ious) > 0.999, (min(ious), np.mean(ious))


def test_convert_refuses_a_non_empty_out_and_leaves_no_temporary(shapes_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "convert", "--data", str(shapes_dir), "--to", "coco", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    convert_dataset(shapes_dir, "coco", empty, splits=["val"])  # an empty folder is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]
    assert len(open_dataset(empty, "val")) == 4


def test_crowd_objects_are_skipped_in_yolo_with_a_count(tmp_path):
    images = tmp_path / "src" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (W, H)).save(images / "x.png")
    coco = {"images": [{"id": 1, "file_name": "x.png", "width": W, "height": H}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "iscrowd": 1}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "src" / "train.json").write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match="skipped 1 crowd"):
        summary = convert_dataset(tmp_path / "src" / "train.json", "yolo", tmp_path / "y", splits=["train"])
    assert summary.splits[0].objects == 1 and summary.splits[0].crowd_skipped == 1
    (tmp_path / "y").rename(tmp_path / "moved")  # data.yaml's absolute 'path' is gone: its own folder is the root
    back = open_dataset(tmp_path / "moved", "all")
    assert back.num_objects() == 1 and back.records[0].path.parent == tmp_path / "moved" / "images" / "train"


def test_images_sharing_a_stem_keep_their_own_label_files(tmp_path):
    root = write_yolo(tmp_path / "src", {"x": "0 0.5 0.5 0.2 0.2\n"},
                      yaml_text="train: images/train\nval: images/train\nnames: [a, b]\n")  # coco8-style
    Image.new("RGB", (W, H)).save(root / "images" / "train" / "x.jpg")  # reads labels/x.txt too, as in Ultralytics
    (root / "images" / "train" / "sub").mkdir()
    Image.new("RGB", (W, H)).save(root / "images" / "train" / "sub" / "x.png")
    (root / "labels" / "train" / "sub").mkdir()
    (root / "labels" / "train" / "sub" / "x.txt").write_text("1 0.5 0.5 0.4 0.4\n1 0.2 0.2 0.1 0.1\n")
    src = open_dataset(root, "train")
    convert_dataset(root, "yolo", tmp_path / "out")
    out = open_dataset(tmp_path / "out", "train")
    counts = lambda ds: sorted(len(ds.load_target(i, H, W)["labels"]) for i in range(len(ds)))  # noqa: E731
    assert len(out) == len(src) == 3 and counts(out) == counts(src) == [1, 1, 2]
    assert len(list((tmp_path / "out" / "labels" / "train").glob("*.txt"))) == 3  # one each, none overwritten


@pytest.mark.slow
def test_real_voc_dataset_converts_to_yolo_with_the_same_objects(tmp_path):
    bccd = shared("BCCD")
    convert_dataset(bccd, "yolo", tmp_path / "bccd")
    for split in ("train", "val"):
        voc, yolo = open_dataset(bccd, split), open_dataset(tmp_path / "bccd", split)
        assert voc.layout == "voc" and yolo.layout == "yolo" and len(voc) == len(yolo)
        counts = []
        for ds in (voc, yolo):
            c: Counter = Counter()
            for i in range(len(ds)):
                t = ds.load_target(i, *ds.get_height_and_width(i))
                c.update(ds.class_names[label - 1] for label, crowd in zip(t["labels"].tolist(), t["iscrowd"]) if
                         not crowd)
            counts.append(c)
        assert counts[0] == counts[1] and sum(counts[0].values()) > 100
