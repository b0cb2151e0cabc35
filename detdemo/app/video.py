"""The Video tab's work, without any Gradio: a clip in, annotated segments out while the rest is still processed.

``stream_video`` is a generator: every ``SEGMENT_S`` seconds of clip it closes a short MPEG-TS segment of annotated
frames (H.264, what Gradio's streaming video output plays as it arrives) and yields it with the frames per second so
far; at the end it yields the whole annotated MP4 and its per-frame JSON for download. Closing the generator (the
page's Stop, a visitor leaving) ends it at once: the reader is closed, the unfinished outputs are deleted (they are
written through ``fileio``'s temporary files), and the model is free for the next visitor.

Limits, stated on the page: clips up to ``MAX_DURATION_S`` seconds; frames larger than ``MAX_SIDE`` on their longest
side are scaled down (for inference and for the annotated video; the JSON's boxes are mapped back to the clip's own
pixels). Both keep one visitor's turn on a shared CPU bounded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from detdemo.app.catalogue import BACKEND_LABELS, Catalogue
from detdemo.app.webcam import FrameRate
from detdemo.errors import DetDemoError

MAX_DURATION_S = 60.0
MAX_SIDE = 1280
SEGMENT_S = 1.0  # clip time per streamed segment: the first one reaches the page after about this much clip
KEEP_SEGMENTS = 3  # older segment files are deleted (Gradio has read them by then)
LIMITS_TEXT = (f"Clips up to {MAX_DURATION_S:.0f} s; frames larger than {MAX_SIDE} px on their longest side are "
               f"scaled down to {MAX_SIDE} px (the JSON's boxes stay in the clip's own pixels).")


@dataclass
class VideoUpdate:
    """One step of the stream: the newest segment (None when there is none yet), the status line, and at the end the
    annotated MP4 and its JSON."""

    segment: str | None
    status: str
    video: str | None = None
    json: str | None = None
    done: bool = False


def _check(info) -> None:
    if info.duration_s > MAX_DURATION_S:
        raise DetDemoError(f"'{info.path.name}' is {info.duration_s:.0f} s long; this page takes clips up to "
                           f"{MAX_DURATION_S:.0f} s (use `detdemo predict --input` for longer ones)")


def stream_video(catalogue: Catalogue, path: str | Path | None, model: str, backend: str, *,
                 score_threshold: float = 0.5, track: bool = False, every: int = 1, masks: bool = True,
                 boxes: bool = True, labels: bool = True, classes: list[str] | None = None,
                 out_dir: Path) -> Iterator[VideoUpdate]:
    """Annotate the clip at ``path`` frame by frame; see the module docstring. Raises ``DetDemoError`` (a message
    for the page, naming the file) for a file that is not a readable video or is over the limit."""
    from detdemo.inference.video import (
        VideoOutputs,
        VideoReader,
        VideoWriter,
        annotate,
        output_head,
        output_tail,
        quiet_ffmpeg,
        run_pipeline,
    )

    if path is None or str(path) == "":
        raise DetDemoError("No video: upload a clip first.")
    if not 0.0 <= float(score_threshold) <= 1.0:
        raise DetDemoError(f"score threshold must be between 0 and 1, got {score_threshold}")
    every = max(1, int(every))
    predictor = catalogue.predictor(model, backend)  # fails early on a bad model/backend
    quiet_ffmpeg()
    path = Path(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("segment-*.ts"):
        old.unlink(missing_ok=True)
    warnings: list[str] = []
    # Messages name the file by its name alone: Gradio keeps an upload's own name inside its cache folder.
    with VideoReader(path, max_side=MAX_SIDE, on_bad_frame=lambda bad: warnings.append(bad.describe())) as reader:
        info = reader.info
        _check(info)
        fps = info.fps / every
        per_segment = max(1, round(float(fps) * SEGMENT_S))
        head = output_head(info, predictor, every=every, score_threshold=float(score_threshold), track=track,
                           classes=classes)
        video_path, json_path = out_dir / f"{path.stem}.annotated.mp4", out_dir / f"{path.stem}.detections.json"
        meter, start, frames, segments = FrameRate(), time.perf_counter(), 0, []
        scaled = (f", scaled to {round(info.width * reader.scale)}x{round(info.height * reader.scale)}"
                  if reader.scale != 1.0 else "")
        writing: dict = {}  # the open segment: its path and writer (only the pipeline's finishing thread uses it)

        def status(rate: float, final: bool = False) -> str:
            done = f"**{frames}** frame(s)" + (f" of about {-(-info.frame_count // every)}" if info.frame_count
                                                 and not final else "")
            text = (f"{done} through {BACKEND_LABELS[backend]} at **{rate:.1f} frames/s** "
                    f"({info.display}{scaled}{', every ' + str(every) + ' frames' if every > 1 else ''}"
                    f"{', tracking' if track else ''})")
            return text + "".join(f"\n\n**Warning:** {w}" for w in warnings[-5:])

        def close_segment() -> Path:
            writing.pop("writer").close()
            return writing.pop("path")

        def draw_and_write(result) -> Path | None:
            """On the pipeline's finishing thread, while the model runs on the next frame: the frame drawn, into the
            MP4, the JSON and the open segment; returns the segment this frame completed, if it did."""
            drawn = annotate(result, masks=masks, boxes=boxes, labels=labels)
            outputs.add(result, drawn)
            if "writer" not in writing:
                writing["path"] = out_dir / f"segment-{(outputs.frames - 1) // per_segment:05d}.ts"
                writing["writer"] = VideoWriter(writing["path"], fps, container_format="mpegts", codec="libx264")
            writing["writer"].write(drawn)
            return close_segment() if outputs.frames % per_segment == 0 else None

        def shown(segment: Path) -> str:
            """A finished segment handed to the page; older ones are deleted (Gradio has read them by then)."""
            segments.append(segment)
            while len(segments) > KEEP_SEGMENTS:
                segments.pop(0).unlink(missing_ok=True)
            return str(segment)

        try:
            with VideoOutputs(video_path, json_path, head, fps) as outputs, contextlib.closing(
                    run_pipeline(predictor, reader, draw_and_write, every=every, score_threshold=float(score_threshold),
                                 track=track, classes=classes)) as pipeline:
                for done in pipeline:
                    if done.timestamp > MAX_DURATION_S:
                        raise DetDemoError(f"'{path.name}' runs past {MAX_DURATION_S:.0f} s; this page takes clips "
                                           f"up to {MAX_DURATION_S:.0f} s")
                    catalogue.count_model_call()
                    frames += 1
                    rate = meter.tick()
                    if done.value is not None:
                        yield VideoUpdate(shown(done.value), status(rate))
                outputs.finish(**output_tail(reader, outputs.frames))
                last = shown(close_segment()) if "writer" in writing else None
        finally:
            if "writer" in writing:  # stopped mid-segment
                writing["writer"].close()
        overall = frames / max(time.perf_counter() - start, 1e-9)
        if last is not None:
            yield VideoUpdate(last, status(overall, final=True))
    bad = f" {len(reader.bad_frames)} bad frame(s) skipped." if reader.bad_frames else ""
    yield VideoUpdate(None, status(overall, final=True) + f"\n\nDone: {frames} frame(s).{bad}", str(video_path),
                      str(json_path), done=True)
