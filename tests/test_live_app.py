"""The live app: detections on upload, redraws without the model, the webcam stream, the compare view, per-model
examples and parity-checked backends — directly, through gradio_client, and in a real browser (Debian's chromium
with a fake camera playing a clip written here)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detdemo.app.catalogue import (
    BCCD_MODEL_NAME,
    BUNDLED_MODEL_NAME,
    MODELS_DIR,
    Catalogue,
    ModelEntry,
    entry_from_path,
)
from detdemo.app.lineup import default_catalogue
from detdemo.app.predict import PredictRequest, SessionResults, View, detect, render, run_prediction
from detdemo.app.ui import API_NAME, build_demo, legend
from detdemo.engine.draw import class_colour
from detdemo.errors import DetDemoError
from tests.fakecam import write_y4m

SHAPES = MODELS_DIR / "shapes"
SHAPES_EXAMPLES = sorted((SHAPES / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return default_catalogue(None, include_coco=False)


def test_each_bundled_model_carries_its_own_examples(catalogue):
    shapes = catalogue.entry(BUNDLED_MODEL_NAME)
    assert shapes.examples and all(p.parent == SHAPES / "examples" for p in shapes.examples)
    assert BCCD_MODEL_NAME in catalogue.names, "the BCCD model must be bundled (scripts/build_bccd_model.sh)"
    bccd = catalogue.entry(BCCD_MODEL_NAME)
    assert bccd.examples and all(p.name.startswith("BloodImage_") for p in bccd.examples)
    assert not set(shapes.examples) & set(bccd.examples)


def test_bundled_bccd_model_is_small_and_finds_blood_cells_in_unseen_images(tmp_path):
    """Measured here on BCCD's val split through the bundled ONNX file, not read from its records."""
    from detdemo.cli import main
    from tests.conftest import shared

    folder = MODELS_DIR / "bccd"
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) <= 10 * 1024 * 1024
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["arch"] == "fasterrcnn_light" and manifest["class_names"] == ["Platelets", "RBC", "WBC"]
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(folder / "model.onnx"), "--data", str(shared("BCCD")), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stats"]["bbox"]["AP50"] >= 0.75, result["stats"]["bbox"]
    assert abs(result["stats"]["bbox"]["AP"] - manifest["metrics"]["bbox_AP"]) <= 0.002  # ONNX = the checkpoint
    assert min(result["per_class"]["bbox"].values()) > 0.2, result["per_class"]  # platelets found too


def test_render_from_the_raw_result_equals_a_fresh_run_at_every_threshold(catalogue):
    raw = detect(catalogue, str(SHAPES_EXAMPLES[0]), BUNDLED_MODEL_NAME, "onnxruntime")
    seen = set()
    for threshold in (0.1, 0.3, 0.5, 0.9):
        fresh = run_prediction(catalogue, PredictRequest(str(SHAPES_EXAMPLES[0]), BUNDLED_MODEL_NAME, "onnxruntime",
                                                         threshold))
        again = render(raw, View(threshold), redraw=True)
        assert again.rows == fresh.rows
        assert np.array_equal(np.asarray(again.image), np.asarray(fresh.image))
        seen.add(len(again.rows))
    assert len(seen) > 1  # the thresholds really changed what is shown


def test_class_filter_and_toggles_redraw_without_the_model(catalogue):
    raw = detect(catalogue, str(SHAPES_EXAMPLES[0]), BUNDLED_MODEL_NAME, "pytorch")
    calls = catalogue.model_calls
    everything = render(raw, View(0.1), redraw=True)
    names = {r[1] for r in everything.rows}
    assert len(names) >= 2
    keep = sorted(names)[:1]
    only = render(raw, View(0.1, classes=keep), redraw=True)
    assert only.rows and {r[1] for r in only.rows} == set(keep)
    bare = render(raw, View(0.1, boxes=False, masks=False, labels=False), redraw=True)
    assert np.array_equal(np.asarray(bare.image), np.asarray(raw.image))  # nothing drawn
    assert catalogue.model_calls == calls
    assert "without running the model" in only.summary


def test_session_results_are_bounded():
    store = SessionResults(capacity=3)
    for i in range(10):
        store.put(f"s{i}", object())
    assert len(store) == 3 and store.get("s0") is None and store.get("s9") is not None


def test_legend_lists_every_class_in_its_drawing_colour():
    html = legend(["circle", "square", "triangle"], {"square": 2})
    for label, name in enumerate(["circle", "square", "triangle"], start=1):
        r, g, b = class_colour(label)
        assert f"rgb({r},{g},{b})" in html and name in html
    assert "square (2)" in html and "circle (0)" in html


def test_a_backend_that_disagrees_with_pytorch_is_not_offered(tmp_path):
    """An 'ONNX' file from another model (the BCCD one) beside the shapes checkpoint fails the example check."""
    shapes = entry_from_path(SHAPES, "mixed")
    other = MODELS_DIR / "bccd"
    entry = ModelEntry("mixed", {"pytorch": SHAPES / "model.pt", "onnxruntime": other / "model.onnx",
                                 "pt2": SHAPES / "model.pt2"},
                       examples=shapes.examples)
    cat = Catalogue([entry])
    cat.verify("mixed")
    assert "onnxruntime" not in entry.backends and "failed the parity check" in entry.missing["onnxruntime"]
    assert "pt2" in entry.backends and "matches PyTorch" in entry.checked["pt2"]
    with pytest.raises(DetDemoError, match="failed the parity check"):
        cat.predictor("mixed", "onnxruntime")


# -- the running app -------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(catalogue):
    demo = build_demo(catalogue)
    port = _free_port()
    demo.queue(max_size=64).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                                   show_error=True, max_file_size="50mb")
    yield f"http://127.0.0.1:{port}/", catalogue
    demo.close()


def test_predict_api_keeps_its_name_arguments_and_outputs(live):
    from gradio_client import Client, handle_file

    url, catalogue = live
    client = Client(url, verbose=False, analytics_enabled=False)
    info = client.view_api(return_format="dict", print_info=False)
    assert list(info["named_endpoints"]) == [f"/{API_NAME}"]  # every other event is private
    params = [p["parameter_name"] for p in info["named_endpoints"][f"/{API_NAME}"]["parameters"]]
    assert params == ["image", "model", "backend", "score_threshold", "boxes", "masks", "labels"]
    result = client.predict(handle_file(str(SHAPES_EXAMPLES[0])), BUNDLED_MODEL_NAME, "onnxruntime", 0.5, True, True,
                            True, api_name=f"/{API_NAME}")
    assert len(result) == 4
    want = run_prediction(catalogue, PredictRequest(str(SHAPES_EXAMPLES[0]), BUNDLED_MODEL_NAME, "onnxruntime", 0.5))
    assert result[1]["data"] == want.rows


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium (apt) for the browser tests")
    pytest.skip("no chromium on this machine")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    clip = write_y4m(tmp_path_factory.mktemp("camera") / "clip.y4m", SHAPES_EXAMPLES)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=_chromium(), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}"])
        yield chromium
        chromium.close()


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    context.grant_permissions(["camera"])
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.locator("#upload").wait_for(timeout=60_000)
    return page


def _image_src(page, elem: str) -> str | None:
    return page.evaluate(f"() => {{ const i = document.querySelector('#{elem} img'); return i && i.complete && "
                         f"i.naturalWidth > 0 ? i.getAttribute('src') : null; }}")


def _wait_for_new_image(page, elem: str, old: str | None, timeout_s: float = 60) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        src = _image_src(page, elem)
        if src and src != old:
            return src
        time.sleep(0.05)
    raise AssertionError(f"#{elem} showed no new image in {timeout_s} s")


def _artifact(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("DETDEMO_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def test_upload_detects_at_once_and_the_slider_redraws_without_the_model(live, browser, tmp_path):
    url, catalogue = live
    page = _open(browser, url)
    calls = catalogue.model_calls
    page.locator("#upload input[type=file]").set_input_files(str(SHAPES_EXAMPLES[0]))  # no click on Detect
    first = _wait_for_new_image(page, "detections", None)
    page.locator("#summary").get_by_text("detection").wait_for(timeout=30_000)
    assert catalogue.model_calls == calls + 1
    for name in ("circle", "square", "triangle"):
        assert name in page.locator("#legend").inner_text()
    slider = page.locator("input[type=range]").first
    slider.focus()
    for _ in range(8):
        page.keyboard.press("ArrowLeft")  # 0.5 -> 0.1
    _wait_for_new_image(page, "detections", first)
    page.locator("#summary").get_by_text("without running the model").wait_for(timeout=30_000)
    assert catalogue.model_calls == calls + 1  # the redraw ran no model
    with page.expect_download(timeout=30_000) as download:
        page.locator("#download").click()
    results = json.loads(Path(download.value.path()).read_text())
    shown = int(page.locator("#summary strong").first.inner_text())
    assert len(results) == shown > 0 and {"image_id", "category_id", "bbox", "score"} <= set(results[0])
    _artifact(page, "live_upload.png", tmp_path)


def test_an_example_click_detects_with_that_models_own_examples(live, browser):
    url, catalogue = live
    page = _open(browser, url)
    calls = catalogue.model_calls
    page.locator("#examples button, #examples td, #examples .gallery-item").first.click()
    _wait_for_new_image(page, "detections", None)
    assert catalogue.model_calls >= calls + 1


def test_webcam_streams_detections_and_drops_frames_it_cannot_keep_up_with(live, browser, tmp_path):
    url, catalogue = live
    page = _open(browser, url)
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#camera").get_by_text("Record").click()
    _wait_for_new_image(page, "camera-detections", None)
    start, t0 = catalogue.model_calls, time.time()
    time.sleep(6)
    frames = catalogue.model_calls - start
    rate = frames / (time.time() - t0)
    assert frames >= 3, f"only {frames} webcam frames answered in 6 s"
    assert "frames/s" in page.locator("#fps").inner_text()
    _artifact(page, "live_webcam.png", tmp_path)
    page.locator("#camera").get_by_text("Stop").click()
    stopped = catalogue.model_calls
    time.sleep(3)
    # frames the model could not keep up with were dropped, not queued: nothing is left to process after Stop
    assert catalogue.model_calls - stopped <= 1, (catalogue.model_calls - stopped, rate)


def test_compare_view_draws_both_backends_and_the_matchers_figures(live, browser, tmp_path):
    url, _ = live
    page = _open(browser, url)
    page.locator("#upload input[type=file]").set_input_files(str(SHAPES_EXAMPLES[1]))
    _wait_for_new_image(page, "detections", None)
    page.locator("input[type=radio][value=onnxruntime]").check()  # its label carries the recorded ΔAP, if any
    page.get_by_role("tab", name="Compare backends").click()
    page.locator("#compare").click()
    _wait_for_new_image(page, "compare-image", None)
    page.locator("#compare-summary").get_by_text("PASS").wait_for(timeout=30_000)
    text = page.locator("#compare-summary").inner_text()
    assert "PyTorch vs ONNX Runtime" in text and "matched" in text
    _artifact(page, "live_compare.png", tmp_path)


def test_the_drawn_colours_do_not_depend_on_the_backend(catalogue):
    images = {}
    for backend in ("pytorch", "onnxruntime"):
        result = run_prediction(catalogue, PredictRequest(str(SHAPES_EXAMPLES[2]), BUNDLED_MODEL_NAME, backend, 0.5,
                                                          masks=False, labels=False))
        images[backend] = np.asarray(result.image).astype(int)
    assert np.abs(images["pytorch"] - images["onnxruntime"]).max() <= 1  # sub-pixel box noise at most
    assert Image.open(SHAPES_EXAMPLES[2]).size == (images["pytorch"].shape[1], images["pytorch"].shape[0])
