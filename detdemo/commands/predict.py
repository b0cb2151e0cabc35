"""``detdemo predict``: annotated images and a COCO results JSON for an image or a folder, with any model file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detdemo.commands.common import add_model_options, list_images


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="draw detections on images and write COCO-format results")
    add_model_options(p)
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--no-masks", action="store_true", help="do not draw masks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detdemo.commands.common import load_from_args
    from detdemo.data.images import open_image
    from detdemo.engine.draw import draw_detections, image_to_tensor, to_pil
    from detdemo.engine.evaluate import detections_to_coco
    from detdemo.errors import DataError, DetDemoError
    from detdemo.fileio import atomic_path, write_json

    if not 0.0 <= args.score_threshold <= 1.0:
        raise DetDemoError(f"--score-threshold must be between 0 and 1, got {args.score_threshold}")
    predictor = load_from_args(args)
    images = list_images(Path(args.input))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, index, failed = [], [], []
    cats = {i: i for i in range(1, len(predictor.class_names) + 1)}
    for image_id, path in enumerate(images, start=1):
        try:
            pil = open_image(path)
        except DataError as exc:
            print(f"warning: skipped {exc}", file=sys.stderr)
            failed.append(str(path))
            continue
        det = predictor.predict(pil, score_threshold=args.score_threshold)
        drawn = to_pil(draw_detections(image_to_tensor(pil), det, masks=not args.no_masks))
        with atomic_path(out / f"{path.stem}.png") as tmp:
            drawn.save(tmp, format="PNG")
        results.extend(detections_to_coco(det, image_id, cats))
        index.append({"id": image_id, "file_name": str(path), "width": pil.width, "height": pil.height,
                      "detections": len(det)})
        print(f"{path.name}: {len(det)} detection(s)")
        del det, drawn, pil
    write_json(out / "predictions.json", results, indent=None)
    categories = [{"id": i, "name": n} for i, n in enumerate(predictor.class_names, start=1)]
    write_json(out / "images.json", {"model": str(predictor.path), "backend": predictor.backend,
                                     "device": predictor.device, "images": index, "categories": categories,
                                     "failed": failed})
    print(f"wrote {len(index)} annotated image(s), predictions.json and images.json to {out}")
    if failed and not index:
        return 2
    return 0
