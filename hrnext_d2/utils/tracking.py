"""Person ids that persist from frame to frame: greedy OKS / IoU association with a maximum age.

Why this tracker: pose demos need a stable id per person (mmpose's pose-tracking demo and mmdeploy's
pose tracker associate greedily by OKS or box IoU); a detector-free association of this kind costs
nothing next to the network and needs no appearance model.

Why the mean of OKS and IoU by default: each fails where the other holds. When two people cross,
their boxes overlap (IoU alone swaps their ids as soon as boxes are a few pixels off), and a
top-down model may put the front person's pose in the other's box (OKS alone then swaps). Measured
on synthetic crowd videos: IoU alone swaps ids with 1 px box noise (tests/utils/test_tracking.py),
OKS alone with the quickstart model's poses (README), their mean in neither.

Each frame, every live track predicts where its person is (its last pose shifted by its velocity,
times the frames since it was last seen); the frame's persons and the tracks are paired best first
while the similarity is at least ``min_similarity``; unpaired persons start new tracks (new ids,
never reused) and unpaired tracks age, ending after ``max_age`` frames unseen. Optionally each
track's keypoints are smoothed with a One-Euro filter (hrnext_d2/utils/one_euro.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .one_euro import OneEuroFilter

__all__ = [
    "Track",
    "TrackedPoses",
    "PoseTracker",
    "box_iou_matrix",
    "pose_oks_matrix",
    "keypoint_box",
    "SIMILARITIES",
]

SIMILARITIES = ("oks_iou", "oks", "iou")


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (len(a), len(b)) of XYXY boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def pose_oks_matrix(
    poses: np.ndarray, refs: np.ndarray, ref_areas: np.ndarray, sigmas: Sequence[float], keypoint_thresh: float
) -> np.ndarray:
    """OKS (len(poses), len(refs)) as COCO defines it, with `refs` in the role of the ground truth.

    poses, refs: (N, K, 3) (x, y, score); ref_areas: (R,) the reference persons' areas. Only keypoints
    scoring at least `keypoint_thresh` in both count; a pair with none has OKS 0.
    """
    poses = np.asarray(poses, dtype=np.float64).reshape(len(poses), -1, 3)
    refs = np.asarray(refs, dtype=np.float64).reshape(len(refs), -1, 3)
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # COCO: (2 sigma)^2
    if poses.shape[1] != len(var) or refs.shape[1] != len(var):
        raise ValueError(f"OKS: {len(var)} sigmas for poses with {poses.shape[1]} and {refs.shape[1]} keypoints")
    d2 = ((poses[:, None, :, :2] - refs[None, :, :, :2]) ** 2).sum(-1)  # (N, R, K)
    area = np.maximum(np.asarray(ref_areas, dtype=np.float64), 1.0)[None, :, None]
    e = np.exp(-d2 / (2.0 * area * var[None, None, :]))
    both = (poses[:, None, :, 2] >= keypoint_thresh) & (refs[None, :, :, 2] >= keypoint_thresh)
    count = both.sum(-1)
    return np.where(count > 0, (e * both).sum(-1) / np.maximum(count, 1), 0.0)


def keypoint_box(keypoints: np.ndarray, keypoint_thresh: float, expand: float, min_keypoints: int = 2) -> Optional[np.ndarray]:
    """XYXY box around the keypoints scoring at least `keypoint_thresh`, enlarged `expand` times about
    its centre; None with fewer than `min_keypoints` such keypoints."""
    kp = np.asarray(keypoints, dtype=np.float64)
    good = kp[kp[:, 2] >= keypoint_thresh, :2]
    if len(good) < max(min_keypoints, 1):
        return None
    lo, hi = good.min(axis=0), good.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * expand
    return np.concatenate([centre - half, centre + half])


@dataclass
class Track:
    """One person followed over frames. `keypoints` / `box` are the last seen (unsmoothed) ones."""

    track_id: int
    keypoints: np.ndarray  # (K, 3)
    box: np.ndarray  # (4,) XYXY
    score: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # pixels per frame
    age: int = 0  # frames since last seen (0 = seen in the last frame)
    hits: int = 1
    smoother: Optional[OneEuroFilter] = None

    def predicted_shift(self) -> np.ndarray:
        """Where the person has moved by the next frame (constant velocity since last seen)."""
        return self.velocity * (self.age + 1)


class TrackedPoses(NamedTuple):
    """One frame's tracking result, aligned with the persons given to `PoseTracker.update`."""

    track_ids: np.ndarray  # (M,) int64
    keypoints: np.ndarray  # (M, K, 3): smoothed when smoothing is on, else the input


class PoseTracker:
    """Greedy OKS / IoU association of each frame's poses with live tracks.

    Args:
        oks_sigmas: per-keypoint OKS sigmas (the dataset's; needed unless `similarity` is "iou").
        similarity: "oks_iou" (the mean of the two), "oks" (keypoints) or "iou" (boxes).
        min_similarity: pairs below this never associate.
        max_age: a track unseen for more than this many frames ends.
        keypoint_thresh: keypoints scoring below this are ignored by OKS and by the smoother.
        smoothing: None, or a One-Euro filter's (min_cutoff, beta, d_cutoff) for each track's keypoints.
        fps: frames per second when `update` is given no timestamp (the smoother's clock).
    """

    def __init__(
        self,
        *,
        oks_sigmas: Optional[Sequence[float]] = None,
        similarity: str = "oks_iou",
        min_similarity: float = 0.3,
        max_age: int = 10,
        keypoint_thresh: float = 0.3,
        smoothing: Optional[Tuple[float, float, float]] = None,
        fps: float = 30.0,
    ):
        if similarity not in SIMILARITIES:
            raise ValueError(f"TRACKING.SIMILARITY must be one of {SIMILARITIES}, got {similarity!r}")
        if similarity != "iou" and not oks_sigmas:
            raise ValueError(f"PoseTracker: similarity {similarity!r} needs the keypoints' OKS sigmas")
        if max_age < 0:
            raise ValueError(f"TRACKING.MAX_AGE must be >= 0, got {max_age}")
        if not 0 <= min_similarity <= 1:
            raise ValueError(f"TRACKING.MIN_SIMILARITY must be in [0, 1], got {min_similarity}")
        if not fps > 0:
            raise ValueError(f"PoseTracker: fps must be > 0, got {fps}")
        self.oks_sigmas = None if oks_sigmas is None else np.asarray(oks_sigmas, dtype=np.float64)
        self.similarity = similarity
        self.min_similarity = float(min_similarity)
        self.max_age = int(max_age)
        self.keypoint_thresh = float(keypoint_thresh)
        self.smoothing = None if smoothing is None else tuple(float(v) for v in smoothing)
        if self.smoothing is not None:
            OneEuroFilter(*self.smoothing)  # validates the parameters now, not at the first person
        self.fps = float(fps)
        self.reset()

    @classmethod
    def from_config(cls, cfg: Any, oks_sigmas: Sequence[float], fps: float = 30.0) -> "PoseTracker":
        """TRACKING.* of a config (hrnext_d2/config.py)."""
        t = cfg.TRACKING
        smoothing = None
        if t.SMOOTHING.ENABLED:
            smoothing = (t.SMOOTHING.MIN_CUTOFF, t.SMOOTHING.BETA, t.SMOOTHING.D_CUTOFF)
        return cls(
            oks_sigmas=oks_sigmas,
            similarity=t.SIMILARITY,
            min_similarity=t.MIN_SIMILARITY,
            max_age=t.MAX_AGE,
            keypoint_thresh=t.KEYPOINT_THRESH,
            smoothing=smoothing,
            fps=fps,
        )

    def reset(self) -> None:
        self.tracks: List[Track] = []
        self._next_id = 0
        self._frames = 0

    def _similarity(self, keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if not self.tracks or len(keypoints) == 0:
            return np.zeros((len(keypoints), len(self.tracks)))
        shifts = np.stack([t.predicted_shift() for t in self.tracks])
        track_boxes = np.stack([t.box for t in self.tracks]) + np.tile(shifts, 2)
        iou = box_iou_matrix(boxes, track_boxes) if self.similarity != "oks" else None
        if self.similarity == "iou":
            return iou
        refs = np.stack([t.keypoints for t in self.tracks]).copy()
        refs[:, :, :2] += shifts[:, None, :]
        areas = np.prod(np.clip(track_boxes[:, 2:] - track_boxes[:, :2], 0, None), axis=1)
        oks = pose_oks_matrix(keypoints, refs, areas, self.oks_sigmas, self.keypoint_thresh)
        return oks if iou is None else 0.5 * (oks + iou)

    def update(
        self,
        keypoints: np.ndarray,
        boxes: np.ndarray,
        scores: Optional[np.ndarray] = None,
        timestamp: Optional[float] = None,
    ) -> TrackedPoses:
        """Associates one frame's persons (keypoints (M, K, 3), boxes XYXY (M, 4)) with the tracks.

        timestamp: seconds (increasing) for the smoother; default = frames so far / fps.
        """
        keypoints = np.asarray(keypoints, dtype=np.float64)
        keypoints = keypoints.reshape(len(keypoints), -1, 3) if len(keypoints) else np.zeros((0, 0, 3))
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) != len(keypoints):
            raise ValueError(f"PoseTracker.update: {len(keypoints)} poses but {len(boxes)} boxes")
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
        t = self._frames / self.fps if timestamp is None else float(timestamp)
        self._frames += 1

        sim = self._similarity(keypoints, boxes)
        det_of_track = {}
        track_of_det = {}
        if sim.size:
            order = np.argsort(-sim, axis=None, kind="stable")
            for flat in order:
                d, k = (int(i) for i in np.unravel_index(flat, sim.shape))
                if sim[d, k] < self.min_similarity:
                    break
                if d in track_of_det or k in det_of_track:
                    continue
                track_of_det[d], det_of_track[k] = k, d

        ids = np.zeros(len(boxes), dtype=np.int64)
        out = keypoints.copy()
        survivors = []
        for k, track in enumerate(self.tracks):
            if k in det_of_track:
                d = det_of_track[k]
                gap = track.age + 1
                moved = (_centre(boxes[d]) - _centre(track.box)) / gap
                track.velocity = moved if track.hits == 1 else 0.5 * track.velocity + 0.5 * moved
                track.keypoints, track.box, track.score = keypoints[d].copy(), boxes[d].copy(), float(scores[d])
                track.age, track.hits = 0, track.hits + 1
                ids[d] = track.track_id
                out[d] = self._smooth(track, keypoints[d], t)
                survivors.append(track)
            else:
                track.age += 1
                if track.age <= self.max_age:
                    survivors.append(track)
                elif track.smoother is not None:
                    track.smoother.reset()
        for d in range(len(boxes)):
            if d in track_of_det:
                continue
            track = Track(self._next_id, keypoints[d].copy(), boxes[d].copy(), float(scores[d]))
            self._next_id += 1
            if self.smoothing is not None:
                track.smoother = OneEuroFilter(*self.smoothing)
            ids[d] = track.track_id
            out[d] = self._smooth(track, keypoints[d], t)
            survivors.append(track)
        self.tracks = survivors
        return TrackedPoses(ids, out)

    def _smooth(self, track: Track, keypoints: np.ndarray, t: float) -> np.ndarray:
        if track.smoother is None:
            return keypoints
        out = keypoints.copy()
        height = max(track.box[3] - track.box[1], 1.0)
        out[:, :2] = track.smoother(keypoints[:, :2], t, scale=height, valid=keypoints[:, 2] >= self.keypoint_thresh)
        return out


def _centre(box: np.ndarray) -> np.ndarray:
    return (np.asarray(box[:2]) + np.asarray(box[2:])) / 2
