"""Write the app's example images into examples/: four synthetic shapes images and three BCCD photos.

    python scripts/make_examples.py [--bccd ../shared/data/BCCD]

The shapes images come from a seed the bundled model never trained on (its data uses seed 0). The BCCD photos
(MIT licence, see examples/README.md) show what the bundled model does on images unlike its training data.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from detdemo.data.shapes import generate_shapes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BCCD_PICKS = ("BloodImage_00008.jpg", "BloodImage_00148.jpg", "BloodImage_00283.jpg")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bccd", default=str(EXAMPLES.parents[1] / "shared" / "data" / "BCCD"))
    args = p.parse_args()
    EXAMPLES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        generate_shapes(tmp, train=0, val=4, seed=2026, progress=False)
        for i, src in enumerate(sorted((Path(tmp) / "val").glob("*.jpg")), 1):
            shutil.copyfile(src, EXAMPLES / f"shapes_{i}.jpg")
    for name in BCCD_PICKS:
        shutil.copyfile(Path(args.bccd) / "BCCD" / "JPEGImages" / name, EXAMPLES / f"bccd_{name}")
    print(f"wrote examples to {EXAMPLES}")


if __name__ == "__main__":
    main()
