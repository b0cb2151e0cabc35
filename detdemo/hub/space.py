"""A Hugging Face Space folder for one published model: README front matter, requirements, app entry, detdemo.

The Space holds no weights: its ``app.py`` loads the model repo by id at a pinned revision through the Hub cache,
so the model repo stays the one place the model is versioned. detdemo is not on PyPI, so its source is vendored
(the ``detdemo`` and ``export`` packages, Python files only) and the requirements name the libraries it needs,
pinned to the versions publishing ran with, CPU builds where there is a choice.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from packaging.requirements import Requirement

from detdemo.fileio import write_text
from detdemo.hub.card import ModelFacts

VENDORED = ("detdemo", "export")  # the project's packages, copied as source
CPU_BUILDS = {"onnxruntime-gpu": "onnxruntime"}  # a CPU Space installs the CPU wheel of these
UNPINNED = {"onnxruntime"}  # published separately from the GPU build we run: its own latest release
EXAMPLES = "examples"
SHORT_DESCRIPTION_MAX = 60  # the Hub refuses a Space whose short_description is longer
# Debian packages a Space installs from packages.txt: Gradio's streaming video output (the Video tab) muxes its
# segments with the ffmpeg and ffprobe programs; PyAV's own FFmpeg is a library and does not provide them.
SYSTEM_PACKAGES = ("ffmpeg",)


def requirements() -> list[str]:
    """detdemo's own dependencies (pyproject.toml, read through the installed metadata), pinned to what runs here."""
    lines = []
    for text in importlib.metadata.requires("detdemo") or []:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        name = CPU_BUILDS.get(req.name, req.name)
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        lines.append(f"{name}=={version}" if version and name not in UNPINNED else f"{name}{req.specifier}")
    return lines


def _vendor(target: Path) -> None:
    for package in VENDORED:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"cannot find the {package} package to vendor")
        source = Path(next(iter(spec.submodule_search_locations)))
        for file in source.rglob("*.py"):
            dest = target / package / file.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, dest)


APP = '''"""The Space's entry point (written by `detdemo publish`): detdemo's app serving {repo_id}, pinned.

DETDEMO_MODEL overrides the model (another repo id, USER/NAME@REVISION); GRADIO_SERVER_NAME/PORT the address.
"""

import os
import sys
from pathlib import Path

from detdemo.app.main import main

MODEL = "{reference}"

if __name__ == "__main__":
    examples = Path(__file__).resolve().parent / "{examples}"
    sys.exit(main(["--model", os.environ.get("DETDEMO_MODEL", MODEL), "--no-coco", "--no-bundled",
                   "--examples", str(examples)]))
'''


def front_matter(facts: ModelFacts, title: str) -> str:
    import gradio

    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (f"---\ntitle: {title}\nemoji: 🔍\ncolorFrom: indigo\ncolorTo: green\nsdk: gradio\n"
            f"sdk_version: {gradio.__version__}\npython_version: \"{py}\"\napp_file: app.py\npinned: false\n"
            f"license: {facts.license}\nmodels:\n  - {facts.repo_id}\n"
            f"short_description: {json.dumps(short_description(facts), ensure_ascii=False)}\n---\n")  # quoted: YAML


def short_description(facts: ModelFacts) -> str:
    """The Space's one-liner, within the Hub's 60 characters (a COCO file's description can be a sentence)."""
    text = f"{facts.arch} on {facts.dataset}, verified exports"
    return text if len(text) <= SHORT_DESCRIPTION_MAX else text[:SHORT_DESCRIPTION_MAX - 1].rstrip() + "…"


def stage_space(folder: str | Path, facts: ModelFacts, revision: str, examples: list[Path] | None = None) -> Path:
    """Write the Space into ``folder`` (emptied first) for ``facts.repo_id`` at ``revision``."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _vendor(folder)
    for image in examples or []:
        (folder / EXAMPLES).mkdir(exist_ok=True)
        shutil.copyfile(image, folder / EXAMPLES / image.name)
    reference = f"{facts.repo_id}@{revision}" if revision else facts.repo_id
    write_text(folder / "app.py", APP.format(repo_id=facts.repo_id, reference=reference, examples=EXAMPLES))
    write_text(folder / "requirements.txt",
               "# Installed by the Space before app.py runs. torch comes from PyPI; PyTorch's CPU wheel index\n"
               "# (--extra-index-url .../whl/cpu) makes a smaller image where it can be reached.\n"
               + "\n".join(requirements()) + "\n")
    write_text(folder / "packages.txt", "\n".join(SYSTEM_PACKAGES) + "\n")
    name = facts.repo_id.split("/")[-1]
    write_text(folder / "README.md", front_matter(facts, name) + f"""
# {name}

A live demo of [{facts.repo_id}](https://huggingface.co/{facts.repo_id}) (pinned at `{revision or 'main'}`):
{facts.arch} for {', '.join(facts.class_names)}. Upload an image and the boxes{' and masks' if facts.masks else ''}
appear; the model, its exported files and their verification reports live in the model repo.
""")
    return folder
