"""Benchmark: frames per second on a 640x480 clip, per backend, through the CLI's video path and the app's handler,
against a baseline checkout of the code in the same run.

    python -m bench.video_fps --frames 100 [--backends onnxruntime ...] [--rounds 2] [--memory-frames 300]
        [--baseline-tree DIR] [--model EXPORT_FOLDER] [--profile]

Generates a clip of moving shapes (``detdemo.data.shapes.write_shapes_clip``, H.264, 640x480, 25 frames/s) and
measures every backend file the bundled shapes model's folder (or ``--model``, another export folder) holds (INT8
and OpenVINO files included when it has them; ``verified`` says whether the file counts: full-precision files are
parity-checked at export, reduced-precision and OpenVINO files count only when the manifest's ``verified`` figures
passed, as the app decides). For each, after a warm-up of a few frames:

- **CLI**: ``detdemo.commands.predict.predict_video`` as ``detdemo predict --input clip.mp4`` runs it (decode, model,
  masks and boxes drawn, H.264 encode, per-frame JSON), with and without ``--track``, and with ``--no-masks``;
- **app**: ``detdemo.app.video.stream_video`` as the Video tab runs it (the same, plus a streamed MPEG-TS segment
  of every frame), without Gradio's own transport; only for files the app offers.

Each backend is measured in its own process, once per round for each tree (this checkout, and ``--baseline-tree``,
another checkout of the code such as ``git archive main | tar -x -C /tmp/base``, run on the same clip and the same
model files), the trees alternating which goes first, so both see the same machine. frames/s = processed frames /
wall time of the whole run (model loading excluded); ``cpu_ms_per_frame`` = the process's CPU time per frame (all
its threads), which other jobs on the machine disturb less than the wall time. The ratio is this tree's median
frames/s over the baseline's. Memory: the peak resident size while processing ``--frames`` and ``--memory-frames``
frames (ONNX Runtime, this tree), to show it does not grow with the clip. ``--profile``: where a frame's time goes,
each stage (decode, pre-processing, model, post-processing, mask pasting, drawing, encoding, JSON) timed one after
the other on one thread, with torch's intra-op threads at 1 and at 2 (``--rounds 0`` for the profile alone). The
1-minute load average is recorded before and after every measurement: the CPU may be shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = ("cli", "cli --track", "cli --no-masks", "app", "app --track")
HERE = Path(__file__).resolve()


# -- one backend in one process (runs on either tree: only APIs both have) ----------------------------------------


def _time_cli(predictor, clip: Path, out: Path, **kw) -> tuple[float, float, int]:
    from detdemo.commands.predict import predict_video

    args = argparse.Namespace(**{"score_threshold": 0.5, "no_masks": False, "every": 1, "track": False, **kw})
    # the progress bar and summary line go to /dev/null (the bar's own cost stays in)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull), contextlib.redirect_stdout(devnull):
        cpu, t = time.process_time(), time.perf_counter()
        done = predict_video(predictor, clip, out, args)
        return time.perf_counter() - t, time.process_time() - cpu, done["frames"]


def _time_app(catalogue, name: str, clip: Path, out: Path, choice: str, track: bool) -> tuple[float, float, int]:
    from detdemo.app.video import stream_video

    cpu, t = time.process_time(), time.perf_counter()
    frames = 0
    for update in stream_video(catalogue, clip, name, choice, track=track, out_dir=out):
        if update.done:
            frames = len(json.loads(Path(update.json).read_text())["frames"])
    return time.perf_counter() - t, time.process_time() - cpu, frames


def measure(spec: dict) -> list[dict]:
    """The paths of ``spec["paths"]`` for one backend choice, in this process."""
    from detdemo.app.catalogue import Catalogue, entry_from_path
    from export.formats import format_backend, format_of_choice, format_precision
    from export.runtime import load_predictor

    model, choice, clip, warm, work = (Path(spec["model"]), spec["choice"], Path(spec["clip"]), Path(spec["warm"]),
                                       Path(spec["work"]))
    fmt = format_of_choice(choice)
    precision = format_precision(fmt) if fmt != "eager" else "fp32"
    predictor = load_predictor(model, format_backend(fmt), "cpu",
                               precision=None if precision in ("fp32", "auto") else precision)
    entry = entry_from_path(model, "bench")
    catalogue = Catalogue([entry]) if choice in entry.files else None
    rows = []
    warmed = set()
    for path in spec["paths"]:
        if path.startswith("app") and catalogue is None:
            continue
        kind = path.split()[0]
        load_before = os.getloadavg()[0]
        if kind == "cli":
            kw = {"track": "--track" in path, "no_masks": "--no-masks" in path}
            if kind not in warmed:
                _time_cli(predictor, warm, work / "warm")
            seconds, cpu, frames = _time_cli(predictor, clip, work / choice, **kw)
        else:
            if kind not in warmed:
                _time_app(catalogue, "bench", warm, work / "app-warm", choice, False)
            seconds, cpu, frames = _time_app(catalogue, "bench", clip, work / f"app-{choice}", choice,
                                             "--track" in path)
        warmed.add(kind)
        rows.append({"path": path, "backend": choice, "frames": frames, "seconds": seconds,
                     "frames_per_s": frames / seconds, "cpu_ms_per_frame": 1000 * cpu / max(frames, 1),
                     "load_before": load_before, "load_after": os.getloadavg()[0]})
    return rows


STAGES = ("decode", "preprocess", "model", "postprocess", "paste masks", "draw", "encode", "json")


def profile(spec: dict) -> dict:
    """Where one frame's time goes: every stage of the video path run one after the other on this process's main
    thread, with torch's intra-op threads at ``spec["torch_threads"]`` (ONNX Runtime keeps its own). Per stage, the
    mean wall time and process CPU time per frame (ms); "paste masks" is also inside "draw" (drawing pastes them
    again), so it is left out of the total."""
    import torch

    from detdemo.inference.video import FrameResult, VideoReader, VideoWriter, annotate
    from export.runtime import load_predictor

    torch.set_num_threads(spec["torch_threads"])
    predictor = load_predictor(Path(spec["model"]), "onnxruntime", "cpu")
    wall = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)

    def timed(stage: str, fn, *a):
        c, t = time.process_time(), time.perf_counter()
        out = fn(*a)
        wall[stage] += time.perf_counter() - t
        cpu[stage] += time.process_time() - c
        return out

    def preprocess(image):
        from detdemo.inference.pipeline import to_chw_float

        x = predictor.transform.normalize(to_chw_float(image))
        return predictor.transform.resize(x, None)[0]

    n = 0
    load_before = os.getloadavg()[0]
    with torch.inference_mode(), VideoReader(spec["clip"]) as reader, \
            VideoWriter(Path(spec["work"]) / "profile.mp4", reader.info.fps) as writer:
        frames = reader.frames()
        while (frame := timed("decode", next, frames, None)) is not None:
            x = timed("preprocess", preprocess, frame.image)
            raw = timed("model", predictor._run_graph, x)
            det = timed("postprocess", predictor._postprocess, raw, tuple(x.shape[-2:]), frame.image.shape[:2], 0.5)
            timed("paste masks", lambda d: [d.mask(i) for i in range(len(d))], det)
            result = FrameResult(frame, det, 1.0)
            drawn = timed("draw", annotate, result)
            timed("encode", writer.write, drawn)
            timed("json", lambda r: json.dumps(r.record()), result)
            n += 1
    row = {"torch_threads": spec["torch_threads"], "frames": n, "load_before": load_before,
           "load_after": os.getloadavg()[0]}
    for stage in STAGES:
        row[f"{stage} wall"], row[f"{stage} cpu"] = 1000 * wall[stage] / n, 1000 * cpu[stage] / n
    row["total cpu"] = sum(row[f"{s} cpu"] for s in STAGES if s != "paste masks")
    return row


def _child(spec: dict, tree: Path) -> list[dict]:
    """``measure`` in a fresh process that imports detdemo from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(spec)], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {spec['choice']} on {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the whole benchmark -------------------------------------------------------------------------------------------


def _status(entry, choice: str) -> str:
    from export.formats import format_of_choice, format_precision

    if choice not in entry.files:
        return "no: " + entry.missing.get(choice, "not offered")
    fmt = format_of_choice(choice)
    if fmt != "eager" and format_precision(fmt) != "fp32":
        return "yes: accuracy verified"
    return "yes: full precision, parity-checked"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "torchvision", "onnxruntime", "onnxruntime-gpu", "openvino", "av", "numpy", "trackers"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def _input_size(model: Path, width: int, height: int) -> list[int]:
    """The image size the model's transform gives a ``width`` x ``height`` frame (what the graph runs on)."""
    import torch

    from export.runtime import load_predictor

    transform = load_predictor(model, "onnxruntime", "cpu").transform
    x, _ = transform.resize(torch.zeros(3, height, width), None)
    return [int(x.shape[-2]), int(x.shape[-1])]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2, help="measurements of each backend per tree")
    p.add_argument("--memory-frames", type=int, default=300, help="0 to skip the memory comparison")
    p.add_argument("--backends", nargs="+", default=None, help="backend choices (default: every file the model has)")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--baseline-tree", type=Path, default=None,
                   help="another checkout of detdemo to compare with, measured in the same run")
    p.add_argument("--model", type=Path, default=None, help="an export folder (default: the bundled shapes model)")
    p.add_argument("--profile", action="store_true",
                   help="also time each stage of a frame (ONNX Runtime, this tree), with torch on 1 and 2 threads")
    p.add_argument("--results", default="video_fps", help="name of the JSON written under bench/results/")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(profile(spec) if "torch_threads" in spec else measure(spec)))
        return

    from bench.common import REPO, high_water_rss_mb, reset_peak_rss, table, write_json
    from detdemo.app.catalogue import entry_from_path
    from detdemo.data.shapes import write_shapes_clip
    from detdemo.inference.device import usable_cpus
    from export.formats import choice_of
    from export.runtime import folder_files, load_predictor

    model = (args.model or REPO / "models" / "shapes").resolve()
    entry = entry_from_path(model, "bench")
    choices = args.backends or [choice_of(fmt) for fmt in folder_files(model)]
    trees = {"this": REPO}
    if args.baseline_tree is not None:
        trees["baseline"] = args.baseline_tree.resolve()
    work = Path(tempfile.mkdtemp(prefix="video-fps-"))
    clip, warm = work / "clip640.mp4", work / "warm.mp4"
    write_shapes_clip(clip, width=640, height=480, frames=args.frames, fps=25)
    write_shapes_clip(warm, width=640, height=480, frames=3, fps=25)
    runs = []
    for r in range(args.rounds):
        for choice in choices:
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for tree in order:
                spec = {"model": str(model), "choice": choice, "clip": str(clip), "warm": str(warm),
                        "work": str(work / tree), "paths": args.paths}
                for row in _child(spec, trees[tree]):
                    runs.append({"tree": tree, "round": r, **row})
                    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in runs[-1].items()}, flush=True)
    rows = []
    for choice in choices:
        for path in args.paths:
            mine = [x for x in runs if x["backend"] == choice and x["path"] == path]
            if not mine:
                continue
            row = {"path": path, "backend": choice, "verified": _status(entry, choice)}
            for tree in trees:
                got = [x for x in mine if x["tree"] == tree]
                row[f"{tree}_fps"] = statistics.median(x["frames_per_s"] for x in got)
                row[f"{tree}_cpu_ms"] = statistics.median(x["cpu_ms_per_frame"] for x in got)
            if "baseline" in trees:
                row["ratio"] = row["this_fps"] / row["baseline_fps"]
                by_round = {}
                for x in mine:
                    by_round.setdefault(x["round"], {})[x["tree"]] = x["frames_per_s"]
                row["round_ratios"] = [round(v["this"] / v["baseline"], 2) for v in by_round.values()
                                       if len(v) == 2]
            loads = [x[k] for x in mine for k in ("load_before", "load_after")]
            row["load"] = f"{min(loads):.1f}-{max(loads):.1f}"
            rows.append(row)
    stages = []
    if args.profile:
        for threads in (1, 2):
            spec = {"model": str(model), "clip": str(clip), "work": str(work), "torch_threads": threads}
            stages.append(_child(spec, REPO))
            print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in stages[-1].items()}, flush=True)
    memory = []
    if args.memory_frames:
        predictor = load_predictor(model, "onnxruntime", "cpu")
        for n in (args.frames, args.memory_frames):
            longer = work / f"clip{n}.mp4"
            write_shapes_clip(longer, width=640, height=480, frames=n, fps=25)
            reset_peak_rss()
            seconds, _, frames = _time_cli(predictor, longer, work / f"mem{n}")
            memory.append({"frames": frames, "peak_rss_mb": high_water_rss_mb(), "seconds": seconds,
                           "load": os.getloadavg()[0]})
            print(memory[-1], flush=True)
    columns = ["path", "backend", "this_fps", "this_cpu_ms"]
    if "baseline" in trees:
        columns += ["baseline_fps", "baseline_cpu_ms", "ratio", "round_ratios"]
    if rows:
        print(table(rows, [*columns, "load", "verified"]))
    if memory:
        print(table(memory, ["frames", "peak_rss_mb", "seconds", "load"]))
    if stages:
        columns = {f"{kind} ms, torch {p['torch_threads']} thread(s)": (p, kind) for p in stages
                   for kind in ("cpu", "wall")}
        per_stage = [{"stage": stage, **{c: p[f"{stage} {kind}"] for c, (p, kind) in columns.items()}}
                     for stage in STAGES]
        per_stage.append({"stage": "total (without paste masks)",
                          **{c: p["total cpu"] if kind == "cpu" else None for c, (p, kind) in columns.items()}})
        print("one frame's stages, one after the other (ONNX Runtime):")
        print(table(per_stage, ["stage", *columns]))
    size = _input_size(model, 640, 480)
    versions = _versions()
    print(f"model input for a 640x480 frame: {size[1]}x{size[0]}; {usable_cpus()} usable CPU(s), {_cpu_name()}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    payload = {"clip": {"width": 640, "height": 480, "fps": 25, "frames": args.frames}, "model": str(model),
               "model_input_hw": size,
               "trees": {k: str(v) for k, v in trees.items()}, "rows": rows, "runs": runs, "memory": memory,
               "stages": stages,
               "versions": versions, "cpu": _cpu_name(), "usable_cpus": usable_cpus(),
               "note": "each backend in its own process per round and tree, trees alternating; the CPU may be "
                       "shared (load averages recorded); model loading excluded"}
    print(f"wrote {write_json(args.results, payload)}")


if __name__ == "__main__":
    main()
