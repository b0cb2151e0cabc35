"""The page: gr.Blocks wiring the catalogue, the prediction halves (detect, render) and the compare view together.

Live: an upload or an example click detects at once; the threshold, the box/mask/label toggles and the class filter
redraw from the session's last raw detections (``SessionResults``) without running the model; a webcam tab
streams frames through the chosen backend; a compare tab shows PyTorch against an exported backend.

The ``predict`` endpoint's name, argument order and outputs are a public API (``gradio_client`` users call
``client.predict(handle_file(path), model, backend, threshold, boxes, masks, labels, api_name="/predict")`` and
get ``(image, table, timings, summary)``), so they change only with a major version. Every other event is private.
"""

from __future__ import annotations

import html
import re
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from detdemo.app.catalogue import BACKEND_LABELS, Catalogue
from detdemo.app.compare import COMPARE_COLUMNS, compare_backends
from detdemo.app.model_tab import model_page, servable
from detdemo.app.predict import (
    TIMING_COLUMNS,
    PredictResult,
    Raw,
    SessionResults,
    View,
    detect,
    render,
    table_columns,
)
from detdemo.app.upload import ImageUpload
from detdemo.app.webcam import FrameRate
from detdemo.engine.draw import class_colour
from detdemo.errors import DetDemoError

API_NAME = "predict"
CACHE_CLEANUP = (3600, 3600)  # (every N seconds, files older than N seconds)
WEBCAM_EVERY_S = 0.1  # the browser sends a frame this often; frames that arrive while the model runs are dropped
WEBCAM_TIME_LIMIT_S = 120  # one visitor's stream may hold the model this long, then others get their turn
PRIVATE = {"api_visibility": "private"}
# Each session's drawn image and COCO file, overwritten in place (Gradio copies them into its own cache): PNG at
# zlib level 1 takes a fifth of the default level's time, which is most of a redraw's cost on a 640x480 image.
OUTPUT_DIR = Path(tempfile.gettempdir()) / "detdemo-app"


def _session_dir(session: str) -> Path:
    return OUTPUT_DIR / (re.sub(r"[^A-Za-z0-9_-]", "", session)[:64] or "api")


def _drop_session_files(session: str) -> None:
    shutil.rmtree(_session_dir(session), ignore_errors=True)


def _png(image, session: str) -> str:
    from detdemo.fileio import atomic_path

    path = _session_dir(session) / "detections.png"
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
    return str(path)


def _backend_choices(catalogue: Catalogue, model: str) -> tuple[list[tuple[str, str]], str]:
    catalogue.verify(model)  # withdraws an exported backend that disagrees with PyTorch on the examples
    entry = catalogue.entry(model)
    choices = [(entry.label(b), b) for b in BACKEND_LABELS if b in entry.backends]
    notes = [f"{BACKEND_LABELS[b]}: unavailable ({why})" for b, why in entry.missing.items()]
    notes += [f"{BACKEND_LABELS[b]}: {what}" for b, what in entry.checked.items()]
    info = f"**{entry.name}** — {entry.description}" + ("".join(f"\n- {n}" for n in notes) if notes else "")
    return choices, info


def legend(class_names: list[str], counts: dict[str, int] | None = None) -> str:
    """Every class of the model with the colour it is drawn in (by label, so the same on every backend)."""
    items = []
    for label, name in enumerate(class_names, start=1):
        r, g, b = class_colour(label)
        count = f" ({counts.get(name, 0)})" if counts is not None else ""
        items.append(f'<span class="legend-item" style="margin-right:1em;white-space:nowrap">'
                     f'<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb({r},{g},{b});'
                     f'border-radius:2px;margin-right:0.3em;vertical-align:middle"></span>{html.escape(name)}{count}'
                     "</span>")
    return f'<div id="legend">{"".join(items)}</div>'


def _coco_file(result: PredictResult, raw: Raw, session: str) -> str | None:
    """The shown detections as COCO results JSON (boxes in the uploaded image's pixels), in Gradio's cache."""
    from detdemo.engine.evaluate import detections_to_coco
    from detdemo.fileio import write_json

    det = result.shown
    if det is None:
        return None
    cats = {i: i for i in range(1, len(det.class_names) + 1)}
    if raw.scale == 1.0:
        entries = detections_to_coco(det, 1, cats)
    else:  # a scaled-down large photo: boxes mapped back; masks are at inference size, so left out
        entries = [{"image_id": 1, "category_id": int(label), "bbox": [x0 / raw.scale, y0 / raw.scale,
                                                                       (x1 - x0) / raw.scale, (y1 - y0) / raw.scale],
                    "score": float(score)} for (x0, y0, x1, y1), label, score in
                   zip(det.boxes.tolist(), det.labels.tolist(), det.scores.tolist())]
    return str(write_json(_session_dir(session) / "detections.coco.json", entries, indent=None))


def video_tab(catalogue: Catalogue, model, backend, threshold, boxes, masks, labels, classes,
              concurrency_limit: int) -> None:
    """The Video tab (inside ``build_demo``'s tabs): a clip in, annotated segments streamed back while the rest is
    processed (``app.video.stream_video``), frames per second, then the annotated MP4 and its JSON to download.
    Stop cancels the run, which frees the model (the event shares the "model" concurrency id)."""
    from detdemo.app.video import LIMITS_TEXT, stream_video

    gr.Markdown("Upload a clip: annotated frames stream back while the rest is still processed, then the annotated "
                f"video and its per-frame detections (JSON) can be downloaded. **Limits:** {LIMITS_TEXT}")
    with gr.Row():
        with gr.Column():
            clip = gr.Video(sources=["upload"], label="Clip", format=None, include_audio=True, elem_id="video-in")
            with gr.Row():
                track = gr.Checkbox(False, label="Track ids (ByteTrack)", elem_id="video-track")
                every = gr.Slider(1, 10, value=1, step=1, label="Every N-th frame", elem_id="video-every")
            with gr.Row():
                start = gr.Button("Detect on video", variant="primary", elem_id="video-run")
                stop = gr.Button("Stop", variant="stop", elem_id="video-stop")
        with gr.Column():
            stream = gr.Video(streaming=True, autoplay=True, label="Detections", interactive=False,
                              elem_id="video-out")
            status = gr.Markdown(elem_id="video-status")
            with gr.Row():
                video_file = gr.DownloadButton("Download annotated video", visible=False, elem_id="video-download")
                json_file = gr.DownloadButton("Download detections (JSON)", visible=False, elem_id="video-json")

    def run(path, model_name, backend_name, score_threshold, show_boxes, show_masks, show_labels, shown_classes,
            tracking, step, request: gr.Request = None):
        key = getattr(request, "session_hash", None) or "api"
        hidden = gr.DownloadButton(visible=False)
        yield None, "Starting…", hidden, hidden
        try:
            for update in stream_video(catalogue, path, model_name, backend_name, score_threshold=score_threshold,
                                       track=tracking, every=int(step), masks=show_masks, boxes=show_boxes,
                                       labels=show_labels, classes=shown_classes,
                                       out_dir=_session_dir(key) / "video"):
                if update.done:
                    yield (gr.skip(), update.status, gr.DownloadButton(value=update.video, visible=True),
                           gr.DownloadButton(value=update.json, visible=True))
                else:
                    yield update.segment or gr.skip(), update.status, gr.skip(), gr.skip()
        except DetDemoError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    event = start.click(run, [clip, model, backend, threshold, boxes, masks, labels, classes, track, every],
                        [stream, status, video_file, json_file], concurrency_limit=concurrency_limit,
                        concurrency_id="model", **PRIVATE)
    stop.click(None, None, None, cancels=[event], **PRIVATE)


def build_demo(catalogue: Catalogue, default_backend: str | None = None, concurrency_limit: int = 1) -> gr.Blocks:
    first = catalogue.default
    choices, info = _backend_choices(catalogue, first)
    values = [c[1] for c in choices]
    backend_value = default_backend if default_backend in values else values[0]
    results = SessionResults(on_evict=_drop_session_files)
    rates: dict[str, FrameRate] = {}

    def fail(exc: DetDemoError):
        raise gr.Error(str(exc), print_exception=False) from None

    def session(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "api"

    def shown(result: PredictResult, raw: Raw, key: str):
        """The outputs of a live event: drawing, table, timings, summary, legend with counts, COCO download."""
        counts: dict[str, int] = {}
        for name in result.shown.names():
            counts[name] = counts.get(name, 0) + 1
        return (_png(result.image, key), result.table, result.timings, result.summary,
                legend(raw.det.class_names, counts),
                gr.DownloadButton(value=_coco_file(result, raw, key), visible=True))

    def predict(image, model, backend, score_threshold, boxes, masks, labels, request: gr.Request = None):
        """The public API: one model run at this threshold (and the session's raw result, for redraws)."""
        try:
            raw = detect(catalogue, image, model, backend)
            result = render(raw, View(score_threshold, boxes, masks, labels))
        except DetDemoError as exc:
            fail(exc)
        results.put(session(request), raw)
        return _png(result.image, session(request)), result.table, result.timings, result.summary

    def live(image, model, backend, score_threshold, boxes, masks, labels, classes, request: gr.Request):
        """Upload, example, model or backend change: run the model, keep the raw result, draw the view."""
        key = session(request)
        if image is None:
            results.drop(key)
            _drop_session_files(key)
            return None, None, None, "", legend(catalogue.class_names(model)), gr.DownloadButton(visible=False)
        try:
            raw = detect(catalogue, image, model, backend)
            result = render(raw, View(score_threshold, boxes, masks, labels, classes))
        except DetDemoError as exc:
            fail(exc)
        results.put(key, raw)
        return shown(result, raw, key)

    def redraw(score_threshold, boxes, masks, labels, classes, request: gr.Request):
        """Threshold, toggles or class filter changed: draw the last raw result again; the model does not run."""
        key = session(request)
        raw = results.get(key)
        if raw is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            result = render(raw, View(score_threshold, boxes, masks, labels, classes), redraw=True)
        except DetDemoError as exc:
            fail(exc)
        return shown(result, raw, key)

    def select_model(model):
        try:
            new_choices, new_info = _backend_choices(catalogue, model)
        except DetDemoError as exc:
            fail(exc)
        new_values = [c[1] for c in new_choices]
        names = catalogue.class_names(model)
        samples = [[str(p)] for p in catalogue.entry(model).examples]
        with_masks = catalogue.has_masks(model)  # a box-only model shows neither the toggle nor a mask column
        return (gr.Radio(choices=new_choices, value=new_values[0], interactive=len(new_values) > 1), new_info,
                gr.CheckboxGroup(choices=names, value=names), legend(names), gr.Dataset(samples=samples),
                gr.Checkbox(visible=with_masks), {"headers": table_columns(with_masks), "data": []})

    def webcam(frame, model, backend, score_threshold, boxes, masks, labels, classes, request: gr.Request):
        """One camera frame through the chosen backend. Gradio runs one frame per session at a time
        (concurrency 1), and frames the browser captures while the model runs are not queued (browser-tested)."""
        if frame is None:
            return gr.skip(), gr.skip()
        key = session(request)
        meter = rates.setdefault(key, FrameRate())
        try:
            raw = detect(catalogue, frame, model, backend)
            result = render(raw, View(score_threshold, boxes, masks, labels, classes))
        except DetDemoError as exc:
            fail(exc)
        fps = meter.tick()
        if len(rates) > 64:  # bounded: forget the oldest sessions' meters
            rates.pop(next(iter(rates)))
        return result.image, (f"**{fps:.1f} frames/s** through {BACKEND_LABELS[backend]} "
                              f"({len(result.shown)} detections, model {raw.stages.get('model', 0) * 1000:.0f} ms)")

    def compare_view(model, backend, score_threshold, masks, labels, request: gr.Request):
        raw = results.get(session(request))
        if raw is None or raw.model != model:
            fail(DetDemoError("Upload an image (or pick an example) first: the comparison runs on it."))
        try:
            comparison = compare_backends(catalogue, raw, backend, View(score_threshold, True, masks, labels))
        except DetDemoError as exc:
            fail(exc)
        return comparison.image, comparison.rows, comparison.summary

    def show_model(model):
        """The Model tab: the chosen model's evaluation pictures and reports, read from its folder."""
        try:
            page = model_page(catalogue.entry(model))
        except DetDemoError as exc:
            fail(exc)
        return page.figures, servable(page), page.reports

    names = catalogue.class_names(first)
    with_masks = catalogue.has_masks(first)
    # Uploads and drawn results go to Gradio's cache: on a public Space they would fill the disk. Every hour, delete
    # files older than an hour.
    with gr.Blocks(title="detdemo", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown("# detdemo\nDetect and segment objects with a fine-tuned torchvision model, in eager "
                    "PyTorch or its verified exports. Detections appear as soon as an image is uploaded; the "
                    "threshold and toggles redraw without running the model again.")
        if catalogue.guide:
            gr.Markdown(catalogue.guide, elem_id="guide")
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(catalogue.names, value=first, label="Model")
                model_info = gr.Markdown(info)
                backend = gr.Radio(choices, value=backend_value, label="Backend", interactive=len(values) > 1)
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Score threshold")
                with gr.Row():
                    boxes = gr.Checkbox(True, label="Boxes")
                    masks = gr.Checkbox(True, label="Masks", visible=with_masks)
                    labels = gr.Checkbox(True, label="Labels")
                classes = gr.CheckboxGroup(names, value=names, label="Classes shown", elem_id="classes")
            with gr.Column(scale=2):
                with gr.Tab("Image", id="image-tab"):
                    with gr.Row():
                        with gr.Column():
                            image = ImageUpload(type="filepath", label="Image", sources=["upload", "clipboard"],
                                                elem_id="upload")
                            examples = gr.Dataset(components=[gr.Image(visible=False, type="filepath")],
                                                  samples=[[str(p)] for p in catalogue.entry(first).examples],
                                                  label="Examples (this model's own)", elem_id="examples")
                            run = gr.Button("Detect", variant="primary")
                        with gr.Column():
                            output = gr.Image(type="pil", label="Detections", format="png", interactive=False,
                                              elem_id="detections")
                            legend_html = gr.HTML(legend(names))
                            summary = gr.Markdown(elem_id="summary")
                            download = gr.DownloadButton("Download detections (COCO results JSON)", visible=False,
                                                         elem_id="download")
                    table = gr.Dataframe(headers=table_columns(with_masks), interactive=False,
                                         label="Detections (boxes in the uploaded image's pixels)")
                    timings = gr.Dataframe(headers=TIMING_COLUMNS, label="Time per stage", interactive=False)
                with gr.Tab("Webcam", id="webcam-tab"):
                    gr.Markdown("Your camera's frames go through the chosen model and backend; frames that arrive "
                                "while the model is busy are dropped, never queued.")
                    with gr.Row():
                        camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera",
                                          elem_id="camera")
                        camera_out = gr.Image(type="pil", format="jpeg", label="Detections", interactive=False,
                                              elem_id="camera-detections")
                    fps = gr.Markdown(elem_id="fps")
                with gr.Tab("Video", id="video-tab"):
                    video_tab(catalogue, model, backend, threshold, boxes, masks, labels, classes, concurrency_limit)
                with gr.Tab("Compare backends", id="compare-tab"):
                    gr.Markdown("PyTorch and the chosen exported backend on the uploaded image, matched by the "
                                "parity checker: agreed detections in class colours, **red** only in the exported "
                                "backend, **magenta** only in PyTorch.")
                    compare = gr.Button("Compare with PyTorch", elem_id="compare")
                    compare_image = gr.Image(type="pil", format="png", label="Comparison", interactive=False,
                                             elem_id="compare-image")
                    compare_summary = gr.Markdown(elem_id="compare-summary")
                    compare_table = gr.Dataframe(headers=COMPARE_COLUMNS, interactive=False, label="Per-image figures")
                with gr.Tab("Model", id="model-tab"):
                    page = model_page(catalogue.entry(first))
                    model_figures = gr.Markdown(page.figures, elem_id="model-figures")
                    model_pictures = gr.Gallery(servable(page), label="Evaluation pictures", columns=3,
                                                object_fit="contain", height="auto", elem_id="model-pictures")
                    model_reports = gr.Markdown(page.reports, elem_id="model-reports")

        view = [threshold, boxes, masks, labels, classes]
        shown_outputs = [output, table, timings, summary, legend_html, download]
        model_run = {"concurrency_limit": concurrency_limit, "concurrency_id": "model", **PRIVATE}
        live_inputs = [image, model, backend, *view]
        run.click(predict, [image, model, backend, threshold, boxes, masks, labels], [output, table, timings, summary],
                  api_name=API_NAME, concurrency_limit=concurrency_limit, concurrency_id="model")
        image.change(live, live_inputs, shown_outputs, **model_run)
        examples.click(lambda sample: sample[0], [examples], [image], **PRIVATE)
        for control in (boxes, masks, labels, classes):
            control.change(redraw, view, shown_outputs, concurrency_limit=None, **PRIVATE)
        threshold.change(redraw, view, shown_outputs, concurrency_limit=None, trigger_mode="always_last", **PRIVATE)
        model.change(select_model, [model], [backend, model_info, classes, legend_html, examples, masks, table],
                     **PRIVATE) \
            .then(live, live_inputs, shown_outputs, **model_run)
        backend.input(live, live_inputs, shown_outputs, **model_run)
        camera.stream(webcam, [camera, model, backend, *view], [camera_out, fps], stream_every=WEBCAM_EVERY_S,
                      time_limit=WEBCAM_TIME_LIMIT_S, concurrency_limit=concurrency_limit,
                      **PRIVATE)
        compare.click(compare_view, [model, backend, threshold, masks, labels],
                      [compare_image, compare_table, compare_summary], **model_run)
        model.change(show_model, [model], [model_figures, model_pictures, model_reports], **PRIVATE)
    return demo
