"""``detdemo predict``: annotated images and a COCO results JSON for an image or a folder, and for videos an
annotated video beside a per-frame detections JSON, with any model file."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from detdemo.commands.common import add_model_options, list_inputs

VIDEO_JSON_SUFFIX = ".detections.json"  # clip.mp4 -> clip.mp4 (annotated) + clip.detections.json


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="draw detections on images or videos and write their detections as JSON")
    add_model_options(p)
    p.add_argument("--input", required=True, help="an image, a video, or a folder of images and/or videos")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--no-masks", action="store_true", help="do not draw masks")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="videos: process every N-th frame (the annotated video plays at the clip's rate / N)")
    p.add_argument("--track", action="store_true",
                   help="videos: give each detection an id that stays with its object across frames (ByteTrack)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detdemo.errors import DetDemoError

    if not 0.0 <= args.score_threshold <= 1.0:
        raise DetDemoError(f"--score-threshold must be between 0 and 1, got {args.score_threshold}")
    if args.every < 1:
        raise DetDemoError(f"--every must be at least 1, got {args.every}")
    images, videos = list_inputs(Path(args.input))
    predictor = load_predictor(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index, failed = predict_images(predictor, images, out, args) if images else ([], [])
    done_videos = []
    for path in videos:
        try:
            done_videos.append(predict_video(predictor, path, out, args))
        except DetDemoError as exc:
            if len(videos) == 1 and not images:
                raise
            print(f"warning: skipped {exc}", file=sys.stderr)
            failed.append(str(path))
    if images:
        from detdemo.fileio import write_json

        categories = [{"id": i, "name": n} for i, n in enumerate(predictor.class_names, start=1)]
        write_json(out / "images.json", {"model": str(predictor.path), "backend": predictor.backend,
                                         "device": predictor.device, "images": index, "categories": categories,
                                         "videos": done_videos, "failed": failed})
        print(f"wrote {len(index)} annotated image(s), predictions.json and images.json to {out}")
    return 2 if failed and not index and not done_videos else 0


def load_predictor(args):
    from detdemo.commands.common import load_from_args

    return load_from_args(args)


def predict_images(predictor, images: list[Path], out: Path, args) -> tuple[list[dict], list[str]]:
    from detdemo.data.images import open_image
    from detdemo.engine.draw import draw_detections, image_to_tensor, to_pil
    from detdemo.engine.evaluate import detections_to_coco
    from detdemo.errors import DataError
    from detdemo.fileio import atomic_path, write_json

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
    return index, failed


def predict_video(predictor, path: Path, out: Path, args) -> dict:
    """One video: ``<out>/<stem>.mp4`` annotated and ``<out>/<stem>.detections.json``, both written as frames come
    and renamed into place at the end (an error or Ctrl-C leaves neither half-written)."""
    from tqdm import tqdm

    from detdemo.inference.video import (
        VideoOutputs,
        VideoReader,
        annotate,
        output_fps,
        output_head,
        output_tail,
        quiet_ffmpeg,
        run_pipeline,
    )

    quiet_ffmpeg()
    video_out, json_out = out / f"{path.stem}.mp4", out / f"{path.stem}{VIDEO_JSON_SUFFIX}"
    if video_out.resolve() == path.resolve():
        video_out = out / f"{path.stem}.annotated.mp4"
    with VideoReader(path) as reader:
        info = reader.info
        total = -(-info.frame_count // args.every) if info.frame_count else None
        bar = tqdm(total=total, unit="frame", desc=path.name, file=sys.stderr, dynamic_ncols=True)
        reader.on_bad_frame = lambda bad: bar.write(f"warning: {path.name}: {bad.describe()}", file=sys.stderr)
        head = output_head(info, predictor, every=args.every, score_threshold=args.score_threshold, track=args.track)
        try:
            with VideoOutputs(video_out, json_out, head, output_fps(info, args.every)) as outputs:
                def draw_and_write(result) -> None:  # on the pipeline's own thread, while the model runs on the next
                    outputs.add(result, annotate(result, masks=not args.no_masks))

                with contextlib.closing(run_pipeline(predictor, reader, draw_and_write, every=args.every,
                                                     score_threshold=args.score_threshold,
                                                     track=args.track)) as pipeline:
                    for _ in pipeline:
                        bar.update(1)
                outputs.finish(**output_tail(reader, outputs.frames))
        finally:
            bar.close()
        seen = reader.decoded + len(reader.bad_frames)
        if info.frame_count and seen < info.frame_count:
            print(f"warning: {path.name}: the clip ends early (truncated?): {seen} of the {info.frame_count} frames "
                  "its header states were read", file=sys.stderr)
    bad = f", {len(reader.bad_frames)} bad frame(s) skipped" if reader.bad_frames else ""
    print(f"{path.name}: {outputs.frames} frame(s) ({info.display}){bad} -> {video_out.name}, {json_out.name}")
    return {"file_name": str(path), "video": str(video_out), "detections": str(json_out), "frames": outputs.frames,
            "bad_frames": [b.index for b in reader.bad_frames]}
