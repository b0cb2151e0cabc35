from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

torch.set_num_threads(2)


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")
    return path


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A tiny synthetic dataset shared by the whole session (written once)."""
    from detdemo.data.shapes import ShapesConfig, generate_shapes

    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(out, train=8, val=4, seed=3, cfg=ShapesConfig(min_side=96, max_side=160, max_objects=4),
                    progress=False)
    return out
