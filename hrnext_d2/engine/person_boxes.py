"""Where a top-down demo gets its person boxes: a detector, a detections file, or the whole image.

Why a small interface: the video loop asks for boxes only on detection frames (TRACKING.DETECT_EVERY)
and is the same whichever source answers. A source is called with the frame (BGR) and a
``FrameKey`` that names it (video frame index, or image file), and returns XYXY float32 boxes (N, 4)
with scores (N,).
"""
import logging
import math
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from detectron2.config import CfgNode

from ..data.datasets.coco import read_json_file, sanitize_box_xywh
from ..modeling.meta_arch.person_detector import PersonDetector, build_person_detector

__all__ = [
    "FrameKey",
    "PersonBoxSource",
    "WholeImageBoxes",
    "DetectorBoxes",
    "DetectionsFileBoxes",
    "build_person_box_source",
]

logger = logging.getLogger(__name__)

BoxesAndScores = Tuple[np.ndarray, np.ndarray]


class FrameKey(NamedTuple):
    """Names a frame for a detections file: `frame` (video frame index) or `image` (file path)."""

    frame: Optional[int] = None
    image: Optional[str] = None


def _empty() -> BoxesAndScores:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


class PersonBoxSource:
    """``source(image_bgr, key) -> (boxes XYXY float32 (N, 4), scores float32 (N,))``."""

    def __call__(self, image_bgr: np.ndarray, key: FrameKey) -> BoxesAndScores:
        raise NotImplementedError


class WholeImageBoxes(PersonBoxSource):
    """The whole image is one person box (score 1): for images that hold one person."""

    def __call__(self, image_bgr, key) -> BoxesAndScores:
        h, w = image_bgr.shape[:2]
        return np.array([[0.0, 0.0, w, h]], np.float32), np.ones(1, np.float32)


class DetectorBoxes(PersonBoxSource):
    """A Detectron2 person detector (MODEL.TOPDOWN.PERSON_DETECTOR.*), with its score threshold."""

    def __init__(self, detector: PersonDetector, device: str = "cpu"):
        self.detector = detector
        self.device = torch.device(device)

    def __call__(self, image_bgr, key) -> BoxesAndScores:
        h, w = image_bgr.shape[:2]
        tensor = torch.as_tensor(np.ascontiguousarray(image_bgr.transpose(2, 0, 1)))
        boxes, scores = self.detector([{"image": tensor, "height": h, "width": w}], "BGR", self.device)[0]
        return boxes.astype(np.float32).reshape(-1, 4), scores.astype(np.float32)


def _finite(values) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


class DetectionsFileBoxes(PersonBoxSource):
    """Boxes from a json file: COCO results (a list of {"bbox": XYWH, "score", ...}, e.g. a
    detector's output or this demo's own --json) or a COCO annotation file (score 1, the persons and
    boxes evaluation with ground-truth boxes uses).

    A record names its frame by "frame" (video frame index) or "image" / "file_name" (matched by
    base name), else by "image_id": the frame index for a video, the number in an image's file name
    (COCO's 000000123456.jpg) for an image. Only category 1 (person) is kept when a record has a
    category_id; boxes scoring below `score_thresh` are dropped.
    """

    def __init__(self, json_file: str, score_thresh: float = 0.0):
        self.json_file = json_file
        self.score_thresh = float(score_thresh)
        self.by_frame: Dict[int, List] = {}
        self.by_name: Dict[str, List] = {}
        self.by_id: Dict[object, List] = {}
        data = read_json_file(json_file, "person boxes file (--boxes)")
        if isinstance(data, list):
            self._read_results(data)
        elif isinstance(data, dict) and isinstance(data.get("annotations"), list):
            self._read_annotations(data)
        else:
            raise ValueError(
                f"{json_file}: expected COCO results (a list of {{'image_id', 'bbox', 'score'}}) or a COCO "
                "annotation file (with 'images' and 'annotations')"
            )
        self._unmatched_logged = False

    def _box(self, rec: dict, i: int, what: str) -> Optional[Tuple[List[float], float]]:
        bbox, score = rec.get("bbox"), rec.get("score", 1.0)
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not _finite(list(bbox) + [score]):
            raise ValueError(f"{self.json_file}: {what} #{i} needs a bbox of 4 finite numbers and a finite score, got {rec!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{self.json_file}: {what} #{i} has a negative size {bbox!r}")
        if rec.get("category_id", 1) != 1 or float(score) < self.score_thresh:
            return None
        x, y, w, h = (float(v) for v in bbox)
        return [x, y, x + w, y + h], float(score)

    def _read_results(self, data: list) -> None:
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise ValueError(f"{self.json_file}: detection #{i} is not an object: {rec!r}")
            box = self._box(rec, i, "detection")
            if box is None:
                continue
            if "frame" in rec:
                self.by_frame.setdefault(int(rec["frame"]), []).append(box)
            elif "image" in rec or "file_name" in rec:
                self.by_name.setdefault(os.path.basename(str(rec.get("image", rec.get("file_name")))), []).append(box)
            elif "image_id" in rec:
                self.by_id.setdefault(rec["image_id"], []).append(box)
            else:
                raise ValueError(f"{self.json_file}: detection #{i} names no 'frame', 'image' or 'image_id': {rec!r}")

    def _read_annotations(self, data: dict) -> None:
        """The boxes evaluation takes from ground truth (mmpose 0.23's rule, as the test loader):
        non-crowd persons with labelled keypoints, boxes clipped to the image ("clean" boxes)."""
        images = {img["id"]: img for img in data.get("images", []) if isinstance(img, dict) and "id" in img}
        for i, ann in enumerate(data["annotations"]):
            if ann.get("iscrowd", 0) or ann.get("num_keypoints", 1) == 0:
                continue
            if "keypoints" in ann and not any(v > 0 for v in ann["keypoints"][2::3]):
                continue
            box = self._box(dict(ann, score=1.0), i, "annotation")
            if box is None:
                continue
            img = images.get(ann.get("image_id"))
            if img is not None and "width" in img and "height" in img:
                clean = sanitize_box_xywh(ann["bbox"], img["width"], img["height"], ann.get("area"))
                if clean is None:
                    continue
                x, y, w, h = clean
                box = ([x, y, x + w, y + h], 1.0)
            self.by_id.setdefault(ann.get("image_id"), []).append(box)
            if img is not None and "frame" in img:
                self.by_frame.setdefault(int(img["frame"]), []).append(box)
            if img is not None and "file_name" in img:
                self.by_name.setdefault(os.path.basename(img["file_name"]), []).append(box)

    def _lookup(self, key: FrameKey) -> Optional[List]:
        if key.frame is not None:  # a video: frames without a record have no person
            if self.by_frame:
                return self.by_frame.get(int(key.frame), [])
            return self.by_id.get(int(key.frame), [])
        if key.image is not None:
            name = os.path.basename(key.image)
            if name in self.by_name:
                return self.by_name[name]
            stem = os.path.splitext(name)[0]
            if stem.isdigit() and int(stem) in self.by_id:
                return self.by_id[int(stem)]
        return None

    def __call__(self, image_bgr, key) -> BoxesAndScores:
        found = self._lookup(key)
        if found is None:
            if not self._unmatched_logged:
                logger.warning(
                    f"{self.json_file} has no boxes for image {key.image!r} (records are matched by 'image' / "
                    "'file_name', or by 'image_id' = the number in the file name); it is drawn without persons"
                )
                self._unmatched_logged = True
            return _empty()
        if not found:
            return _empty()
        boxes = np.array([b for b, _ in found], np.float32).reshape(-1, 4)
        scores = np.array([s for _, s in found], np.float32)
        return boxes, scores


def build_person_box_source(
    spec: str, cfg: CfgNode, detector: Optional[PersonDetector] = None
) -> PersonBoxSource:
    """`spec`: "detector" (MODEL.TOPDOWN.PERSON_DETECTOR; the whole image when none is configured),
    "whole-image", or the path of a boxes json (DetectionsFileBoxes, scores from
    DATASETS.DET_SCORE_THRESH). `detector`: an already built person detector to reuse."""
    if spec == "whole-image":
        return WholeImageBoxes()
    if spec == "detector":
        if detector is None and cfg.MODEL.TOPDOWN.PERSON_DETECTOR.CONFIG_FILE:
            detector = build_person_detector(cfg)
        if detector is None:
            logger.info("No person detector configured (MODEL.TOPDOWN.PERSON_DETECTOR.CONFIG_FILE): the whole image is one person box")
            return WholeImageBoxes()
        return DetectorBoxes(detector, cfg.MODEL.DEVICE)
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"--boxes {spec!r}: not 'detector', 'whole-image', nor an existing json file")
    return DetectionsFileBoxes(spec, cfg.DATASETS.DET_SCORE_THRESH)
