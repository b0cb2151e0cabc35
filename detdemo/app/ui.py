"""The page: gr.Blocks wiring the catalogue and the predict function together.

The ``predict`` endpoint's name and argument order are a public API (``gradio_client`` users call
``client.predict(handle_file(path), model, backend, threshold, boxes, masks, labels, api_name="/predict")``),
so they change only with a major version.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from detdemo.app.catalogue import BACKEND_LABELS, Catalogue
from detdemo.app.predict import TABLE_COLUMNS, TIMING_COLUMNS, PredictRequest, run_prediction
from detdemo.app.upload import ImageUpload
from detdemo.errors import DetDemoError

API_NAME = "predict"
CACHE_CLEANUP = (3600, 3600)  # (every N seconds, files older than N seconds)


def _backend_choices(catalogue: Catalogue, model: str) -> tuple[list[tuple[str, str]], str]:
    entry = catalogue.entry(model)
    choices = [(entry.label(b), b) for b in BACKEND_LABELS if b in entry.backends]
    notes = [f"{BACKEND_LABELS[b]}: unavailable ({why})" for b, why in entry.missing.items()]
    info = f"**{entry.name}** — {entry.description}" + ("".join(f"\n- {n}" for n in notes) if notes else "")
    return choices, info


def build_demo(catalogue: Catalogue, examples: list[str] | None = None, default_backend: str | None = None,
               concurrency_limit: int = 1) -> gr.Blocks:
    first = catalogue.names[0]
    choices, info = _backend_choices(catalogue, first)
    values = [c[1] for c in choices]
    backend_value = default_backend if default_backend in values else values[0]

    def predict(image, model, backend, score_threshold, boxes, masks, labels):
        try:
            result = run_prediction(catalogue, PredictRequest(image, model, backend, score_threshold, boxes, masks,
                                                              labels))
        except DetDemoError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return result.image, result.rows, result.timings, result.summary

    def select_model(model):
        try:
            new_choices, new_info = _backend_choices(catalogue, model)
        except DetDemoError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        new_values = [c[1] for c in new_choices]
        return gr.Radio(choices=new_choices, value=new_values[0], interactive=len(new_values) > 1), new_info

    # Uploads and drawn results go to Gradio's cache: on a public Space they would fill the disk. Every hour, delete
    # files older than an hour.
    with gr.Blocks(title="detdemo", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown("# detdemo\nDetect and segment objects with a fine-tuned torchvision model, in eager "
                    "PyTorch, TorchScript or ONNX Runtime.")
        with gr.Row():
            with gr.Column():
                image = ImageUpload(type="filepath", label="Image", sources=["upload", "clipboard"], elem_id="upload")
                model = gr.Dropdown(catalogue.names, value=first, label="Model")
                model_info = gr.Markdown(info)
                backend = gr.Radio(choices, value=backend_value, label="Backend", interactive=len(values) > 1)
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Score threshold")
                with gr.Row():
                    boxes = gr.Checkbox(True, label="Boxes")
                    masks = gr.Checkbox(True, label="Masks")
                    labels = gr.Checkbox(True, label="Labels")
                run = gr.Button("Detect", variant="primary")
            with gr.Column():
                output = gr.Image(type="pil", label="Detections", format="png", interactive=False, elem_id="detections")
                summary = gr.Markdown(elem_id="summary")
                table = gr.Dataframe(headers=TABLE_COLUMNS, label="Detections (boxes in the uploaded image's pixels)",
                                     interactive=False)
                timings = gr.Dataframe(headers=TIMING_COLUMNS, label="Time per stage", interactive=False)
        if examples:
            gr.Examples([[e] for e in examples if Path(e).is_file()], inputs=[image], label="Examples",
                        cache_examples=False)
        model.change(select_model, [model], [backend, model_info], api_visibility="private")
        run.click(predict, [image, model, backend, threshold, boxes, masks, labels],
                  [output, table, timings, summary], api_name=API_NAME, concurrency_limit=concurrency_limit)
    return demo
