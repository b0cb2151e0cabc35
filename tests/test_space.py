"""The repository is a Hugging Face Space: README front matter, requirements.txt and the two set-up commands."""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

# pyproject dependencies that requirements.txt handles differently, and why
SPACE_ONLY = {"gradio": "installed by the Space from sdk_version", "onnxruntime-gpu": "CPU Space: onnxruntime"}


def front_matter() -> dict:
    text = (REPO / "README.md").read_text()
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_front_matter_describes_a_gradio_space():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and (REPO / meta["app_file"]).is_file()
    deps = {Requirement(d).name: Requirement(d) for d in pyproject()["project"]["dependencies"]}
    assert Version(meta["sdk_version"]) in deps["gradio"].specifier  # the Space runs the Gradio we support
    requires = pyproject()["project"]["requires-python"]
    assert Version(str(meta["python_version"])) >= Version(requires.lstrip(">="))


def test_requirements_cover_the_runtime_dependencies():
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = {Requirement(ln).name: Requirement(ln) for ln in lines if ln and not ln.startswith(("#", "-"))}
    assert any(ln.startswith("--extra-index-url https://download.pytorch.org/whl/cpu") for ln in lines)
    for dep in map(Requirement, pyproject()["project"]["dependencies"]):
        if dep.name in SPACE_ONLY:
            continue
        assert dep.name in reqs, f"requirements.txt lacks {dep.name}"
        assert reqs[dep.name].specifier == dep.specifier, dep.name
    assert "onnxruntime" in reqs and "gradio" not in reqs


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    for marker, tail in (("app-command", "app.py"), ("test-command", "pytest -q")):
        block = readme.split(f"<!-- {marker} -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
        assert block.startswith("python3 -m venv .venv") and block.endswith(tail), block
    assert "test-command" in (REPO / ".ci" / "run").read_text()


def test_python_version_is_supported_here():
    assert sys.version_info >= (3, 10)


def test_missing_shared_data_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    import tests.conftest as conftest

    monkeypatch.setattr(conftest, "SHARED", tmp_path / "no-shared-here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run with ../shared beside the checkout"):
        conftest.shared("coco128")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        conftest.shared("coco128")


def test_the_space_installs_ffmpeg_for_the_streaming_video_output():
    from detdemo.hub.space import SYSTEM_PACKAGES

    # Gradio's streaming video output (the Video tab) runs the ffmpeg/ffprobe programs; a Space apt-installs
    # packages.txt; published Spaces get the same file (detdemo.hub.space.stage_space)
    assert "ffmpeg" in SYSTEM_PACKAGES
    assert (REPO / "packages.txt").read_text().split() == list(SYSTEM_PACKAGES)
