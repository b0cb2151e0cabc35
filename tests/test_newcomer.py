"""What a newcomer trips over: the page's default model and guide, box-only models, TorchScript's console noise,
publish's names and licence, and the VOC split that ``data info`` reports."""

from __future__ import annotations

import socket
import sys
import warnings

import pytest
from PIL import Image

from detdemo.app.catalogue import BCCD_MODEL_NAME, BUNDLED_MODEL_NAME, MODELS_DIR, Catalogue, entry_from_path
from detdemo.app.coco import COCO_MODEL_NAME
from detdemo.app.lineup import default_catalogue
from detdemo.app.predict import MASK_COLUMN, PredictRequest, run_prediction
from tests.conftest import REPO

sys.path.insert(0, str(REPO))
import app as app_module  # noqa: E402

SHAPES, BCCD = MODELS_DIR / "shapes", MODELS_DIR / "bccd"


def _component(demo, kind: str, **attrs):
    found = [b for b in demo.blocks.values() if type(b).__name__ == kind
             and all(getattr(b, k, None) == v for k, v in attrs.items())]
    assert len(found) == 1, (kind, attrs, found)
    return found[0]


def _handler(demo, name: str):
    return next(f.fn for f in demo.fns.values() if f.name == name)


# --- the page's default model ------------------------------------------------------------------------------------


def test_cached_coco_weights_make_the_coco_model_the_page_default(tmp_path, monkeypatch):
    import torch
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    from detdemo.app import coco
    from detdemo.models.weights import cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(coco, "can_download", lambda url: pytest.fail("cached weights need no download check"))
    target = cache_path(MaskRCNN_ResNet50_FPN_Weights.DEFAULT)
    target.parent.mkdir(parents=True)
    # Building the page must not read the weights (a 170 MB model; read on the first upload): a small state dict
    # under the right name is what torchvision's cache lookup sees.
    torch.save({"placeholder": torch.zeros(1)}, target)
    catalogue = default_catalogue(None)
    assert catalogue.default == COCO_MODEL_NAME
    demo = app_module.make_demo(app_module.parse_args([]))
    assert _component(demo, "Dropdown", label="Model").value == COCO_MODEL_NAME
    guide = _component(demo, "Markdown", elem_id="guide").value
    for words in ("everyday photos", "circles, squares and triangles", "blood-smear microscope"):
        assert words in guide, guide
    assert "Offline" not in guide and "know only" not in guide
    assert _component(demo, "Checkbox", label="Masks").visible  # COCO Mask R-CNN segments
    # the page knew COCO's classes without loading the model (torchvision's list, "N/A" gaps kept for the labels)
    shown = [name for name, _ in _component(demo, "CheckboxGroup", elem_id="classes").choices]
    assert shown == MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"][1:] and shown[0] == "person"
    assert not catalogue._predictors


def test_online_without_cache_the_coco_model_is_the_default_too(tmp_path, monkeypatch):
    """A Space is online: the weights download on first use, so the page starts there."""
    probes = []

    class Connection:
        def close(self):
            pass

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: probes.append(address)
                        or Connection())
    catalogue = default_catalogue(None)
    assert catalogue.default == COCO_MODEL_NAME and probes == [("download.pytorch.org", 443)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # declared offline: not even probed
    assert default_catalogue(None).default == BUNDLED_MODEL_NAME and len(probes) == 1


def test_offline_the_page_starts_on_a_bundled_model_and_says_what_they_know(offline):
    catalogue = default_catalogue(None)
    assert catalogue.default == BUNDLED_MODEL_NAME and COCO_MODEL_NAME in catalogue.names
    assert "know only synthetic shapes" in catalogue.guide and "Offline" in catalogue.guide
    assert "maskrcnn_resnet50_fpn_coco" in catalogue.guide  # names the file to fetch
    assert len(offline) == 1  # one cheap probe at start-up, nothing downloaded
    # The page's start-up checks every exported backend of its first model on the examples: no TorchScript or
    # legacy-exporter warning may reach the console (the bundled models hold no TorchScript file).
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        demo = app_module.make_demo(app_module.parse_args([]))
    assert not _noise(records), _noise(records)
    assert any("ExportedProgram: matches PyTorch" in str(getattr(b, "value", "")) for b in demo.blocks.values())
    assert _component(demo, "Dropdown", label="Model").value == BUNDLED_MODEL_NAME
    assert "know only synthetic shapes" in _component(demo, "Markdown", elem_id="guide").value


def test_a_given_model_stays_the_default_and_no_coco_still_says_what_the_bundled_know(offline):
    catalogue = default_catalogue(SHAPES / "model.onnx")
    assert catalogue.default == catalogue.names[0] == "model.onnx"
    assert "know only" not in catalogue.guide
    bundled_only = default_catalogue(None, include_coco=False)
    assert "know only synthetic shapes" in bundled_only.guide and "Offline" not in bundled_only.guide


# --- box-only models ---------------------------------------------------------------------------------------------


def test_box_only_model_has_no_masks_toggle_and_no_mask_column():
    # ONNX files alone (with their folders' manifests): the page's parity check on the examples has nothing to do
    catalogue = Catalogue([entry_from_path(BCCD / "model.onnx", BCCD_MODEL_NAME),
                           entry_from_path(SHAPES / "model.onnx", BUNDLED_MODEL_NAME)])
    bccd_image = sorted((BCCD / "examples").glob("*.jpg"))[0]
    shapes_image = sorted((SHAPES / "examples").glob("*.jpg"))[0]
    boxes = run_prediction(catalogue, PredictRequest(str(bccd_image), BCCD_MODEL_NAME, "onnxruntime"))
    assert boxes.rows and MASK_COLUMN not in boxes.columns and all(len(r) == len(boxes.columns) for r in boxes.rows)
    masks = run_prediction(catalogue, PredictRequest(str(shapes_image), BUNDLED_MODEL_NAME, "onnxruntime"))
    assert masks.rows and masks.columns[-1] == MASK_COLUMN and all(isinstance(r[-1], int) for r in masks.rows)
    assert boxes.columns == masks.columns[:-1]
    assert not catalogue.has_masks(BCCD_MODEL_NAME) and catalogue.has_masks(BUNDLED_MODEL_NAME)

    from detdemo.app.ui import build_demo

    demo = build_demo(catalogue)  # starts on BCCD, the first model
    assert _component(demo, "Checkbox", label="Masks").visible is False
    table_headers = _component(demo, "Dataframe", label="Detections (boxes in the uploaded image's pixels)").headers
    assert MASK_COLUMN not in table_headers
    select = _handler(demo, "select_model")
    *_, toggle, table = select(BCCD_MODEL_NAME)
    assert toggle.visible is False and MASK_COLUMN not in table["headers"]
    *_, toggle, table = select(BUNDLED_MODEL_NAME)
    assert toggle.visible is True and table["headers"][-1] == MASK_COLUMN
    # the public API keeps its name, seven inputs and four outputs; the table carries its own headers
    predict = _handler(demo, "predict")
    image, table, timings, summary = predict(str(bccd_image), BCCD_MODEL_NAME, "onnxruntime", 0.5, True, True, True)
    assert table == boxes.table and MASK_COLUMN not in table["headers"]


# --- console noise -----------------------------------------------------------------------------------------------

NOISE = ("is deprecated. Please switch to", "always returns a (Losses, Detections) tuple in scripting")


def _noise(records) -> list[str]:
    return [str(w.message) for w in records if any(n in str(w.message) for n in NOISE)]


def test_loading_and_running_torchscript_prints_no_torchscript_noise(tmp_path):
    from detdemo.checkpoint import load_checkpoint
    from detdemo.models import model_from_checkpoint
    from export.exporters import export_torchscript
    from export.runtime import load_predictor

    image = Image.open(sorted((SHAPES / "examples").glob("*.jpg"))[0])
    model, cfg = model_from_checkpoint(load_checkpoint(SHAPES / "model.pt"))
    scripted = export_torchscript(model, cfg, tmp_path / "model.torchscript.pt")  # the bundled models hold none
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        predictor = load_predictor(scripted)  # a fresh module: its first call would warn
        assert len(predictor.predict(image, score_threshold=0.5)) > 0
    assert not _noise(records), _noise(records)


def test_torchscript_quiet_hides_only_those_messages_and_only_inside():
    from export.quiet import torchscript_quiet

    before = list(warnings.filters)
    rcnn = "RCNN always returns a (Losses, Detections) tuple in scripting"
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with torchscript_quiet():
            for message, category in (("`torch.jit.load` is deprecated. Please switch to X.", FutureWarning),
                                      (rcnn, UserWarning),
                                      ("`torch.jit.load` is not supported in Python 3.14+ and may break.",
                                       FutureWarning),
                                      ("something else is deprecated. Please switch to X", FutureWarning)):
                warnings.warn(message, category, stacklevel=1)
        warnings.warn(rcnn, UserWarning, stacklevel=1)
    assert [str(w.message)[:24] for w in records] == ["`torch.jit.load` is not ", "something else is deprec",
                                                       "RCNN always returns a (L"]
    assert warnings.filters == before



# --- the VOC split data info reports -----------------------------------------------------------------------------


def _tiny_voc(root, n: int = 6):
    """n images with one object each, VOC layout, no split files yet."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(n):
        Image.new("RGB", (40, 30), (20 * i, 80, 120)).save(root / "JPEGImages" / f"img{i}.jpg")
        name = "cell" if i % 2 else "blob"
        (root / "Annotations" / f"img{i}.xml").write_text(
            f"<annotation><filename>img{i}.jpg</filename><size><width>40</width><height>30</height></size>"
            f"<object><name>{name}</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax>"
            "</bndbox></object></annotation>")
    return root


def _ids(ds) -> list[str]:
    return [r.path.stem for r in ds.records]


def test_voc_with_only_a_val_list_trains_on_every_other_image_and_info_says_so(tmp_path, capsys):
    from detdemo.cli import main
    from detdemo.data import open_dataset

    root = _tiny_voc(tmp_path / "voc")
    seeded = set(_ids(open_dataset(root, "train")))  # no split files: the seeded hold-out, as before
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("img0\nimg3\n")
    val, train = open_dataset(root, "val"), open_dataset(root, "train")
    assert _ids(val) == ["img0", "img3"] and val.split_source == "ImageSets/Main/val.txt"
    assert sorted(_ids(train)) == ["img1", "img2", "img4", "img5"]  # never a seeded split overlapping val.txt
    assert train.split_source == "all images not in ImageSets/Main/val.txt"
    assert seeded & {"img0", "img3"}, "the seeded hold-out would have trained on listed val images"
    assert main(["data", "info", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "split train: 4 images, 4 objects, masks: no (all images not in ImageSets/Main/val.txt)" in out
    assert "split val: 2 images, 2 objects, masks: no (ImageSets/Main/val.txt)" in out
    assert main(["data", "info", "--data", str(root), "--split", "val"]) == 0
    assert "split train" not in capsys.readouterr().out


def test_voc_with_only_a_train_list_evaluates_on_the_rest(tmp_path, capsys):
    from detdemo.cli import main
    from detdemo.data import open_dataset
    from detdemo.errors import DataError

    root = _tiny_voc(tmp_path / "voc")
    assert main(["data", "info", "--data", str(root)]) == 0
    assert "seeded hold-out of all images: 80% train / 20% val, seed 0" in capsys.readouterr().out
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("img0\nimg1\nimg2\nimg3\nimg4\n")
    assert _ids(open_dataset(root, "val")) == ["img5"]
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"img{i}\n" for i in range(6)))
    with pytest.raises(DataError, match="none is left for split 'val'.*val.txt"):
        open_dataset(root, "val")


# --- publish's names and licence ---------------------------------------------------------------------------------


def test_publish_describes_the_bundled_model_by_what_it_records(tmp_path, capsys):
    """No --dataset/--license: the Space and the card name the data and licence training recorded, not the
    training folder's name ("maskrcnn_light on data") and not ``license: other``."""
    import yaml

    from detdemo.cli import main

    assert main(["publish", "--model", str(SHAPES), "--out", str(tmp_path), "--repo-id", "me/shapes"]) == 0
    assert "dataset 'detdemo synthetic shapes' (instances_train.json info/licenses); license cc0-1.0" in \
        capsys.readouterr().out
    space = yaml.safe_load((tmp_path / "space" / "README.md").read_text().split("---")[1])
    assert space["short_description"] == "maskrcnn_light on detdemo synthetic shapes, verified exports"
    assert space["license"] == "cc0-1.0" and len(space["short_description"]) <= 60
    card = yaml.safe_load((tmp_path / "model" / "README.md").read_text().split("---")[1])
    assert card["license"] == "cc0-1.0" and card["datasets"] == ["detdemo synthetic shapes"]


def test_publish_asks_for_what_the_model_does_not_record_before_any_work(tmp_path):
    import torch

    from detdemo.errors import DetDemoError
    from detdemo.fileio import write_torch
    from export.publish import publish_names

    checkpoint = torch.load(SHAPES / "model.pt", weights_only=True)
    del checkpoint["dataset"]  # as every model trained before detdemo recorded it
    write_torch(tmp_path / "best.pt", checkpoint)
    from detdemo.cli import main

    assert main(["publish", "--model", str(tmp_path / "best.pt"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # refused before exporting anything
    with pytest.raises(DetDemoError, match=r"best.pt: the model was trained before .*; pass --dataset NAME and "
                                           r"--license ID"):
        publish_names(checkpoint, tmp_path / "best.pt", None, None)
    coco = {**checkpoint, "dataset": {"name": "coco128", "license": None, "source": "instances_train.json"}}
    with pytest.raises(DetDemoError, match="data that states no licence; pass --license ID"):
        publish_names(coco, tmp_path / "best.pt", None, None)
    named = publish_names(coco, tmp_path / "best.pt", None, "cc-by-4.0")
    assert (named.dataset, named.license) == ("coco128", "cc-by-4.0")


def test_what_datasets_state_about_themselves(tmp_path):
    import json

    from detdemo.data.provenance import hub_license, read_provenance

    root = tmp_path / "data"
    (root / "annotations").mkdir(parents=True)
    coco = {"info": {"description": "Kitchen tools v2"}, "images": [{"id": 1, "file_name": "a.jpg", "width": 4,
            "height": 4, "license": 1}], "annotations": [], "categories": [{"id": 1, "name": "cup"}],
            "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"},
                         {"id": 2, "url": "http://creativecommons.org/licenses/by-nc/2.0/", "name": "NC"}]}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    assert (read_provenance(root).name, read_provenance(root).license) == ("Kitchen tools v2", "cc-by-4.0")
    coco["images"].append({**coco["images"][0], "id": 2, "license": 2})  # COCO itself: a licence per image
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    assert read_provenance(root).license is None
    (root / "LICENSE").write_text("MIT License\n\nCopyright (c) 2026 someone\n")
    assert read_provenance(root).license is None  # the COCO file's own statement wins over a folder's file
    coco["info"] = {}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    assert read_provenance(root).name is None  # "data" is no name
    voc = _tiny_voc(tmp_path / "Tools" / "VOC2012")
    (tmp_path / "Tools" / "LICENSE").write_text("Apache License, Version 2.0\n")
    assert (read_provenance(voc).name, read_provenance(voc).license) == ("VOC2012", "apache-2.0")
    yolo = tmp_path / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "data.yaml").write_text("names: [cup]\ntrain: images/train\nval: images/train\n"
                                    "roboflow:\n  project: mugs\n  license: CC BY 4.0\n")
    assert (read_provenance(yolo).name, read_provenance(yolo).license) == ("mugs", "cc-by-4.0")
    assert hub_license("http://creativecommons.org/licenses/by-nc-sa/2.0/") == "cc-by-nc-sa-2.0"
    assert hub_license("our own terms") is None
