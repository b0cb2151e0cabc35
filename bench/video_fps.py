"""Benchmark: frames per second on a 640x480 clip, per backend, through the CLI's video path and the app's handler.

    python -m bench.video_fps --frames 100 [--backends pytorch torchscript onnxruntime] [--memory-frames 300]

Generates a clip of moving shapes (``detdemo.data.shapes.write_shapes_clip``, H.264, 640x480, 25 frames/s), loads
the bundled shapes model once per backend, then times, after a warm-up of a few frames:

- **CLI**: ``detdemo.commands.predict.predict_video`` as ``detdemo predict --input clip.mp4`` runs it (decode, model,
  masks and boxes drawn, H.264 encode, per-frame JSON), with and without ``--track``, and with ``--no-masks``;
- **app**: ``detdemo.app.video.stream_video`` as the Video tab runs it (the same, plus a streamed MPEG-TS segment
  of every frame), without Gradio's own transport.

frames/s = processed frames / wall time of the whole run (model loading excluded). Memory: the peak resident size
while processing ``--frames`` and ``--memory-frames`` frames (onnxruntime), to show it does not grow with the clip.
The figures depend on what else runs on the machine: note the load average printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from bench.common import REPO, high_water_rss_mb, reset_peak_rss, table, write_json

MODEL = REPO / "models" / "shapes"
FORMATS = {"pytorch": "model.pt", "torchscript": "model.torchscript.pt", "onnxruntime": "model.onnx",
           "openvino": "model.xml"}


def cli_args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"score_threshold": 0.5, "no_masks": False, "every": 1, "track": False, **kw})


def time_cli(predictor, clip: Path, out: Path, **kw) -> tuple[float, int]:
    from detdemo.commands.predict import predict_video

    # the progress bar and summary line go to /dev/null (the bar's own cost stays in)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull), contextlib.redirect_stdout(devnull):
        t = time.perf_counter()
        done = predict_video(predictor, clip, out, cli_args(**kw))
        return time.perf_counter() - t, done["frames"]


def time_app(catalogue, clip: Path, out: Path, backend: str, track: bool) -> tuple[float, int]:
    from detdemo.app.catalogue import BUNDLED_MODEL_NAME
    from detdemo.app.video import stream_video

    t = time.perf_counter()
    frames = 0
    for update in stream_video(catalogue, clip, BUNDLED_MODEL_NAME, backend, track=track, out_dir=out):
        if update.done:
            import json

            frames = len(json.loads(Path(update.json).read_text())["frames"])
    return time.perf_counter() - t, frames


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--memory-frames", type=int, default=300, help="0 to skip the memory comparison")
    p.add_argument("--backends", nargs="+", default=None)
    args = p.parse_args()

    import torch

    from detdemo.app.catalogue import BUNDLED_MODEL_NAME, Catalogue, entry_from_path
    from detdemo.data.shapes import write_shapes_clip
    from export.runtime import load_predictor

    backends = args.backends or [b for b, f in FORMATS.items() if (MODEL / f).is_file()]
    work = Path(tempfile.mkdtemp(prefix="video-fps-"))
    clip = work / "clip640.mp4"
    write_shapes_clip(clip, width=640, height=480, frames=args.frames, fps=25)
    warm = work / "warm.mp4"
    write_shapes_clip(warm, width=640, height=480, frames=3, fps=25)
    catalogue = Catalogue([entry_from_path(MODEL, BUNDLED_MODEL_NAME)])
    rows = []
    for backend in backends:
        predictor = load_predictor(MODEL, backend, "cpu")
        time_cli(predictor, warm, work / "warm")
        for label, kw in (("cli", {}), ("cli --track", {"track": True}), ("cli --no-masks", {"no_masks": True})):
            seconds, frames = time_cli(predictor, clip, work / backend, **kw)
            rows.append({"path": label, "backend": backend, "frames": frames, "seconds": seconds,
                         "frames_per_s": frames / seconds})
            print(rows[-1], flush=True)
        time_app(catalogue, warm, work / "app-warm", backend, False)
        for label, track in (("app", False), ("app --track", True)):
            seconds, frames = time_app(catalogue, clip, work / f"app-{backend}", backend, track)
            rows.append({"path": label, "backend": backend, "frames": frames, "seconds": seconds,
                         "frames_per_s": frames / seconds})
            print(rows[-1], flush=True)
    memory = []
    if args.memory_frames:
        predictor = load_predictor(MODEL, "onnxruntime", "cpu")
        for n in (args.frames, args.memory_frames):
            longer = work / f"clip{n}.mp4"
            write_shapes_clip(longer, width=640, height=480, frames=n, fps=25)
            reset_peak_rss()
            seconds, frames = time_cli(predictor, longer, work / f"mem{n}")
            memory.append({"frames": frames, "peak_rss_mb": high_water_rss_mb(), "seconds": seconds})
            print(memory[-1], flush=True)
    load = os.getloadavg()
    print(table(rows, ["path", "backend", "frames", "seconds", "frames_per_s"]))
    if memory:
        print(table(memory, ["frames", "peak_rss_mb", "seconds"]))
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (the CPU is shared), torch {torch.__version__}")
    payload = {"clip": {"width": 640, "height": 480, "fps": 25, "frames": args.frames}, "rows": rows,
               "memory": memory, "load_average": load,
               "note": "2-core CPU shared with other sessions while measured; model loading excluded"}
    print(f"wrote {write_json('video_fps', payload)}")


if __name__ == "__main__":
    main()
