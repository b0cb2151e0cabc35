"""Track ids across video frames: a thin adapter from ``Detections`` to Roboflow's ``trackers`` ByteTrack and back.

Why ``trackers`` (``trackers.ByteTrackTracker``): it is Roboflow's maintained, Apache-2.0, clean-room
re-implementation of ByteTrack (and SORT, OC-SORT, BoT-SORT behind the same ``update(sv.Detections)`` call), with
releases through 2026 and tests against the published MOT figures. The alternatives were worse fits:
``supervision`` dropped its own ``sv.ByteTrack`` (moved to ``trackers``); ``norfair`` pins ``numpy<2`` (ours is 2.x);
``boxmot`` pulls in timm, pandas, scikit-learn, pyarrow and more (a Space would install all of them). The price of
``trackers`` is OpenCV (``opencv-python``), which it imports at start-up; it needs no weights and no network.

ByteTrack associates in two stages: confident detections to tracks first, then low-score ones to the tracks left
(recovering briefly occluded objects). So the model is asked for detections down to ``LOW_SCORE`` and the tracker
sees them all; only those at or above the user's threshold are shown and written, each with its track id.

Tracking is per class (one ByteTrack per label, ids numbered across all of them): a detector often finds one object
twice under two classes (a circle also scored as a square), and class-agnostic association then lets the duplicate
steal the object's track from one frame to the next (seen on the bundled shapes model: ids swapped mid-clip).
"""

from __future__ import annotations

import numpy as np

from detdemo.inference.detections import Detections

LOW_SCORE = 0.1  # ByteTrack's second stage: detections between this and the threshold only extend existing tracks
NO_TRACK = -1  # a detection no track holds (yet): ByteTrack confirms a new track on its second consecutive frame


class ByteTracker:
    """Stable ids for one video's detections, frame after frame (``update`` once per processed frame)."""

    def __init__(self, frame_rate: float, score_threshold: float) -> None:
        self.frame_rate = max(float(frame_rate), 1e-3)
        self.threshold = max(float(score_threshold), LOW_SCORE)
        self._trackers: dict[int, object] = {}  # label -> its ByteTrackTracker
        self._ids: dict[tuple[int, int], int] = {}  # (label, that tracker's id) -> the id shown

    def _tracker(self, label: int):
        if label not in self._trackers:
            from trackers import ByteTrackTracker

            self._trackers[label] = ByteTrackTracker(frame_rate=self.frame_rate,
                                                     track_activation_threshold=self.threshold,
                                                     high_conf_det_threshold=self.threshold)
        return self._trackers[label]

    def update(self, det: Detections) -> np.ndarray:
        """Track ids aligned with ``det`` (int64, ``NO_TRACK`` where none). Every class's tracker is updated on
        every frame, those with no detection too (so their tracks age and are dropped on time)."""
        import supervision as sv

        ids = np.full(len(det), NO_TRACK, dtype=np.int64)
        labels = np.asarray(det.labels, dtype=np.int64)
        for label in sorted(set(labels.tolist()) | set(self._trackers)):
            index = np.flatnonzero(labels == label)
            detections = sv.Detections(xyxy=np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)[index],
                                       confidence=np.asarray(det.scores, dtype=np.float64)[index],
                                       class_id=labels[index], data={"index": index})
            tracked = self._tracker(label).update(detections)  # every detection comes back, possibly reordered
            for i, local in zip(np.asarray(tracked.data.get("index", []), dtype=np.int64).tolist(),
                                np.asarray(tracked.tracker_id, dtype=np.int64).tolist()):
                if local != NO_TRACK:
                    ids[i] = self._ids.setdefault((label, local), len(self._ids))
        return ids
