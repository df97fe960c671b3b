"""Poses frame after frame with person ids: what a video or webcam demo runs on each frame.

One frame: person boxes (from the box source on detection frames, else propagated from the previous
frame's keypoints, TRACKING.DETECT_EVERY) -> a pose backend (hrnext_d2/engine/pose_backends.py) ->
the tracker (ids, optional smoothing; hrnext_d2/utils/tracking.py). The same object serves images
one by one (no tracker), video files and webcams, so the loop tested on a file is the webcam's.
"""
import logging
import math
from typing import Optional

import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.structures import Instances

from ..data.datasets.keypoint_metadata import resolve_keypoint_metadata
from ..utils.tracking import PoseTracker, keypoint_box
from .person_boxes import FrameKey, PersonBoxSource
from .pose_backends import PoseBackend

__all__ = ["VideoPosePredictor"]

logger = logging.getLogger(__name__)


class VideoPosePredictor:
    """``predictor(frame_bgr, key, timestamp) -> Instances`` (+ ``track_ids`` when tracking).

    Args:
        backend: a pose backend.
        box_source: person boxes on detection frames; None = the backend finds its own.
        tracker: ids across frames; None = frames are independent (images).
        detect_every: run the box source every this many frames, propagate boxes in between
            (needs a tracker and a backend that takes boxes; else every frame is a detection frame).
        keypoint_thresh / propagated_box_expand / propagated_min_keypoints: TRACKING.* (see config).
    """

    def __init__(
        self,
        backend: PoseBackend,
        box_source: Optional[PersonBoxSource] = None,
        tracker: Optional[PoseTracker] = None,
        *,
        detect_every: int = 1,
        keypoint_thresh: float = 0.3,
        propagated_box_expand: float = 1.25,
        propagated_min_keypoints: float = 0.3,
    ):
        if detect_every < 1:
            raise ValueError(f"TRACKING.DETECT_EVERY must be >= 1, got {detect_every}")
        if not propagated_box_expand > 0:
            raise ValueError(f"TRACKING.PROPAGATED_BOX_EXPAND must be > 0, got {propagated_box_expand}")
        if box_source is not None and not backend.accepts_boxes:
            raise ValueError(f"backend {backend.name!r} finds its own persons: it cannot use a person box source")
        if detect_every > 1 and (tracker is None or not backend.accepts_boxes):
            logger.warning(
                f"TRACKING.DETECT_EVERY {detect_every} ignored: propagating boxes needs tracking and a backend that "
                f"takes boxes (backend {backend.name!r}, tracking {'on' if tracker is not None else 'off'})"
            )
            detect_every = 1
        self.backend = backend
        self.box_source = box_source
        self.tracker = tracker
        self.detect_every = int(detect_every)
        self.keypoint_thresh = float(keypoint_thresh)
        self.propagated_box_expand = float(propagated_box_expand)
        self.propagated_min_keypoints = float(propagated_min_keypoints)
        self.reset()

    @classmethod
    def from_config(
        cls,
        cfg: CfgNode,
        backend: PoseBackend,
        box_source: Optional[PersonBoxSource] = None,
        track: bool = True,
        fps: float = 30.0,
    ) -> "VideoPosePredictor":
        """TRACKING.* of `cfg`; OKS sigmas of its keypoints (resolve_keypoint_metadata). `track`
        False (or TRACKING.ENABLED False) gives independent frames."""
        t = cfg.TRACKING
        tracker = None
        if track and t.ENABLED:
            sigmas = resolve_keypoint_metadata(cfg).oks_sigmas if t.SIMILARITY != "iou" else None
            tracker = PoseTracker.from_config(cfg, sigmas, fps=fps)
        return cls(
            backend,
            box_source,
            tracker,
            detect_every=t.DETECT_EVERY if tracker is not None else 1,
            keypoint_thresh=t.KEYPOINT_THRESH,
            propagated_box_expand=t.PROPAGATED_BOX_EXPAND,
            propagated_min_keypoints=t.PROPAGATED_MIN_KEYPOINTS,
        )

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self._frames_since_detection = 0
        self.num_frames = 0
        self.num_detection_frames = 0
        if self.tracker is not None:
            self.tracker.reset()

    def _propagated_boxes(self, image_hw) -> np.ndarray:
        """Boxes of the persons seen in the previous frame, from their keypoints moved by their velocity."""
        h, w = image_hw
        boxes = []
        for track in self.tracker.tracks:
            if track.age != 0:
                continue
            box = keypoint_box(track.keypoints, self.keypoint_thresh, self.propagated_box_expand)
            if box is None:
                box = track.box
            box = box + np.tile(track.velocity, 2)
            box = np.clip(box, [0, 0, 0, 0], [w, h, w, h])
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                boxes.append(box)
        return np.asarray(boxes, np.float32).reshape(-1, 4)

    def _is_detection_frame(self, propagated: np.ndarray) -> bool:
        if self.detect_every == 1 or self.num_frames == 0:
            return True
        return self._frames_since_detection >= self.detect_every or len(propagated) == 0

    def __call__(self, frame_bgr: np.ndarray, key: Optional[FrameKey] = None, timestamp: Optional[float] = None) -> Instances:
        """Poses of one frame. key: names the frame for a detections file (default: the frame count);
        timestamp: seconds, for the smoother (default: frame count / the tracker's fps)."""
        key = FrameKey(frame=self.num_frames) if key is None else key
        propagated = self._propagated_boxes(frame_bgr.shape[:2]) if self.detect_every > 1 and self.num_frames else None
        if propagated is None or self._is_detection_frame(propagated):
            if self.box_source is None:
                instances = self.backend(frame_bgr)
            else:
                boxes, scores = self.box_source(frame_bgr, key)
                instances = self.backend(frame_bgr, boxes, scores)
            self._frames_since_detection = 1
            self.num_detection_frames += 1
        else:
            # Propagated boxes carry score 1: the instance score is then the keypoints' quality.
            instances = self.backend(frame_bgr, propagated, np.ones(len(propagated), np.float32))
            instances = self._drop_lost(instances)
            self._frames_since_detection += 1
        self.num_frames += 1
        if self.tracker is not None:
            self._track(instances, timestamp)
        return instances

    def _drop_lost(self, instances: Instances) -> Instances:
        """Poses from propagated boxes with too few confident keypoints: the person has left."""
        kpts = instances.pred_keypoints
        if len(kpts) == 0:
            return instances
        need = math.ceil(self.propagated_min_keypoints * kpts.shape[1])
        keep = (kpts[:, :, 2] >= self.keypoint_thresh).sum(dim=1) >= need
        return instances[keep]

    def _track(self, instances: Instances, timestamp: Optional[float]) -> None:
        kpts = instances.pred_keypoints.numpy() if len(instances) else np.zeros((0, 0, 3))
        boxes = instances.pred_boxes.tensor.numpy() if len(instances) else np.zeros((0, 4))
        scores = instances.scores.numpy() if len(instances) else np.zeros(0)
        result = self.tracker.update(kpts, boxes, scores, timestamp)
        if len(instances):
            instances.pred_keypoints = torch.as_tensor(result.keypoints, dtype=torch.float32)
        instances.track_ids = torch.as_tensor(result.track_ids, dtype=torch.int64)
