from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

torch.set_num_threads(2)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared(*parts: str) -> Path:
    """A path under ../shared/data. Missing: a skip on a developer's machine, a failure in CI (CI=true), where a
    silently skipped real-data test would let the run pass without the checks it exists for."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"shared test data not found at {path}"
        if in_ci():
            pytest.fail(f"{message}: CI must run with ../shared beside the checkout", pytrace=False)
        pytest.skip(message)
    return path


def bundled_like_shapes(out: Path, train: int, val: int, seed: int) -> Path:
    """Generated shapes at the bundled shapes model's own scale (240-320 px): images it can be judged on."""
    from detdemo.data.shapes import ShapesConfig, generate_shapes

    generate_shapes(out, train=train, val=val, seed=seed, cfg=ShapesConfig(min_side=240, max_side=320), progress=False)
    return out


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A tiny synthetic dataset shared by the whole session (written once)."""
    from detdemo.data.shapes import ShapesConfig, generate_shapes

    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(out, train=8, val=4, seed=3, cfg=ShapesConfig(min_side=96, max_side=160, max_objects=4),
                    progress=False)
    return out


@pytest.fixture(scope="session")
def bundled_aoti(tmp_path_factory) -> Path:
    """An export folder of the bundled shapes model with its AOTInductor package: compiled once (about 30 s of g++)
    for the AOTInductor test and the mutation suite."""
    from export.exporters import export_checkpoint

    folder = tmp_path_factory.mktemp("bundled_aoti")
    export_checkpoint(REPO / "models" / "shapes" / "model.pt", ("aoti",), folder)
    return folder


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch cache and no network: the COCO model can neither be read nor downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return attempts
