"""Video: the CLI on a generated clip of moving shapes (rotation metadata, --every, --track), the bad videos, the
app's streaming handler, and the Video tab in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import av
import numpy as np
import pytest

from detdemo.app.catalogue import BUNDLED_MODEL_NAME, Catalogue, entry_from_path
from detdemo.cli import main as cli
from detdemo.data.shapes import write_shapes_clip
from detdemo.errors import DetDemoError
from detdemo.inference.video import VideoReader
from tests.conftest import REPO

SHAPES = REPO / "models" / "shapes"
W, H, FRAMES, FPS = 256, 192, 20, 10


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def rotate_box_ccw(box, width: int):
    """A box in the stored frame's pixels, in the frame a player shows after turning it 90 degrees anticlockwise."""
    x0, y0, x1, y1 = box
    return (y0, width - x1, y1, width - x0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list]:
    """A clip stored as 256x192 landscape frames with a display matrix saying "turn 90 degrees" (as phones write)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return path, write_shapes_clip(path, width=W, height=H, frames=FRAMES, fps=FPS, rotation=90)


@pytest.fixture(scope="module")
def tracked(clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tracked")
    assert cli(["predict", "--model", str(SHAPES), "--backend", "onnxruntime", "--input", str(clip[0]), "--out",
                str(out), "--track"]) == 0
    return out


def read_all(path: Path) -> tuple[list[np.ndarray], VideoReader]:
    with VideoReader(path) as reader:
        frames = [f.image for f in reader.frames()]
    return frames, reader


def test_the_annotated_video_and_its_json_follow_the_clip_and_its_rotation(clip, tracked):
    frames, reader = read_all(tracked / "clip.mp4")
    assert len(frames) == FRAMES and reader.info.rotation == 0
    assert frames[0].shape == (W, H, 3)  # turned as the display matrix says: portrait
    assert reader.info.codec == "h264" and float(reader.info.fps) == FPS
    data = json.loads((tracked / "clip.detections.json").read_text())
    assert (data["width"], data["height"], data["rotation"], data["fps"]) == (H, W, 90, FPS)
    assert [f["index"] for f in data["frames"]] == list(range(FRAMES))
    assert [f["timestamp"] for f in data["frames"]] == pytest.approx([i / FPS for i in range(FRAMES)])
    assert data["frames_processed"] == FRAMES and data["bad_frames"] == []
    truth = clip[1]
    found = total = 0
    for frame, shapes in zip(data["frames"], truth):
        for name, box in shapes:
            total += 1
            want = rotate_box_ccw(box, W)  # where the shape is in the displayed (portrait) frame
            found += any(d["name"] == name and iou(d["box"], want) > 0.5 for d in frame["detections"])
    assert found / total >= 0.8, (found, total)


def test_track_ids_stay_with_each_moving_shape(clip, tracked):
    data = json.loads((tracked / "clip.detections.json").read_text())
    assert data["tracking"] is True
    for k, name in enumerate(("circle", "square", "triangle")):
        ids = []
        for frame, shapes in zip(data["frames"], clip[1]):
            want = rotate_box_ccw(shapes[k][1], W)
            best = max((d for d in frame["detections"] if d["name"] == name), default=None,
                       key=lambda d: iou(d["box"], want))
            if best is not None and iou(best["box"], want) > 0.5 and best["track_id"] >= 0:
                ids.append(best["track_id"])
        assert len(ids) >= 0.7 * FRAMES, (name, ids)
        assert len(set(ids)) == 1, f"the {name}'s track id changed: {ids}"


def test_every_n_samples_frames_in_a_folder_of_images_and_videos(clip, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clip[0], folder / "clip.mp4")
    shutil.copy(SHAPES / "examples" / "shapes_1.jpg", folder / "photo.jpg")
    out = tmp_path / "out"
    assert cli(["predict", "--model", str(SHAPES), "--backend", "onnxruntime", "--input", str(folder), "--out",
                str(out), "--every", "2", "--no-masks"]) == 0
    frames, reader = read_all(out / "clip.mp4")
    assert len(frames) == FRAMES // 2 and float(reader.info.fps) == FPS / 2  # same duration, half the frames
    data = json.loads((out / "clip.detections.json").read_text())
    assert [f["index"] for f in data["frames"]] == list(range(0, FRAMES, 2))
    assert "track_id" not in data["frames"][0]["detections"][0]
    assert (out / "photo.png").is_file()
    index = json.loads((out / "images.json").read_text())
    assert [v["frames"] for v in index["videos"]] == [FRAMES // 2]


# -- the pipeline's threads -----------------------------------------------------------------------------------------


def _pipeline_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("detdemo-video")]


@pytest.fixture(scope="module")
def onnx_predictor():
    from export.runtime import load_predictor

    return load_predictor(SHAPES, "onnxruntime", "cpu")


def test_the_pipeline_finishes_every_frame_in_order_with_what_the_model_gives_it(clip, onnx_predictor):
    from detdemo.inference.video import run_pipeline

    seen = []
    with VideoReader(clip[0]) as reader:
        done = list(run_pipeline(onnx_predictor, reader, lambda r: seen.append(r) or len(seen), every=2))
    assert [d.index for d in done] == [r.frame.index for r in seen] == list(range(0, FRAMES, 2))
    assert [d.value for d in done] == list(range(1, FRAMES // 2 + 1))  # what finish returned, frame by frame
    assert [d.timestamp for d in done] == pytest.approx([i / FPS for i in range(0, FRAMES, 2)])
    for result in seen[:3]:  # the same detections as predicting the frame on its own (threads may differ: 1e-3 px)
        alone = onnx_predictor.predict(result.frame.image, score_threshold=0.5)
        assert result.det.labels.tolist() == alone.labels.tolist()
        assert np.abs(result.det.boxes - alone.boxes).max() < 1e-3
    assert _pipeline_threads() == []


def test_an_error_while_finishing_a_frame_stops_the_pipeline_and_reaches_the_caller(clip, onnx_predictor):
    from detdemo.inference.video import run_pipeline

    calls = []

    def finish(result):
        calls.append(result.frame.index)
        if len(calls) == 3:
            raise OSError("disk full")

    with VideoReader(clip[0]) as reader, pytest.raises(OSError, match="disk full"):
        for _ in run_pipeline(onnx_predictor, reader, finish):
            pass
    assert calls == [0, 1, 2] and _pipeline_threads() == []


def test_closing_the_pipeline_stops_both_threads_within_a_frame_or_two(clip, onnx_predictor):
    from detdemo.inference.video import run_pipeline

    calls = []
    with VideoReader(clip[0]) as reader:
        pipeline = run_pipeline(onnx_predictor, reader, lambda r: calls.append(r.frame.index), depth=2)
        assert next(pipeline).index == 0
        pipeline.close()  # what a Stop in the app or Ctrl-C does
        assert _pipeline_threads() == []
    assert len(calls) < FRAMES // 2  # it stopped, it did not run the clip to its end first


def test_an_error_while_detecting_reaches_the_caller_and_stops_the_pipeline(clip, onnx_predictor):
    from detdemo.inference.video import run_pipeline

    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name):
            return getattr(onnx_predictor, name)

        def predict(self, image, **kwargs):
            self.calls += 1
            if self.calls == 4:
                raise RuntimeError("the runtime gave up")
            return onnx_predictor.predict(image, **kwargs)

    finished = []
    with VideoReader(clip[0]) as reader, pytest.raises(RuntimeError, match="gave up"):
        for done in run_pipeline(Failing(), reader, lambda r: None):
            finished.append(done.index)
    assert finished == [0, 1, 2] and _pipeline_threads() == []


def test_an_interrupt_while_the_pipeline_starts_leaves_no_thread_running(clip, onnx_predictor, monkeypatch):
    """Ctrl-C (KeyboardInterrupt, in the caller's thread) just after the detecting thread has started, before the
    pipeline knows of it: that thread is stopped too, not left waiting forever on a full queue with the model."""
    import time

    import detdemo.inference.device as device
    from detdemo.inference.video import run_pipeline

    real = device.start_thread

    def start_thread(target, **kwargs):
        real(target, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(device, "start_thread", start_thread)
    with VideoReader(clip[0]) as reader:
        with pytest.raises(KeyboardInterrupt):
            next(run_pipeline(onnx_predictor, reader, lambda r: None))
        deadline = time.monotonic() + 10  # not joined (never handed back), it stops after the frame it is on
        while _pipeline_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pipeline_threads() == []


def test_masks_are_blended_where_they_cover_and_nowhere_else_the_last_on_top():
    """The region-limited blend against the plain whole-frame rule: each covered pixel blended once, in float32,
    with the colour of the last mask covering it; every other pixel unchanged. Masks overlap, one touches the
    frame's corner, one is empty."""
    from detdemo.engine.draw import _blend_masks, image_to_tensor
    from detdemo.inference.detections import Detections

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    masks = np.zeros((4, 48, 64), dtype=bool)
    masks[0, 5:30, 10:40] = True
    masks[1, 20:48, 30:64] = rng.random((28, 34)) > 0.3  # ragged, overlaps the first, reaches the corner
    masks[2, 0:3, 0:2] = True
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    det = Detections(np.zeros((4, 4), np.float32), np.array([1, 2, 3, 1]), np.ones(4, np.float32), ["a", "b", "c"],
                     masks=masks)
    drawn = _blend_masks(image_to_tensor(image), det, colours, 0.45).permute(1, 2, 0).numpy()
    coloured = image.copy()
    for mask, colour in zip(masks, colours):
        coloured[mask] = colour
    covered = masks.any(axis=0)
    a = np.float32(0.45)
    want = image.copy()
    want[covered] = (image[covered].astype(np.float32) * (np.float32(1) - a)
                     + coloured[covered].astype(np.float32) * a).astype(np.uint8)
    assert np.array_equal(drawn, want)
    assert np.array_equal(drawn[~covered], image[~covered]) and not np.array_equal(drawn[covered], image[covered])


# -- bad videos ------------------------------------------------------------------------------------------------------


def _audio_frames(container, stream, n: int = 8):
    for i in range(n):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, i * 1024
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as c:
        _audio_frames(c, c.add_stream("aac", rate=16000))
    return path


def zero_frames(path: Path) -> Path:
    """A Matroska file declaring a video stream that holds no frame (beside a short silent audio track)."""
    with av.open(str(path), "w", format="matroska") as c:
        video = c.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        _audio_frames(c, c.add_stream("aac", rate=16000))
    return path


def corrupt_frame(source: Path, target: Path, frame: int) -> int:
    """``source`` with one frame's compressed bytes garbled in place; returns that frame's index."""
    with av.open(str(source)) as c:
        stream = c.streams.video[0]
        packets = sorted((p for p in c.demux(stream) if p.size), key=lambda p: p.pts)
        victim = packets[frame]
        pos, size, index = victim.pos, victim.size, round(float(victim.pts * victim.time_base) * FPS)
    data = bytearray(source.read_bytes())
    for j in range(pos, pos + size):
        data[j] = (data[j] * 7 + 13) & 0xFF
    target.write_bytes(bytes(data))
    return index


@pytest.mark.parametrize("kind, message", [
    ("not a video", "not a readable video"),
    ("empty", "empty"),
    ("truncated", "not a readable video (truncated"),
    ("audio only", "no video stream (it has only audio streams)"),
    ("zero frames", "no video frame could be decoded"),
])
def test_a_bad_video_is_one_clear_message_naming_the_file(clip, tmp_path, capsys, kind, message):
    bad = tmp_path / f"{kind.replace(' ', '_')}.mp4"
    if kind == "not a video":
        bad.write_text("these are not the frames you are looking for\n" * 50)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        data = clip[0].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "audio only":
        audio_only(bad)
    else:
        bad = zero_frames(tmp_path / "zero_frames.mkv")
    out = tmp_path / "out"
    assert cli(["predict", "--model", str(SHAPES), "--backend", "onnxruntime", "--input", str(bad), "--out",
                str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and bad.name in err and "Traceback" not in err
    assert not any(out.glob("*.mp4")) and not any(out.glob("*.json")) and not any(out.glob(".*"))


def test_a_corrupted_frame_is_named_and_the_rest_is_processed(clip, tmp_path, capsys):
    bad = tmp_path / "glitch.mp4"
    index = corrupt_frame(clip[0], bad, FRAMES // 2)
    out = tmp_path / "out"
    assert cli(["predict", "--model", str(SHAPES), "--backend", "onnxruntime", "--input", str(bad), "--out",
                str(out), "--no-masks"]) == 0
    err = capsys.readouterr().err
    assert f"glitch.mp4: frame {index} " in err and "could not be decoded and was skipped" in err
    data = json.loads((out / "glitch.detections.json").read_text())
    assert [b["index"] for b in data["bad_frames"]] == [index]
    done = [f["index"] for f in data["frames"]]
    assert index not in done and len(done) == FRAMES - 1 and done[-1] == FRAMES - 1
    assert len(read_all(out / "glitch.mp4")[0]) == FRAMES - 1


# -- the app ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue([entry_from_path(SHAPES, BUNDLED_MODEL_NAME)])


def test_the_handler_streams_segments_before_the_clip_is_done(clip, catalogue, tmp_path):
    from detdemo.app.video import stream_video

    out = tmp_path / "session"
    updates = []
    for update in stream_video(catalogue, clip[0], BUNDLED_MODEL_NAME, "onnxruntime", track=True, out_dir=out):
        updates.append(update)
        if len(updates) == 1:  # the first segment is out while most of the clip is still to do
            assert update.segment and not update.done and not (out / "clip.annotated.mp4").exists()
            frames, _ = read_all(Path(update.segment))
            assert len(frames) == FPS and frames[0].shape == (W, H, 3)  # one second of clip, turned
            assert "frames/s" in update.status
    assert len([u for u in updates if u.segment]) == FRAMES // FPS
    final = updates[-1]
    assert final.done and Path(final.video).is_file()
    data = json.loads(Path(final.json).read_text())
    assert len(data["frames"]) == FRAMES and all("track_id" in d for f in data["frames"] for d in f["detections"])


def test_the_class_filter_keeps_only_the_chosen_classes_with_the_same_track_ids(clip, catalogue, tracked, tmp_path):
    """The Video tab's "Classes shown": only circles in the JSON and on the frames, each with the box and track id
    the unfiltered run gave it (the tracker sees every class, so a filter does not renumber)."""
    from detdemo.app.video import stream_video

    updates = list(stream_video(catalogue, clip[0], BUNDLED_MODEL_NAME, "onnxruntime", track=True,
                                classes=["circle"], out_dir=tmp_path / "session"))
    data = json.loads(Path(updates[-1].json).read_text())
    everything = json.loads((tracked / "clip.detections.json").read_text())
    assert data["classes"] == ["circle"] and everything["classes"] == ["circle", "square", "triangle"]
    kept = [[(d["track_id"], d["box"]) for d in f["detections"]] for f in data["frames"]]
    circles = [[(d["track_id"], d["box"]) for d in f["detections"] if d["name"] == "circle"]
               for f in everything["frames"]]
    assert kept == circles and sum(map(len, kept)) >= FRAMES  # a circle on every frame, nothing else
    assert {d["name"] for f in everything["frames"] for d in f["detections"]} > {"circle"}


def test_the_handler_refuses_bad_clips_and_keeps_serving(clip, catalogue, tmp_path, monkeypatch):
    import detdemo.app.video as video

    bad = tmp_path / "song.mp4"
    with pytest.raises(DetDemoError, match="song.mp4: no video stream"):
        next(video.stream_video(catalogue, audio_only(bad), BUNDLED_MODEL_NAME, "onnxruntime", out_dir=tmp_path))
    monkeypatch.setattr(video, "MAX_DURATION_S", 1.0)
    with pytest.raises(DetDemoError, match="2 s long; this page takes clips up to 1 s"):
        next(video.stream_video(catalogue, clip[0], BUNDLED_MODEL_NAME, "onnxruntime", out_dir=tmp_path))
    monkeypatch.undo()
    first = next(video.stream_video(catalogue, clip[0], BUNDLED_MODEL_NAME, "onnxruntime", out_dir=tmp_path))
    assert first.segment


def test_stopping_leaves_no_half_written_outputs(clip, catalogue, tmp_path):
    from detdemo.app.video import stream_video

    out = tmp_path / "session"
    stream = stream_video(catalogue, clip[0], BUNDLED_MODEL_NAME, "onnxruntime", out_dir=out)
    assert next(stream).segment
    stream.close()  # what the page's Stop does to the running generator
    assert _pipeline_threads() == []  # nothing runs on: the model is free for the next visitor
    assert not (out / "clip.annotated.mp4").exists() and not (out / "clip.detections.json").exists()
    assert not list(out.glob(".*.tmp"))


# -- the Video tab in a real browser ---------------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium (apt) for the browser tests")
    pytest.skip("no chromium on this machine")


@pytest.mark.slow
def test_the_video_tab_streams_frames_before_the_clip_ends(catalogue, tmp_path):
    from playwright.sync_api import sync_playwright

    from detdemo.app.ui import build_demo

    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):  # Gradio muxes streamed segments with them
        if os.environ.get("CI"):
            pytest.fail("CI must install ffmpeg (apt) for Gradio's streaming video output")
        pytest.skip("no ffmpeg on this machine")
    long_clip = tmp_path / "long.mp4"
    write_shapes_clip(long_clip, width=W, height=H, frames=60, fps=FPS)  # 6 segments of one second
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_demo(catalogue, default_backend="onnxruntime")
    demo.queue(max_size=16).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.get_by_role("tab", name="Video").click()
            page.locator("#video-in input[type=file]").set_input_files(str(long_clip))
            page.locator("#video-in video").wait_for(timeout=60_000)
            page.locator("#video-run").click()
            deadline = time.time() + 120
            while not page.evaluate("() => { const v = document.querySelector('#video-out video');"
                                    " return !!v && v.readyState >= 2 && v.duration > 0; }"):
                assert time.time() < deadline, page.locator("#video-status").inner_text()
                time.sleep(0.1)
            status = page.locator("#video-status").inner_text()  # the first frames play while the rest is processed
            assert "frames/s" in status and "of about 60" in status, status
            assert not page.locator("#video-download").is_visible()
            page.screenshot(path=str(tmp_path / "video_tab.png"), full_page=True)
            deadline = time.time() + 180
            while not page.locator("#video-download").is_visible():
                assert time.time() < deadline, page.locator("#video-status").inner_text()
                time.sleep(0.5)
            assert "Done: 60 frame(s)" in page.locator("#video-status").inner_text()
            browser.close()
    finally:
        demo.close()
