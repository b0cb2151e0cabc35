"""Detections on video: frames decoded one at a time, each through the ``Predictor``, drawn, and re-encoded, with a
per-frame JSON record written as it goes. Memory does not grow with the clip: one decoded frame, one drawn frame and
the tracker's tracks are all that is held; the JSON array is streamed to disk (``fileio.json_array_stream``).

Why PyAV (``av``): its wheels bundle FFmpeg (libx264 included), so decoding and H.264 encoding work on a Space or a
bare machine with no system FFmpeg; it exposes what a video pipeline needs frame by frame (``frame.rotation`` from
the display matrix, packet positions and timestamps, per-packet decode errors, ``set_display_rotation`` for writing
test clips). torchvision's own video reading is deprecated; torchcodec needs a system FFmpeg of a matching major
version and a torch build it was compiled against, and has no encoder API as mature as PyAV's.

Frames are named by their presentation time: ``index = round(timestamp * fps)`` with ``timestamp`` in seconds from
the stream's start, so ``--every N`` samples the same frames whichever ones fail to decode, and a corrupted packet
is reported as the frame it would have been. Rotation metadata (phones record portrait clips as landscape frames
with a display matrix) is applied to every frame before the model sees it, so boxes are in the video's pixels as
a player shows them.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from detdemo.errors import DetDemoError
from detdemo.inference.detections import Detections

DEFAULT_FPS = Fraction(25)  # when a stream states no usable frame rate
H264 = "libx264"  # bundled in PyAV's wheels; MPEG-4 Part 2 is the fallback where an FFmpeg build lacks it
FALLBACK_CODEC = "mpeg4"
ENCODER_OPTIONS = {"libx264": {"preset": "veryfast", "crf": "23"}, "mpeg4": {"qscale": "3"}}


def _av():
    import av

    return av


def video_codec() -> str:
    """H.264 when this FFmpeg build has an encoder for it (browsers play it), else MPEG-4 Part 2."""
    av = _av()
    try:
        av.codec.Codec(H264, "w")
        return H264
    except Exception:  # av.codec.codec.UnknownCodecError, named differently across PyAV versions
        return FALLBACK_CODEC


@dataclass(frozen=True)
class VideoInfo:
    """What the file says about its video stream; ``width``/``height`` as displayed (rotation applied)."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int  # as the container states it (0 when it does not)
    duration_s: float  # 0.0 when unknown
    rotation: int  # degrees counter-clockwise the player turns each decoded frame: 0, 90, 180 or 270
    codec: str

    @property
    def display(self) -> str:
        return f"{self.width}x{self.height}, {float(self.fps):.3g} frames/s, {self.duration_s:.1f} s"


@dataclass(frozen=True)
class Frame:
    index: int
    timestamp: float  # seconds from the stream's start
    image: np.ndarray  # HxWx3 uint8 RGB, rotation applied (and scaled down when the reader was asked to)


@dataclass(frozen=True)
class BadFrame:
    index: int
    timestamp: float
    error: str

    def describe(self) -> str:
        return f"frame {self.index} (at {self.timestamp:.2f} s) could not be decoded and was skipped: {self.error}"


def _ffmpeg_message(exc: Exception) -> str:
    """FFmpeg's reason without the path it appends (which may be a temporary upload name)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '")[0]


class VideoReader:
    """An open video file: ``info``, then ``frames()`` once. Decoding failures of single packets do not stop it:
    each becomes a ``BadFrame`` (in ``bad_frames``, and passed to ``on_bad_frame``). Use as a context manager.

    ``max_side`` scales frames whose longest displayed side is larger down to it (FFmpeg's scaler, before the
    conversion to RGB), for the app's stated limit; ``scale`` is then below 1."""

    def __init__(self, path: str | Path, *, max_side: int | None = None,
                 on_bad_frame: Callable[[BadFrame], None] | None = None) -> None:
        av = _av()
        self.path = Path(path)
        self.bad_frames: list[BadFrame] = []
        self.decoded = 0
        self.on_bad_frame = on_bad_frame
        name = self.path.name
        if not self.path.is_file():
            raise DetDemoError(f"{name}: no such file")
        if self.path.stat().st_size == 0:
            raise DetDemoError(f"{name}: the file is empty")
        try:
            self._container = av.open(str(self.path), mode="r")
        except av.error.FFmpegError as exc:
            raise DetDemoError(f"{name}: not a readable video (truncated, or not a video file): "
                               f"{_ffmpeg_message(exc)}") from None
        try:
            if not self._container.streams.video:
                kinds = sorted({s.type for s in self._container.streams})
                has = f"it has only {', '.join(kinds)} streams" if kinds else "it has no streams"
                raise DetDemoError(f"{name}: no video stream ({has})")
            self._stream = self._container.streams.video[0]
            # Slice threads, not frame threads: with frame threading FFmpeg reports a bad packet's error while
            # decoding the next one, so the wrong frame would be named (measured: off by one).
            self._stream.thread_type = "SLICE"
            self._first = self._peek()
        except BaseException:
            self._container.close()
            raise
        self.scale = 1.0
        self._max_side = max_side
        self.info = self._describe()
        if max_side is not None and max(self.info.width, self.info.height) > max_side:
            self.scale = max_side / max(self.info.width, self.info.height)

    # -- opening ---------------------------------------------------------------------------------------------
    def _fps(self) -> Fraction:
        for rate in (self._stream.average_rate, self._stream.guessed_rate, self._stream.base_rate):
            if rate and 0 < float(rate) <= 1000:
                return Fraction(rate)
        return DEFAULT_FPS

    def _start(self) -> float:
        s = self._stream
        return float(s.start_time * s.time_base) if s.start_time is not None and s.time_base else 0.0

    def _peek(self):
        """The first frame that decodes (kept, then yielded first): says the clip has frames at all, and gives the
        rotation and size before anything is written."""
        self._fps_value = self._fps()
        self._start_s = self._start()
        self._decoder = self._decode_all()
        for item in self._decoder:
            if isinstance(item, BadFrame):
                continue
            return item
        bad = f" ({len(self.bad_frames)} failed to decode)" if self.bad_frames else ""
        raise DetDemoError(f"{self.path.name}: no video frame could be decoded{bad}: the clip has zero frames "
                           "or is truncated")

    def _describe(self) -> VideoInfo:
        s, frame = self._stream, self._first
        rotation = _quarter_turns(frame.rotation) * 90
        width, height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
        if s.duration is not None and s.time_base:
            duration = float(s.duration * s.time_base)
        elif self._container.duration:
            duration = self._container.duration / 1_000_000  # AV_TIME_BASE
        else:
            duration = 0.0
        count = int(s.frames or 0) or (round(duration * float(self._fps_value)) if duration else 0)
        return VideoInfo(self.path, width, height, self._fps_value, count, duration, rotation, s.codec_context.name)

    # -- decoding --------------------------------------------------------------------------------------------
    def _where(self, pts, time_base) -> tuple[int, float]:
        if pts is None or not time_base:
            return self.decoded + len(self.bad_frames), 0.0
        t = max(0.0, float(pts * time_base) - self._start_s)
        return round(t * float(self._fps_value)), t

    def _bad(self, packet, exc: Exception) -> BadFrame:
        index, t = self._where(packet.pts, packet.time_base)
        bad = BadFrame(index, t, _ffmpeg_message(exc))
        self.bad_frames.append(bad)
        if self.on_bad_frame is not None:
            self.on_bad_frame(bad)
        return bad

    def _decode_all(self) -> Iterator:
        """Raw decoded frames (``av.VideoFrame``) and ``BadFrame``s, packet by packet, then the decoder's flush."""
        av = _av()
        stream = self._stream
        try:
            for packet in self._container.demux(stream):
                try:
                    frames = stream.decode(packet)  # a None-data packet flushes the decoder
                except av.error.FFmpegError as exc:
                    if packet.size:
                        yield self._bad(packet, exc)
                    continue
                yield from frames
        except av.error.FFmpegError as exc:  # the demuxer itself gave up: what follows is unreadable
            self.bad_frames.append(BadFrame(*self._where(None, None), f"the file ends early ({_ffmpeg_message(exc)})"))

    def frames(self, every: int = 1) -> Iterator[Frame]:
        """Every ``every``-th frame (by index) as RGB, rotation applied."""
        if every < 1:
            raise DetDemoError(f"--every must be at least 1, got {every}")
        for raw in _chain([self._first], self._decoder):
            if isinstance(raw, BadFrame):
                continue
            index, t = self._where(raw.pts, raw.time_base)
            self.decoded += 1
            if index % every:
                continue
            yield Frame(index, t, self._to_rgb(raw))

    def _to_rgb(self, raw) -> np.ndarray:
        if self.scale != 1.0:
            w, h = max(2, round(raw.width * self.scale)), max(2, round(raw.height * self.scale))
            rgb = raw.to_ndarray(format="rgb24", width=w, height=h)
        else:
            rgb = raw.to_ndarray(format="rgb24")
        turns = _quarter_turns(raw.rotation)
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _quarter_turns(rotation) -> int:
    """FFmpeg's display rotation (degrees counter-clockwise, [-180, 180]) as a count of quarter turns for
    ``np.rot90``; odd angles (never seen from real cameras) snap to the nearest quarter."""
    return round(float(rotation or 0) / 90.0) % 4


class VideoWriter:
    """Frames (HxWx3 uint8 RGB, all one size) into a video file at ``fps``: H.264 in yuv420p where available.

    ``path`` may be a temporary name (``fileio.atomic_path``), so the container format is given, not guessed.
    yuv420p needs even sizes: an odd last row or column is cropped (never scaled, so pixels stay where they were)."""

    def __init__(self, path: str | Path, fps: Fraction, *, container_format: str = "mp4",
                 codec: str | None = None) -> None:
        av = _av()
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.codec = codec or video_codec()
        self._container = av.open(str(path), mode="w", format=container_format)
        self._stream = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        av = _av()
        h, w = rgb.shape[0] - rgb.shape[0] % 2, rgb.shape[1] - rgb.shape[1] % 2
        if self._stream is None:
            self._stream = self._container.add_stream(self.codec, rate=self.fps,
                                                      options=ENCODER_OPTIONS.get(self.codec, {}))
            self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class FrameResult:
    """One processed frame: the image the model saw (display orientation, at the reader's scale), its detections
    (in that image's pixels) and, when tracking, a track id per detection."""

    frame: Frame
    det: Detections
    scale: float  # inference size / the video's size
    track_ids: np.ndarray | None = None

    def record(self) -> dict:
        """The frame's JSON record: boxes in the video's own pixels (XYXY), track ids when tracking."""
        boxes = self.det.boxes / self.scale
        items = []
        for i, (name, label, score) in enumerate(zip(self.det.names(), self.det.labels.tolist(),
                                                     self.det.scores.tolist())):
            item = {"label": int(label), "name": name, "score": round(float(score), 4),
                    "box": [round(float(v), 2) for v in boxes[i]]}
            if self.track_ids is not None:
                item["track_id"] = int(self.track_ids[i])
            items.append(item)
        return {"index": self.frame.index, "timestamp": round(self.frame.timestamp, 4), "detections": items}


def detect_frames(predictor, reader: VideoReader, *, every: int = 1, score_threshold: float = 0.5,
                  track: bool = False, classes: list[str] | None = None) -> Iterator[FrameResult]:
    """Each sampled frame through ``predictor`` (and the tracker, when ``track``), one at a time. ``classes``: keep
    only these (None: all); the tracker still sees every class, so an id does not change when a filter does."""
    from detdemo.inference.tracking import LOW_SCORE, ByteTracker

    tracker = ByteTracker(float(reader.info.fps) / every, score_threshold) if track else None
    ask = min(score_threshold, LOW_SCORE) if tracker is not None else score_threshold
    for frame in reader.frames(every):
        det = predictor.predict(frame.image, score_threshold=ask)
        ids = None
        if tracker is not None:
            ids = tracker.update(det)
            keep = det.scores >= score_threshold
            det, ids = det.select(keep), ids[keep]
        if classes is not None:
            keep = np.isin(np.asarray(det.names(), dtype=object), list(classes))
            det, ids = det.select(keep), (None if ids is None else ids[keep])
        yield FrameResult(frame, det, reader.scale, ids)


def annotate(result: FrameResult, *, masks: bool = True, boxes: bool = True, labels: bool = True) -> np.ndarray:
    """The frame with its detections drawn (``engine.draw``), HxWx3 uint8."""
    from detdemo.engine.draw import draw_detections, image_to_tensor

    drawn = draw_detections(image_to_tensor(result.frame.image), result.det, boxes=boxes, masks=masks,
                            labels=labels, track_ids=result.track_ids)
    return drawn.permute(1, 2, 0).contiguous().numpy()


@dataclass
class VideoOutputs:
    """The annotated video and its JSON, written as frames come and renamed into place together at the end: an
    error or an interrupt (Ctrl-C, a Stop in the app) leaves neither file half-written."""

    video_path: Path
    json_path: Path
    head: dict  # the JSON's leading keys (video, model, ...)
    fps: Fraction
    codec: str | None = None
    frames: int = 0
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> VideoOutputs:
        from detdemo.fileio import atomic_path, json_array_stream

        try:
            tmp = self._stack.enter_context(atomic_path(self.video_path))
            self._json = self._stack.enter_context(json_array_stream(self.json_path, self.head, "frames"))
            self._writer = self._stack.enter_context(VideoWriter(tmp, self.fps, codec=self.codec))
        except BaseException:
            self._stack.close()
            raise
        return self

    def add(self, result: FrameResult, annotated: np.ndarray) -> None:
        self._writer.write(annotated)
        self._json.append(result.record())
        self.frames += 1

    def finish(self, **tail) -> None:
        """Keys written after the frames (bad frames, counts); call before the block ends."""
        self._json.tail.update(tail)

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)


@dataclass(frozen=True)
class Finished:
    """A frame that went all the way through ``run_pipeline``: where it is in the clip, and what ``finish``
    returned for it. Deliberately without the frame's pixels, so finished frames cost nothing to queue."""

    index: int
    timestamp: float
    value: object = None


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()
FINISHED_QUEUE = 256  # finished frames the caller may fall behind by (small records; bounded all the same)


def run_pipeline(predictor, reader: VideoReader, finish: Callable[[FrameResult], object], *, every: int = 1,
                 score_threshold: float = 0.5, track: bool = False, classes: list[str] | None = None,
                 depth: int = 2) -> Iterator[Finished]:
    """Every sampled frame decoded and detected (``detect_frames``) on one thread, then ``finish``ed (drawn,
    encoded, written) on another, while the caller iterates over the finished frames, in order. Frame i is drawn and
    encoded while the model runs on frame i+1, and the caller's own pace (a progress bar, Gradio sending a segment)
    holds up neither.

    Both threads are this function's own, so their settings hold for the whole clip (Gradio runs each step of a
    generator on whichever worker thread is free). Torch's intra-op threads (``device.start_thread``): one in the
    finishing thread; in the detecting thread one too, or, when the graph itself runs in torch (eager, TorchScript),
    one core fewer than the process may use, so the finishing thread keeps a core of its own. Measured on the 2-core
    CPU under load, a 640x480 frame: a two-thread team for the host-side work's small tensors waits on its
    descheduled partner more than it works, and with the finishing thread busy beside it a two-thread TorchScript
    graph took 580-700 ms of CPU per frame against 62-68 ms on one thread (eager: 83-94 against 66).

    At most ``depth`` detected frames wait to be finished, so memory does not grow with the clip. An error in either
    thread is raised here. Closing the iterator (a Stop in the app, Ctrl-C, an error in the caller) stops both threads
    after the frame each is on and waits for them, so the model is free and no file is being written when it returns.
    """
    import torch

    from detdemo.inference.device import start_thread, usable_cpus

    stop = threading.Event()
    detected: queue.Queue = queue.Queue(maxsize=depth)
    finished: queue.Queue = queue.Queue(maxsize=FINISHED_QUEUE)

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):
        while not stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def detect() -> None:
        try:
            for result in detect_frames(predictor, reader, every=every, score_threshold=score_threshold,
                                        track=track, classes=classes):
                if not put(detected, result):
                    return
            put(detected, _END)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            put(detected, _Failed(exc))

    def finish_all() -> None:
        while True:
            item = get(detected)
            if item is None:  # stopped
                return
            if item is _END or isinstance(item, _Failed):
                put(finished, item)
                return
            try:
                done = Finished(item.frame.index, item.frame.timestamp, finish(item))
            except BaseException as exc:  # noqa: BLE001
                put(finished, _Failed(exc))
                return
            if not put(finished, done):
                return

    model_threads = 1
    if getattr(predictor, "uses_torch_threads", True):
        model_threads = max(1, min(torch.get_num_threads(), usable_cpus() - 1))
    threads: list[threading.Thread] = []
    try:  # started inside: an interrupt even as the first starts still stops it (the finally sets ``stop``)
        threads.append(start_thread(detect, name="detdemo-video-detect", torch_threads=model_threads))
        threads.append(start_thread(finish_all, name="detdemo-video-finish", torch_threads=1))
        while True:
            item = finished.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def output_head(info: VideoInfo, predictor, *, every: int, score_threshold: float, track: bool,
                classes: list[str] | None = None) -> dict:
    """The JSON's leading keys: what was run on what."""
    return {"video": info.path.name, "width": info.width, "height": info.height, "fps": float(info.fps),
            "rotation": info.rotation, "every": every, "score_threshold": score_threshold, "tracking": track,
            "classes": list(predictor.class_names) if classes is None else list(classes),
            "model": str(predictor.path), "backend": predictor.backend, "device": predictor.device,
            "categories": [{"id": i, "name": n} for i, n in enumerate(predictor.class_names, start=1)],
            "boxes": "XYXY in the video's pixels as displayed (rotation applied)"}


def output_tail(reader: VideoReader, frames_written: int) -> dict:
    return {"frames_processed": frames_written, "frames_decoded": reader.decoded,
            "bad_frames": [{"index": b.index, "timestamp": round(b.timestamp, 4), "error": b.error}
                           for b in reader.bad_frames]}


def output_fps(info: VideoInfo, every: int) -> Fraction:
    return info.fps / every


def is_video(path: Path) -> bool:
    from detdemo.fileio import VIDEO_EXTENSIONS

    return path.suffix.lower() in VIDEO_EXTENSIONS


def quiet_ffmpeg() -> None:
    """FFmpeg logs every concealed macroblock to stderr; our own warnings name the bad frames instead."""
    with contextlib.suppress(Exception):
        import av.logging

        av.logging.set_level(av.logging.PANIC)
