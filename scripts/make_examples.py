"""Write the bundled shapes model's examples into models/shapes/examples/: four synthetic shapes images.

    python scripts/make_examples.py

They come from a seed the bundled model never trained on (its data uses seed 0). The BCCD model's examples are
val images of BCCD, copied by scripts/build_bccd_model.sh.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from detdemo.data.shapes import generate_shapes

EXAMPLES = Path(__file__).resolve().parents[1] / "models" / "shapes" / "examples"


def main() -> None:
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        generate_shapes(tmp, train=0, val=4, seed=2026, progress=False)
        for i, src in enumerate(sorted((Path(tmp) / "val").glob("*.jpg")), 1):
            shutil.copyfile(src, EXAMPLES / f"shapes_{i}.jpg")
    print(f"wrote examples to {EXAMPLES}")


if __name__ == "__main__":
    main()
