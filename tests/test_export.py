from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detdemo import build_model, list_models, save_checkpoint
from detdemo.checkpoint import load_checkpoint
from detdemo.cli import main
from detdemo.data import collate, open_dataset, train_transforms
from detdemo.errors import DetDemoError
from detdemo.inference.eager import EagerPredictor
from detdemo.models import get_spec
from export.errors import ExportError
from export.exporters import export_checkpoint
from export.runtime import OnnxPredictor, load_predictor
from export.torch_export import BLOCKED_FAMILIES, export_program
from tests.conftest import bundled_like_shapes, shared

ALL = [s.name for s in list_models()]
NO_AVX512 = "avx512f" not in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
# Known open defect, not a tolerance: on an AMD EPYC without AVX-512 (torch 2.14.1, onnxruntime 1.31.1) the briefly
# trained Keypoint R-CNN's ONNX keypoints for one low-score detection whose box ends 0.14 px above the image's bottom
# edge differ by up to 23.4 px (heatmap logits by up to 0.17) for a 2e-4 px box difference; the same test fails at
# commit dcbb9d1 on that machine and passed on the Intel machines before. Suspected: RoIAlign's border cut-off
# (a sample just below or past the feature map's edge), not yet proven; it stays listed as failing there.
KEYPOINT_ON_NO_AVX512 = pytest.mark.xfail(NO_AVX512, strict=False,
                                          reason="keypoints of a border-touching detection diverge on CPUs "
                                                 "without AVX-512 (open defect, see the test module)")
ARCH_PARAMS = [pytest.param(a, marks=KEYPOINT_ON_NO_AVX512) if a == "keypointrcnn_resnet50_fpn" else a for a in ALL]
# The smallest architecture of each family: its ONNX goes through the dynamo exporter in the every-architecture test
# (the others' through the legacy one, as before), so every family's dynamo ONNX is checked detection by detection.
FAMILY_REPRESENTATIVES = {"fasterrcnn_light", "maskrcnn_light", "retinanet_resnet50_fpn", "fcos_resnet50_fpn",
                          "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"}


def _cutoff_kwargs(spec, score: float = 0.0, cap: int = 30) -> dict:
    """Keep low-score detections so the comparison has plenty to pair (and near-ties at the cap)."""
    if spec.family in ("faster_rcnn", "mask_rcnn", "keypoint_rcnn"):
        return {"box_score_thresh": score, "box_detections_per_img": cap}
    return {"score_thresh": score, "detections_per_img": cap}


def briefly_trained(arch: str, shapes_dir: Path, out: Path, steps: int, **extra) -> Path:
    """A few SGD steps on shapes: random weights give near-tied scores, training makes the check meaningful.

    The trunk (the backbone but its FPN) keeps its random weights: its backward was most of a step's cost on the
    R50s, and the heads' steps are what make the scores decisive."""
    spec = get_spec(arch)
    kw = {} if spec.fixed_size else {"min_size": 128, "max_size": 160}
    kw.update(_cutoff_kwargs(spec))
    kw.update(extra)
    torch.manual_seed(0)
    model, cfg = build_model(arch, 4, ["circle", "square", "triangle"], **kw)
    ds = open_dataset(shapes_dir, "train", transforms=train_transforms())
    for name, p in model.named_parameters():
        if name.startswith("backbone.") and not name.startswith("backbone.fpn."):
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    model.train()
    for i in range(steps):
        images, targets = collate([ds[(2 * i) % len(ds)], ds[(2 * i + 1) % len(ds)]])
        targets = [dict(t) for t in targets]
        if spec.keypoints:
            for t in targets:
                kp = torch.ones(len(t["boxes"]), 17, 3)
                kp[..., :2] = t["boxes"][:, None, :2] + 2
                t["keypoints"] = kp
        loss = sum(model(list(images), targets).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
    recalibrate_batchnorm(model, ds, spec)
    # a diverged model outputs NaN scores, i.e. no detections, and would pass any parity check vacuously
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()), arch
    return save_checkpoint(out, model.eval(), cfg)


@torch.no_grad()
def recalibrate_batchnorm(model, ds, spec, images: int = 8) -> None:
    """Re-estimate BatchNorm running statistics over a few images, as training long enough would have.

    After a handful of steps BatchNorm's running statistics (momentum 0.03 in MobileNetV3) are still at their
    initial values, so in eval mode the features saturate and a briefly trained SSDlite gave the same scores for
    every image: a parity check on such outputs verifies nothing. Cumulative averages over a few images fix it."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for i in range(0, images, 2):
        imgs, targets = collate([ds[i % len(ds)], ds[(i + 1) % len(ds)]])
        targets = [dict(t) for t in targets]
        if spec.keypoints:
            for t in targets:
                t["keypoints"] = torch.ones(len(t["boxes"]), 17, 3)
        model(list(imgs), targets)
    for m in norms:
        m.momentum = 0.1
    model.eval()


def check(folder: Path, *images: str, probes: str = "full") -> tuple[int, dict, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["check-export", str(folder), "--probes", probes, "--images", *images])
    return rc, json.loads((folder / "parity.json").read_text()), buf.getvalue()


@pytest.fixture(scope="module")
def light_export(shapes_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("light")
    ckpt = briefly_trained("maskrcnn_light", shapes_dir, root / "ckpt.pt", steps=150)
    export_checkpoint(ckpt, ("torchscript", "onnx", "pt2"), root / "export")  # onnx: the dynamo exporter
    return root / "export"


def test_parity_on_real_photos_and_hard_probes(light_export, shapes_dir):
    coco = shared("coco128", "val2017")
    photos = sorted(coco.iterdir())
    picks = [str(photos[0]), str(photos[7]), str(photos[20])]
    sizes = {Image.open(p).size for p in picks}
    assert len(sizes) >= 2  # several sizes / aspect ratios
    rc, report, out = check(light_export, *picks, str(shapes_dir / "val"))
    assert rc == 0, out
    for backend in ("torchscript", "onnx", "pt2"):
        rows = report["backends"][backend]["images"]
        probes = [r["probe"] for r in rows]
        for needed in ("blank_320x240", "tiny_64x48", "large_2000x1500", "grayscale"):
            assert needed in probes
        blank = probes.index("blank_320x240")
        assert probes[blank + 1].startswith("after_blank_")  # same session, right after the blank image
        assert sum(r["n_reference"] for r in rows) > 100  # detections were really compared
        assert all(r["mask_iou_min"] is None or r["mask_iou_min"] >= 0.999 for r in rows)
        assert report["backends"][backend]["overall"]["max_mask_prob_diff"] is not None
    md = (light_export / "parity.md").read_text()
    assert "| probe |" in md and "PASS" in md
    assert report["backends"]["pt2"]["overall"]["max_box_diff_px"] == 0.0  # PyTorch's own kernels: bit-exact
    assert report["backends"]["pt2"]["overall"]["max_mask_prob_diff"] == 0.0


def test_broken_export_is_caught(light_export, shapes_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(light_export, broken)
    data = load_checkpoint(broken / "model.pt")
    from detdemo.models import model_from_checkpoint

    model, cfg = model_from_checkpoint(data)
    with torch.no_grad():  # the exported files keep the old weights; the eager reference changes a little
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(1.05)
    # stamped as part of the same export, so only the numbers can give it away
    save_checkpoint(broken / "model.pt", model, cfg, export_id=data["export_id"])
    rc, report, out = check(broken, str(shapes_dir / "val"))
    assert rc == 1
    assert not report["passed"] and "box differs" in out


def test_a_folder_mixing_two_exports_is_refused(light_export, tmp_path, capsys):
    """An interrupted re-export leaves a new model.pt beside the old files: every loader refuses the folder."""
    mixed = tmp_path / "mixed"
    shutil.copytree(light_export, mixed)
    data = load_checkpoint(mixed / "model.pt")
    from detdemo.models import model_from_checkpoint

    model, cfg = model_from_checkpoint(data)
    save_checkpoint(mixed / "model.pt", model, cfg, export_id="another-export")
    with pytest.raises(DetDemoError, match="mixture of two exports"):
        load_predictor(mixed)
    assert main(["check-export", str(mixed)]) == 2
    assert "mixture of two exports" in capsys.readouterr().err
    (mixed / "export.json").unlink()  # killed before the manifest was written
    with pytest.raises(DetDemoError, match="export was interrupted"):
        load_predictor(mixed, "onnxruntime")


def test_torchscript_runs_in_fresh_process_with_only_torch_and_torchvision(light_export):
    code = (
        "import sys, json, torch, torchvision\n"
        "extra = {'detdemo.json': ''}\n"
        "m = torch.jit.load(sys.argv[1], _extra_files=extra)\n"
        "meta = json.loads(extra['detdemo.json'])\n"
        "out = m(torch.randn(3, 128, 160))\n"
        "print(json.dumps({'keys': sorted(out), 'classes': meta['class_names'], 'arch': meta['arch'],"
        " 'mods': sorted(k for k in sys.modules if k.split('.')[0] in ('detdemo', 'export'))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(light_export / "model.torchscript.pt")],
                          capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["keys"] == ["boxes", "labels", "masks", "scores"]
    assert result["classes"] == ["circle", "square", "triangle"] and result["arch"] == "maskrcnn_light"
    assert result["mods"] == []


def test_onnx_metadata_round_trip(light_export):
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(light_export / "model.onnx"))
    meta = OnnxPredictor(light_export / "model.onnx").meta
    assert meta["class_names"] == ["circle", "square", "triangle"] and meta["arch"] == "maskrcnn_light"
    assert meta["exporter"] == "torch.onnx.export(dynamo=True)" and meta["opset"] >= 18
    assert meta["onnxscript"]
    assert meta["onnxruntime"] == onnxruntime.__version__ and meta["onnx"] == onnx.__version__
    assert meta["versions"]["torch"] == str(torch.__version__)
    assert meta["outputs"] == ["boxes", "labels", "scores", "masks"]
    assert meta["transform"]["min_size"] == [128] and "batch fixed at 1" in meta["preprocessing"]
    assert meta["model_kwargs"]["box_detections_per_img"] == 30


def test_predictors_accept_pil_and_arrays_alike(light_export, shapes_dir):
    img = Image.open(sorted((shapes_dir / "val").iterdir())[0]).convert("RGB")
    arr = np.asarray(img)
    eager = EagerPredictor.from_checkpoint(light_export / "model.pt")
    for pred in (eager, load_predictor(light_export / "model.torchscript.pt"),
                 load_predictor(light_export / "model.onnx"), load_predictor(light_export / "model.pt2")):
        a, b = pred.predict(img), pred.predict(arr)
        assert len(a) == len(b) > 0 and np.allclose(a.boxes, b.boxes)
        assert a.masks.shape[1:] == (img.height, img.width)  # pasted at input size
        rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        assert np.allclose(pred.predict(rgba).scores, a.scores)
        assert len(pred.predict(arr[..., 0])) > 0  # grayscale HxW
        assert a.names()[0] in ("circle", "square", "triangle")


def test_zero_detections_then_detections_in_one_session(shapes_dir):
    """A blank image (no detections, empty outputs) must not leave an exported session unable to detect on the next
    image: the bundled model sees nothing on grey, then the shapes."""
    from export.runtime import folder_files

    bundled = Path(__file__).resolve().parents[1] / "models" / "shapes"
    eager = EagerPredictor.from_checkpoint(bundled / "model.pt")
    blank = np.full((240, 320, 3), 127, np.uint8)
    img = np.asarray(Image.open(sorted((shapes_dir / "val").iterdir())[0]).convert("RGB").resize((300, 300)))
    expected = eager.predict(img)
    assert len(eager.predict(blank)) == 0 and len(expected) > 0
    from export.formats import FORMATS

    # the full-precision files (reduced-precision ones move boxes a little, and are judged by AP elsewhere)
    exported = [path for fmt, path in folder_files(bundled).items()
                if fmt != "eager" and FORMATS[fmt].precision == "fp32"]
    assert {p.name for p in exported} >= {"model.onnx", "model.pt2"}
    for pred in (load_predictor(path) for path in exported):
        empty = pred.predict(blank)
        assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.masks.shape == (0, 240, 320)
        after = pred.predict(img)
        assert len(after) == len(expected) and np.abs(after.boxes - expected.boxes).max() < 0.05, pred.backend


def test_pt2_runs_in_a_fresh_process_with_only_torch_and_torchvision(light_export):
    code = (
        "import sys, json, torch, torchvision\n"
        "extra = {'detdemo.json': ''}\n"
        "program = torch.export.load(sys.argv[1], extra_files=extra)\n"
        "meta = json.loads(extra['detdemo.json'])\n"
        "outs = [program.module()(torch.randn(3, h, w)) for h, w in ((128, 160), (97, 33))]\n"
        "print(json.dumps({'outputs': meta['outputs'], 'shapes': [[list(t.shape) for t in o] for o in outs],"
        " 'classes': meta['class_names'], 'mods': sorted(k for k in sys.modules if k.split('.')[0] in "
        "('detdemo', 'export'))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(light_export / "model.pt2")], capture_output=True,
                          text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outputs"] == ["boxes", "labels", "scores", "masks"] and result["mods"] == []
    assert result["classes"] == ["circle", "square", "triangle"]
    for shapes in result["shapes"]:  # dynamic sizes and counts, outputs in the declared order
        n = shapes[0][0]
        assert shapes == [[n, 4], [n], [n], [n, 1, 28, 28]]


# Every family's smallest architecture through AOTInductor (freezing on). FCOS and RetinaNet spend 1.5-2 min each,
# most of it in g++ (the four others 20-30 s): they run when DETDEMO_ALL_AOTI=1 is set, so that CI's whole run stays
# near its 25-minute budget (all six passed in full runs on 2026-12-04 and 2026-12-05, torch 2.14.1, 2 CPU cores).
SLOW_AOTI = {"fcos_resnet50_fpn", "retinanet_resnet50_fpn"}
ONLY_WITH_ALL_AOTI = pytest.mark.skipif(os.environ.get("DETDEMO_ALL_AOTI") != "1",
                                        reason="1.5-2 min of g++ on 2 CPU cores; DETDEMO_ALL_AOTI=1 runs it")
AOTI_ARCHS = [pytest.param(arch, marks=ONLY_WITH_ALL_AOTI) if arch in SLOW_AOTI else arch
              for arch in ["maskrcnn_light", *sorted(FAMILY_REPRESENTATIVES - {"maskrcnn_light"})]]


@pytest.mark.slow
@pytest.mark.parametrize("arch", AOTI_ARCHS)
def test_aoti_package_matches_eager_and_refuses_the_wrong_device(arch, request, shapes_dir, tmp_path):
    from export.aoti import isa_problem, package_metadata

    if arch == "maskrcnn_light":  # the bundled model's package (the mutation suite's too), on images at its scale
        folder = request.getfixturevalue("bundled_aoti")
        val = sorted((bundled_like_shapes(tmp_path / "images", train=1, val=3, seed=13) / "val").iterdir())
    else:
        folder = tmp_path / "aoti"
        export_checkpoint(briefly_trained(arch, shapes_dir, tmp_path / "ckpt.pt", steps=6), ("aoti",), folder)
        val = sorted((shapes_dir / "val").iterdir())
    package = folder / "model.aoti.pt2"
    predictor = load_predictor(folder, "inductor")
    assert predictor.backend == "inductor" and predictor.device == "cpu" and predictor.path == package
    meta = package_metadata(package)
    assert meta["AOTI_DEVICE_KEY"] == "cpu" and isa_problem(meta["AOTI_CPU_ISA"]) is None
    assert isa_problem("AVX512 AVX512_VNNI") is None or torch.backends.cpu.get_cpu_capability() != "AVX512"
    rc, report, out = check(folder, *map(str, val), probes="basic")
    assert rc == 0, out
    aoti = report["backends"]["aoti"]
    assert sum(r["matched"] for r in aoti["images"]) > 0, out
    with pytest.raises(DetDemoError, match="no CUDA GPU|compiled for cpu cannot run on cuda"):
        load_predictor(package, device="cuda")


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_every_architecture_exports_with_parity(arch, shapes_dir, tmp_path):
    """ONNX (dynamo for each family's smallest architecture, legacy for the rest) and the ExportedProgram (pt2),
    each checked detection by detection, pt2 bit-exact; TorchScript (deprecated, exported only by name) for each
    family's smallest architecture and for Keypoint R-CNN, whose only other file is ONNX. (Scripting all sixteen
    cost CI about 80 s of its 25 minutes; the other nine were last scripted and checked in CI on 2026-12-05.)"""
    ckpt = briefly_trained(arch, shapes_dir, tmp_path / "ckpt.pt", steps=6)
    skipped: dict[str, str] = {}
    exporter = "dynamo" if arch in FAMILY_REPRESENTATIVES else "legacy"
    blocked = BLOCKED_FAMILIES.get(get_spec(arch).family)
    scripted = ("torchscript",) if arch in FAMILY_REPRESENTATIVES or blocked else ()
    paths = export_checkpoint(ckpt, (*scripted, "onnx", "pt2"), tmp_path / "exp", onnx_exporter=exporter,
                              skipped=skipped)
    assert set(paths) == {"eager", *scripted, "onnx"} | (set() if blocked else {"pt2"})
    assert set(skipped) == ({"pt2"} if blocked else set()), skipped
    assert OnnxPredictor(paths["onnx"]).meta["exporter"] == f"torch.onnx.export(dynamo={exporter == 'dynamo'})"
    import onnx

    assert "Sigmoid" not in {n.op_type for n in onnx.load(str(paths["onnx"])).graph.node}  # export.onnx_sigmoid
    # basic probes (two sizes, blank, real after blank) keep 16 architectures inside CI's time budget; the full
    # probe set runs on the light model above
    val = sorted((shapes_dir / "val").iterdir())
    eager = load_predictor(tmp_path / "exp" / "model.pt")
    first, second = (eager.predict(Image.open(p).convert("RGB")) for p in val[:2])
    assert len(first) and not np.array_equal(first.scores, second.scores), "outputs do not depend on the image"
    rc, report, out = check(tmp_path / "exp", str(val[0]), str(val[1]), probes="basic")
    assert rc == 0, out
    for exact in (*scripted, *(() if blocked else ("pt2",))):
        backend = report["backends"][exact]
        assert sum(r["matched"] for r in backend["images"]) > 0, out  # pairs were compared, so 0.0 means bit-exact
        assert backend["overall"]["max_box_diff_px"] == 0.0 and backend["overall"]["excused"] == 0, exact


def test_the_box_head_on_level_order_gives_the_same_rows_for_every_r_cnn():
    """``head_on_level_order`` (the ONNX graph's box branch): the same box features as the original pooler and head,
    for each kind of R-CNN box branch in the zoo (TwoMLPHead over 4 and 2 levels, the v2 models' conv head with
    BatchNorm, Keypoint R-CNN's); applied once, and only where the pooler has more than one level."""
    from export.wrappers import OnnxDetector, head_on_level_order

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 128, 160, generator=g)
    xy = torch.rand(300, 2, generator=g) * torch.tensor([150.0, 120.0])
    # 2 to 600 px: every level (torchvision's LevelMapper: level 0 under 112 px, the top one from 448 px)
    boxes = torch.cat([xy, xy + 2 + torch.rand(300, 2, generator=g) ** 2 * 600], dim=1)
    pyramids = 0
    for spec in map(get_spec, ("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                               "keypointrcnn_resnet50_fpn", "fasterrcnn_light")):
        torch.manual_seed(0)
        model, _ = build_model(spec.name, 4, ["circle", "square", "triangle"], min_size=128, max_size=160)
        model.eval()
        heads = OnnxDetector(model, spec.family_info.outputs).model.roi_heads
        pyramid = len(model.roi_heads.box_roi_pool.featmap_names) > 1
        assert type(heads.box_head).__name__.startswith("RoiOrder") == pyramid, spec.name
        assert not head_on_level_order(OnnxDetector(model, spec.family_info.outputs).model)  # never twice
        with torch.no_grad():
            features = model.backbone(image)
            features = {"0": features} if isinstance(features, torch.Tensor) else features  # as GeneralizedRCNN
            want = model.roi_heads.box_head(model.roi_heads.box_roi_pool(features, [boxes], [(128, 160)]))
            got = heads.box_head(heads.box_roi_pool(features, [boxes], [(128, 160)]))
        mapper = model.roi_heads.box_roi_pool.map_levels  # every level the pooler maps to holds RoIs
        assert len(mapper([boxes]).unique()) == int(mapper.k_max - mapper.k_min + 1), spec.name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=spec.name)
        pyramids += pyramid
    assert pyramids == 3  # all but fasterrcnn_light, whose pooler has one level


def test_a_pyramid_model_exports_through_dynamo_onnx_and_openvino_with_parity(shapes_dir, tmp_path):
    """A multi-level RoIAlign (FPN) through the dynamo exporter, the box head run on the pooled RoIs in level order
    (``export.wrappers.head_on_level_order``), detection by detection in ONNX Runtime and OpenVINO (the R50s' ONNX
    in the test above is the legacy one)."""
    ckpt = briefly_trained("maskrcnn_light", shapes_dir, tmp_path / "ckpt.pt", steps=6, fpn_channels=32)
    export_checkpoint(ckpt, ("onnx", "openvino"), tmp_path / "exp", onnx_exporter="dynamo")
    import onnx

    nodes = onnx.load(str(tmp_path / "exp" / "model.onnx")).graph.node
    assert "RoiAlign" in {n.op_type for n in nodes} and "ScatterND" not in {n.op_type for n in nodes}
    made_by = {out: n.name for n in nodes for out in n.output}
    # the box head runs on the levels' rows as pooled; its output rows are put back in RoI order
    assert any(n.op_type.startswith("Gather") and made_by.get(n.input[0], "").startswith("/model/roi_heads/box_head/")
               for n in nodes)
    val = sorted((shapes_dir / "val").iterdir())
    rc, report, out = check(tmp_path / "exp", str(val[0]), str(val[1]), probes="basic")
    assert rc == 0, out
    for backend in ("onnx", "openvino"):
        assert sum(r["matched"] for r in report["backends"][backend]["images"]) > 0, out


@pytest.mark.xfail(strict=True, raises=ExportError, reason="torch.export: " + BLOCKED_FAMILIES["keypoint_rcnn"])
def test_keypoint_rcnn_goes_through_torch_export():
    """Turns red (strict) the day torch.export traces Keypoint R-CNN: then drop it from BLOCKED_FAMILIES."""
    model, cfg = build_model("keypointrcnn_resnet50_fpn", 2, ["person"], min_size=128, max_size=160)
    export_program(model, cfg, attempt_blocked=True)


def test_export_cli_errors(tmp_path, capsys):
    rc = main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "checkpoint file not found" in capsys.readouterr().err
    rc = main(["check-export", str(tmp_path)])
    assert rc == 2 and "not an export folder" in capsys.readouterr().err


def test_export_refuses_a_too_full_disk_before_writing_and_keeps_the_previous_export(light_export, tmp_path,
                                                                                      monkeypatch, capsys):
    out = tmp_path / "exp"
    shutil.copytree(light_export, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12 - 10**6, 10**6))
    rc = main(["export", "--checkpoint", str(light_export / "model.pt"), "--out", str(out), "--format", "onnx"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{out}: not enough free disk space" in err and "1 MB free" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # manifest and files untouched


def test_shuffled_mask_predictor_computes_the_same_masks():
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    from export.wrappers import ShuffledMaskPredictor, fast_mask_predictor

    torch.manual_seed(0)
    original = MaskRCNNPredictor(16, 12, 5)
    rewritten = ShuffledMaskPredictor(original)
    x = torch.randn(7, 16, 14, 14)
    with torch.no_grad():
        assert torch.allclose(original(x), rewritten(x), atol=1e-5)
    model, _ = build_model("maskrcnn_light", 4)
    assert fast_mask_predictor(model) and isinstance(model.roi_heads.mask_predictor, ShuffledMaskPredictor)
    assert not fast_mask_predictor(build_model("fasterrcnn_light", 4)[0])  # no mask head: left alone


def test_weak_rpn_proposals_rank_as_in_eager(light_export, shapes_dir, tmp_path):
    """The RPN ranks proposals by sigmoid(objectness); ONNX Runtime's own Sigmoid is not monotonic below ~1e-5
    (``export.onnx_sigmoid``), so a model whose weak proposals have logits below -12 (a trained R50-FPN's do) kept
    other proposals and lost detections. Lowering every objectness logit by 15, in eager and in the exported
    file alike, puts this model's proposals there: eager's ranking is unchanged, and the file must rank the same.
    With the file's Sigmoid left as it was, 3 of these 4 images failed (10, 4 and 12 unmatched detections)."""
    import onnx

    proto = onnx.load(str(light_export / "model.onnx"))
    assert "Sigmoid" not in {n.op_type for n in proto.graph.node}
    conv = next(n for n in proto.graph.node if n.op_type == "Conv" and "/rpn/head/cls_logits/" in n.name)
    bias = next(i for i in proto.graph.initializer if i.name == conv.input[2])
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) - np.float32(15), bias.name))
    onnx.save(proto, str(tmp_path / "model.onnx"))
    eager = EagerPredictor.from_checkpoint(light_export / "model.pt")
    with torch.no_grad():
        eager.model.rpn.head.cls_logits.bias -= 15
    exported = OnnxPredictor(tmp_path / "model.onnx")
    from export.parity import Tolerances, compare

    for path in sorted((shapes_dir / "val").iterdir()):
        image = Image.open(path).convert("RGB")
        ref, got = eager.predict(image), exported.predict(image)
        report = compare(path.name, ref, got, Tolerances())
        assert len(ref) > 0 and report.passed, report.reasons


def _dets(boxes, scores, masks):
    from detdemo.inference.detections import Detections

    return Detections(np.array(boxes, np.float32), np.ones(len(boxes), np.int64), np.array(scores, np.float32),
                      ["a"], np.array(masks, np.float32) > 0.5)


def test_mask_iou_is_judged_on_boxes_wide_enough_to_paste_into():
    from export.parity import Tolerances, compare

    mask = np.zeros((2, 20, 20), np.float32)
    mask[0, 2:18, 2:18] = 0.9  # a 16x16 box
    mask[1, 5:15, 9:10] = 0.9  # a box 0.8 px wide: torchvision pastes it into one or two columns
    ref = _dets([[2, 2, 18, 18], [9, 5, 9.8, 15]], [0.9, 0.8], mask)
    moved = mask.copy()
    moved[1, 5:15, 10:11] = 0.9  # the thin mask lands one column over
    report = compare("p", ref, _dets(ref.boxes, ref.scores, moved), Tolerances())
    assert report.passed and report.masks_not_compared == 1 and report.mask_iou_min == 1.0
    broken = mask.copy()
    broken[0, 2:18, 2:6] = 0.0  # the wide mask loses a quarter: a real difference
    report = compare("p", ref, _dets(ref.boxes, ref.scores, broken), Tolerances())
    assert not report.passed and report.mask_iou_min == pytest.approx(0.75)


def test_score_threshold_before_pasting_gives_the_same_detections(light_export, shapes_dir):
    image = Image.open(sorted((shapes_dir / "val").iterdir())[0]).convert("RGB")
    for predictor in (EagerPredictor.from_checkpoint(light_export / "model.pt"),
                      OnnxPredictor(light_export / "model.onnx")):
        everything = predictor.predict(image)
        assert len(everything) >= 2, predictor.backend
        threshold = float(np.median(everything.scores))  # some detections on each side of it
        full, early = everything.filter(threshold), predictor.predict(image, score_threshold=threshold)
        assert 0 < len(early) == len(full) < len(everything), predictor.backend
        assert np.allclose(full.boxes, early.boxes, atol=1e-4) and np.allclose(full.scores, early.scores, atol=1e-6)
        assert np.array_equal(full.masks, early.masks) and np.abs(full.mask_probs - early.mask_probs).max() < 1e-4
