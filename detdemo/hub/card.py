"""The model card: ``huggingface_hub``'s ``ModelCard`` with metadata the Hub renders and indexes.

The front matter carries ``pipeline_tag``, ``library_name``, license, tags, the dataset and a ``model-index`` with
the val AP figures; the body says what the model is, shows its evaluation pictures (relative links to the repo's
``evaluation/``), how to run it three ways (detdemo, onnxruntime alone, gradio_client against the Space), and how
its exported files were verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LIBRARY_NAME = "detdemo"
PIPELINE_TAG = "object-detection"
METRIC_NAMES = {"bbox_AP": "box AP", "bbox_AP50": "box AP50", "bbox_AP75": "box AP75", "segm_AP": "mask AP",
                "segm_AP50": "mask AP50", "segm_AP75": "mask AP75"}


@dataclass
class ModelFacts:
    """What a card and a Space say about one model; gathered by ``export.publish`` from the export folder."""

    repo_id: str
    arch: str
    class_names: list[str]
    dataset: str  # a name people know it by (the training data folder's name)
    metrics: dict[str, float] = field(default_factory=dict)  # val figures: bbox_AP, segm_AP50, ...
    files: dict[str, str] = field(default_factory=dict)  # backend label -> file name in the repo
    verification: list[str] = field(default_factory=list)  # one line per check: parity and accuracy verdicts
    license: str = "bsd-3-clause"
    masks: bool = False
    space_id: str | None = None
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (file in the repo, caption): evaluation pictures
    runs_code: list[str] = field(default_factory=list)  # files whose loading runs code from the file (pt2, ...)


def _eval_results(facts: ModelFacts) -> list:
    from huggingface_hub import EvalResult

    return [EvalResult(task_type=PIPELINE_TAG, dataset_type=facts.dataset, dataset_name=facts.dataset,
                       dataset_split="validation", metric_type=key.lower(), metric_name=METRIC_NAMES[key],
                       metric_value=round(float(value), 4))
            for key, value in facts.metrics.items() if key in METRIC_NAMES and value is not None]


def _usage(facts: ModelFacts) -> str:
    onnx = facts.files.get("ONNX Runtime")
    lines = ["## Use it", "", "With detdemo (the safetensors weights; nothing is unpickled):", "", "```bash",
             f"detdemo predict --model {facts.repo_id} --input photo.jpg --out predictions", "```"]
    if onnx:
        lines += ["", "With onnxruntime alone (resize and normalise as `config.json`'s `preprocessing` says; the "
                  "graph takes one float CHW image and returns boxes, labels, scores" +
                  (", mask probabilities" if facts.masks else "") + "):", "", "```python",
                  "import onnxruntime as ort", "from huggingface_hub import hf_hub_download", "",
                  f"path = hf_hub_download({facts.repo_id!r}, {onnx!r})",
                  "session = ort.InferenceSession(path)",
                  "print([o.name for o in session.get_outputs()])", "```"]
    if facts.space_id:
        lines += ["", "Against the demo Space with `gradio_client`:", "", "```python",
                  "from gradio_client import Client, handle_file", "",
                  f"client = Client({facts.space_id!r})",
                  "image, table, timings, summary = client.predict(handle_file('photo.jpg'), "
                  f"{facts.repo_id.split('/')[-1]!r}, 'pytorch', 0.5, True, True, True, api_name='/predict')",
                  "```"]
    return "\n".join(lines)


def _runs_code(facts: ModelFacts) -> str:
    if not facts.runs_code:
        return ""
    names = ", ".join(f"`{name}`" for name in facts.runs_code)
    return (f"\nLoading {names} runs code from the file (PyTorch's loaders unpickle, evaluate or load native code): "
            "load them only if you trust this repository. detdemo fetches them only when their backend is asked for "
            "by name; the safetensors weights and the ONNX model run no code.\n")


def _pictures(facts: ModelFacts) -> str:
    if not facts.pictures:
        return ""
    from detdemo.engine.eval_pictures import GALLERY_STYLES, MODEL_EVALUATION, PICTURES_JSON

    shown = "\n\n".join(f"![{caption}]({file})\n*{caption}*" for file, caption in facts.pictures)
    return (f"## Evaluation pictures\n\nFrom the evaluation in `{MODEL_EVALUATION}` (the numbers behind the "
            f"pictures: `{Path(facts.pictures[0][0]).parent}/{PICTURES_JSON}`). The gallery shows the validation "
            f"images with the most mistakes: {GALLERY_STYLES}.\n\n" + shown + "\n")


def model_card(facts: ModelFacts):
    """The card as a ``huggingface_hub.ModelCard`` (``.save(path)`` writes README.md)."""
    from huggingface_hub import ModelCard, ModelCardData

    name = facts.repo_id.split("/")[-1]
    tags = [LIBRARY_NAME, "torchvision", "object-detection", facts.arch, "onnx", "safetensors"]
    if facts.masks:
        tags.append("instance-segmentation")
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG, license=facts.license, tags=tags,
                         datasets=[facts.dataset], model_name=name, eval_results=_eval_results(facts) or None)
    figures = "\n".join(f"| {METRIC_NAMES[k]} | {v:.3f} |" for k, v in facts.metrics.items() if k in METRIC_NAMES)
    files = "\n".join(f"| {label} | `{file}` |" for label, file in facts.files.items())
    checks = "\n".join(f"- {line}" for line in facts.verification) or "- not checked"
    body = f"""
# {name}

A torchvision `{facts.arch}` {'instance-segmentation' if facts.masks else 'object-detection'} model for
{len(facts.class_names)} classes ({', '.join(facts.class_names)}), trained on **{facts.dataset}** with detdemo
(`pip install` it from its repository; it fine-tunes, exports and verifies torchvision detectors).

## Validation figures

| metric | value |
| --- | --- |
{figures or '| (none recorded) | |'}

{_pictures(facts)}
## Files

| runtime | file |
| --- | --- |
{files}

`config.json` holds the architecture, classes, model options and preprocessing; `export.json` lists the files and
their verified figures.
{_runs_code(facts)}
## Verification

Every exported file was compared with the PyTorch model before publishing (reports: `parity.md`, `accuracy.md`):

{checks}

{_usage(facts)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_card(facts: ModelFacts, folder: str | Path) -> Path:
    from detdemo.fileio import write_text

    return write_text(Path(folder) / "README.md", str(model_card(facts)))
