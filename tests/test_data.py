from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors

from detdemo.data import (
    CocoDataset,
    PennFudanDataset,
    VOCDataset,
    detect_layout,
    eval_transforms,
    generate_shapes,
    open_dataset,
    train_transforms,
)
from detdemo.data.download import fetch_pennfudan
from detdemo.data.images import open_image
from detdemo.data.shapes import ShapesConfig
from detdemo.errors import DataError, DetDemoError
from tests.conftest import shared


def check_contract(ds, idx=0, masks=None):
    img, t = ds[idx]
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.float32 and img.shape[0] == 3
    assert img.min() >= 0.0 and img.max() <= 1.0
    h, w = img.shape[1:]
    assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].format.value == "XYXY"
    assert t["boxes"].dtype == torch.float32 and tuple(t["boxes"].canvas_size) == (h, w)
    n = len(t["boxes"])
    assert t["labels"].dtype == torch.int64 and t["labels"].shape == (n,)
    assert (t["labels"] >= 1).all() and (t["labels"] < ds.num_classes).all()
    assert t["iscrowd"].shape == (n,) and t["area"].shape == (n,)
    assert t["image_id"].dtype == torch.int64
    if masks if masks is not None else ds.has_masks:
        assert isinstance(t["masks"], tv_tensors.Mask) and t["masks"].dtype == torch.uint8
        assert t["masks"].shape == (n, h, w)
    else:
        assert "masks" not in t
    assert ds.get_height_and_width(idx) == (h, w)
    return img, t


# -- real data ---------------------------------------------------------------------------------------------------


def test_coco128_real_data_maps_noncontiguous_ids_and_matches_pycocotools():
    root = shared("coco128")
    train, val = open_dataset(root, "train"), open_dataset(root, "val")
    assert (len(train), len(val)) == (98, 100)
    assert val.num_classes == 81 and val.class_names[0] == "person" and val.class_names[-1] == "toothbrush"
    assert max(val.category_to_label) == 90 and sorted(val.category_to_label.values()) == list(range(1, 81))
    img, t = check_contract(val, 0, masks=True)
    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    rec = val.records[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=rec.image_id))
    assert len(anns) == len(t["labels"])
    np.testing.assert_array_equal(t["masks"][0].numpy(), coco.annToMask(anns[0]))
    assert val.class_names[t["labels"][0] - 1] == coco.loadCats(anns[0]["category_id"])[0]["name"]
    crowd = sum(int(val.load_target(i, *val.get_height_and_width(i))["iscrowd"].sum()) for i in range(len(val)))
    assert crowd >= 1  # crowd regions are kept (marked) for evaluation


def test_bccd_real_voc_with_splits_and_degenerate_box_warning():
    root = shared("BCCD")
    with pytest.warns(UserWarning, match=r"dropped 1 degenerate box"):
        train = open_dataset(root, "train")
    val = open_dataset(root, "val")
    assert (len(train), len(val)) == (205, 87)
    assert train.class_names == ["Platelets", "RBC", "WBC"] and not train.has_masks
    check_contract(train, 0)
    assert detect_layout(root)[0] == "voc" and detect_layout(root)[1].name == "BCCD"


def test_pennfudan_sample_masks_to_instances():
    root = shared("PennFudanPed_sample")
    ds = open_dataset(root, "all", transforms=eval_transforms())
    assert len(ds) == 1 and ds.class_names == ["person"]
    img, t = check_contract(ds, 0, masks=True)
    assert len(t["labels"]) == 3
    for box, mask in zip(t["boxes"], t["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_pennfudan_download_from_local_zip(tmp_path):
    src = shared("PennFudanPed_sample")
    archive = tmp_path / "PennFudanPed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for sub in ("PNGImages", "PedMasks", "Annotation"):
            for f in (src / sub).iterdir():
                zf.write(f, f"PennFudanPed/{sub}/{f.name}")
    root = fetch_pennfudan(tmp_path / "out", url=archive.as_uri(), progress=False)
    assert root == tmp_path / "out" / "PennFudanPed"
    assert len(PennFudanDataset(root)) == 1
    with pytest.raises(DataError, match="already exists"):
        fetch_pennfudan(tmp_path / "out", url=archive.as_uri(), progress=False)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a zip archive"):
        fetch_pennfudan(tmp_path / "out2", zip_file=bad, progress=False)
    assert not any((tmp_path / "out2").iterdir())  # nothing half-unpacked left behind
    with pytest.raises(DataError, match="cannot download"):
        fetch_pennfudan(tmp_path / "out3", url=(tmp_path / "missing.zip").as_uri(), progress=False)


# -- COCO encodings and negatives -------------------------------------------------------------------------------


def _write_coco(tmp_path: Path, anns: list[dict], images: list[dict], cats=None) -> Path:
    data = {"images": images, "annotations": anns,
            "categories": cats or [{"id": 7, "name": "box"}, {"id": 3, "name": "ring"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_polygon_uncompressed_and_compressed_rle_and_negative_images(tmp_path):
    Image.new("RGB", (40, 30), "gray").save(tmp_path / "a.png")
    Image.new("RGB", (40, 30), "gray").save(tmp_path / "empty.png")
    expected = np.zeros((30, 40), np.uint8)
    expected[5:15, 10:20] = 1
    compressed = mask_utils.encode(np.asfortranarray(expected))
    uncompressed = {"size": [30, 40], "counts": []}
    flat = expected.flatten(order="F")
    run_value, run = 0, 0
    for v in flat:
        if v != run_value:
            uncompressed["counts"].append(run)
            run_value, run = v, 0
        run += 1
    uncompressed["counts"].append(run)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 10, 10], "iscrowd": 0,
         "segmentation": [[10, 5, 20, 5, 20, 15, 10, 15]]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [10, 5, 10, 10], "iscrowd": 1,
         "segmentation": uncompressed},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [10, 5, 10, 10], "iscrowd": 0,
         "segmentation": {"size": [30, 40], "counts": compressed["counts"].decode()}},
    ]
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
              {"id": 2, "file_name": "empty.png", "width": 40, "height": 30}]
    ds = CocoDataset(_write_coco(tmp_path, anns, images), transforms=eval_transforms())
    assert ds.class_names == ["ring", "box"]  # sorted by category id 3, 7
    assert ds.category_to_label == {3: 1, 7: 2}
    img, t = check_contract(ds, 0, masks=True)
    assert t["labels"].tolist() == [2, 1, 2] and t["iscrowd"].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(t["masks"][1].numpy(), expected)
    np.testing.assert_array_equal(t["masks"][2].numpy(), expected)
    assert abs(int(t["masks"][0].sum()) - int(expected.sum())) <= 25  # polygon rasterisation edge
    _, t_empty = check_contract(ds, 1, masks=True)
    assert t_empty["boxes"].shape == (0, 4) and t_empty["masks"].shape == (0, 30, 40)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"ann.json: not valid JSON \(.* line 1"),
        ('{"images": []}', r"ann.json: not a COCO instances file \(missing or invalid: annotations, categories\)"),
        ('[1, 2]', "expected a COCO object"),
    ],
)
def test_coco_malformed_files_are_named(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        CocoDataset(path)


def test_coco_missing_image_and_unknown_category_and_bad_bbox(tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "nope.png", "width": 10, "height": 10}]
    with pytest.raises(DataError, match="image 'nope.png' not found"):
        CocoDataset(_write_coco(tmp_path, [], images))
    images = [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}]
    ann = {"id": 5, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]}
    with pytest.raises(DataError, match="category_id 99 which is not in 'categories'"):
        CocoDataset(_write_coco(tmp_path, [ann], images))
    ann = {"id": 5, "image_id": 1, "category_id": 7, "bbox": "oops"}
    with pytest.raises(DataError, match="malformed 'bbox'"):
        CocoDataset(_write_coco(tmp_path, [ann], images))
    with pytest.raises(DataError, match=r"not among the expected classes"):
        CocoDataset(_write_coco(tmp_path, [], images), classes=["box"])


def test_degenerate_boxes_dropped_with_count(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    anns = [{"id": i, "image_id": 1, "category_id": 7, "bbox": b, "iscrowd": 0}
            for i, b in enumerate([[1, 1, 5, 5], [2, 2, 0, 4], [3, 3, 4, -1]])]
    with pytest.warns(UserWarning, match=r"dropped 2 degenerate box\(es\).* in 1 file\(s\): a.png"):
        ds = CocoDataset(_write_coco(tmp_path, anns, [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}]))
    assert len(ds[0][1]["boxes"]) == 1


# -- VOC errors ----------------------------------------------------------------------------------------------------

VOC_XML = """<annotation><filename>{name}</filename><size><width>32</width><height>24</height></size>
<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin><ymin>2</ymin><xmax>20</xmax>
<ymax>20</ymax></bndbox></object></annotation>"""


def _voc(tmp_path, xml_text: str) -> Path:
    (tmp_path / "Annotations").mkdir(exist_ok=True)
    (tmp_path / "JPEGImages").mkdir(exist_ok=True)
    Image.new("RGB", (32, 24)).save(tmp_path / "JPEGImages" / "img1.jpg")
    (tmp_path / "Annotations" / "img1.xml").write_text(xml_text)
    return tmp_path


def test_voc_errors_name_the_file(tmp_path):
    root = _voc(tmp_path, VOC_XML.format(name="img1.jpg", cls="cell", x=2))
    ds = VOCDataset(root)
    assert ds.class_names == ["cell"] and check_contract(ds)[1]["boxes"].tolist() == [[2, 2, 20, 20]]
    with pytest.raises(DataError, match=r"img1.xml: class 'cell' is not among the given classes"):
        VOCDataset(root, classes=["other"])
    (root / "Annotations" / "img1.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"img1.xml: malformed XML"):
        VOCDataset(root)
    (root / "Annotations" / "img1.xml").write_text(VOC_XML.format(name="img1.jpg", cls="cell", x="abc"))
    with pytest.raises(DataError, match=r"img1.xml: object #0 \(cell\) has a missing or non-numeric"):
        VOCDataset(root)
    (root / "Annotations" / "img1.xml").write_text(VOC_XML.format(name="gone.jpg", cls="cell", x=2))
    (root / "JPEGImages" / "img1.jpg").unlink()
    with pytest.raises(DataError, match=r"img1.xml: its image gone.jpg is not in"):
        VOCDataset(root)


# -- images --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1", "LA"])
def test_image_modes_become_rgb(tmp_path, mode):
    arr = (np.arange(24 * 32).reshape(24, 32) % 256).astype(np.uint8)
    img = Image.fromarray(arr, "L")
    if mode == "I;16":
        img = Image.fromarray((arr.astype(np.uint16) * 256), "I;16")
        path = tmp_path / "x.png"
    else:
        img = img.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    out = open_image(path)
    assert out.mode == "RGB" and out.size == (32, 24)
    if mode == "I;16":  # scaled into 8 bits, not clipped to white
        assert np.asarray(out)[..., 0].max() == 255 and np.asarray(out)[..., 0].min() == 0


def test_exif_orientation_applied_everywhere(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert open_image(tmp_path / "rot.jpg").size == (20, 40)
    (tmp_path / "PNGImages").mkdir()
    (tmp_path / "PedMasks").mkdir()
    shutil.copy(tmp_path / "rot.jpg", tmp_path / "PNGImages" / "p.jpg")
    mask = np.zeros((40, 20), np.uint8)
    mask[5:10, 5:10] = 1
    Image.fromarray(mask).save(tmp_path / "PedMasks" / "p_mask.png")
    ds = PennFudanDataset(tmp_path, transforms=eval_transforms())
    assert ds.get_height_and_width(0) == (40, 20)  # from the header, rotated
    assert ds[0][0].shape == (3, 40, 20)


def test_bad_images_are_named(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg: image file is empty"):
        open_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(DataError, match="text.jpg: not an image file"):
        open_image(tmp_path / "text.jpg")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="cut.jpg: image is truncated or corrupt"):
        open_image(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match="missing.jpg: image file not found"):
        open_image(tmp_path / "missing.jpg")


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    import detdemo.data.images as images

    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(DataError, match=r"big.png: image is 300x300 = 90,000 pixels, over the 50,000-pixel limit"):
        images.open_image(tmp_path / "big.png")


def test_get_height_and_width_does_not_decode(shapes_dir, monkeypatch):
    ds = open_dataset(shapes_dir, "train")
    rec = ds.records[0]
    rec.height = rec.width = None  # force the header path
    import detdemo.data.base as base

    monkeypatch.setattr(base, "open_image", lambda *a: pytest.fail("decoded the image"))
    h, w = ds.get_height_and_width(0)
    assert Image.open(rec.path).size == (w, h)


# -- synthetic shapes ------------------------------------------------------------------------------------------------


def test_shapes_deterministic_by_seed(tmp_path):
    cfg = ShapesConfig(min_side=64, max_side=96)
    a = generate_shapes(tmp_path / "a", 3, 2, seed=5, cfg=cfg, progress=False)
    b = generate_shapes(tmp_path / "b", 3, 2, seed=5, cfg=cfg, progress=False)
    c = generate_shapes(tmp_path / "c", 3, 2, seed=6, cfg=cfg, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 7
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "train/train_000000.jpg").read_bytes() != (c / "train/train_000000.jpg").read_bytes()


def test_shapes_dataset_loads_through_coco_loader(shapes_dir):
    assert detect_layout(shapes_dir)[0] == "coco"
    train, val = open_dataset(shapes_dir, "train"), open_dataset(shapes_dir, "val")
    assert (len(train), len(val)) == (8, 4)
    assert train.class_names == ["circle", "square", "triangle"] and train.has_masks
    sizes = {train.get_height_and_width(i) for i in range(len(train))}
    assert len(sizes) > 3  # varied image sizes
    for i in range(len(train)):
        _, t = check_contract(train, i, masks=True)
        for box, mask in zip(t["boxes"], t["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_shapes_rejects_unknown_class():
    with pytest.raises(DetDemoError, match="unknown shape class"):
        ShapesConfig(classes=("circle", "blob"))


# -- augmentation and layout -------------------------------------------------------------------------------------------


def test_train_transforms_keep_boxes_and_masks_consistent(shapes_dir):
    torch.manual_seed(0)
    ds = open_dataset(shapes_dir, "train", transforms=train_transforms())
    for i in range(len(ds)):
        img, t = ds[i]
        assert img.dtype == torch.float32 and t["masks"].shape[1:] == img.shape[1:]
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"]) == len(t["iscrowd"]) == len(t["area"])
        for box, mask in zip(t["boxes"], t["masks"]):
            if mask.sum() == 0:
                continue
            ys, xs = torch.nonzero(mask, as_tuple=True)
            mask_box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            assert torch.allclose(box, mask_box, atol=3.0), (box, mask_box)


def test_layout_detection_and_errors(tmp_path, shapes_dir):
    with pytest.raises(DataError, match="no dataset layout recognised"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="dataset path not found"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown dataset layout"):
        open_dataset(shapes_dir, layout="tfrecord")
    assert detect_layout(shapes_dir / "annotations" / "instances_val.json")[0] == "coco"


def test_holdout_split_is_disjoint_and_complete():
    from detdemo.data.layout import holdout_indices

    tr, va = holdout_indices(170, "train", 0.3, 1), holdout_indices(170, "val", 0.3, 1)
    assert not set(tr) & set(va) and sorted(tr + va) == list(range(170)) and len(va) == 51
