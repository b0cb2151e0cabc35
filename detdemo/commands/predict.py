"""``detdemo predict``: annotated images and a COCO results JSON for an image or a folder of images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="draw detections on images and write COCO-format results")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-masks", action="store_true", help="do not draw masks")
    p.set_defaults(func=run)


def list_images(path: Path) -> list[Path]:
    from detdemo.errors import DataError

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: input not found")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
    return images


def run(args: argparse.Namespace) -> int:
    import torch

    from detdemo.checkpoint import load_model
    from detdemo.data.images import open_image, pil_to_tensor_image
    from detdemo.engine.distributed import DistInfo, pick_device
    from detdemo.engine.draw import draw_detections, to_pil
    from detdemo.engine.evaluate import detections_to_coco
    from detdemo.errors import DataError

    device = pick_device(args.device, DistInfo())
    model, cfg = load_model(args.checkpoint, device)
    images = list_images(Path(args.input))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, index, failed = [], [], []
    cats = {i: i for i in range(1, cfg.num_classes)}
    for image_id, path in enumerate(images, start=1):
        try:
            pil = open_image(path)
        except DataError as exc:
            print(f"warning: skipped {exc}", file=sys.stderr)
            failed.append(str(path))
            continue
        image = pil_to_tensor_image(pil)
        with torch.inference_mode():
            det = model([image.to(device).float() / 255])[0]
        keep = det["scores"] >= args.score_threshold
        det = {k: v[keep].cpu() for k, v in det.items()}
        drawn = draw_detections(image, det, cfg.class_names, masks=not args.no_masks)
        to_pil(drawn).save(out / f"{path.stem}.png")
        results.extend(detections_to_coco(det, image_id, cats))
        index.append({"id": image_id, "file_name": str(path), "width": pil.width, "height": pil.height,
                      "detections": int(keep.sum())})
        print(f"{path.name}: {int(keep.sum())} detection(s)")
    (out / "predictions.json").write_text(json.dumps(results))
    categories = [{"id": i, "name": n} for i, n in enumerate(cfg.class_names, start=1)]
    (out / "images.json").write_text(json.dumps({"images": index, "categories": categories, "failed": failed},
                                                indent=2))
    print(f"wrote {len(index)} annotated image(s), predictions.json and images.json to {out}")
    if failed and not index:
        return 2
    return 0
