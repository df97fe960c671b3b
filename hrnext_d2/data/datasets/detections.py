"""Person detections (COCO results format) used as test-time boxes of top-down pose estimation."""
import math
from collections import defaultdict
from typing import Dict, Tuple

import numpy as np

from .coco import read_json_file

__all__ = ["load_person_detections"]


def load_person_detections(json_file: str, score_thresh: float = 0.0) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
    """Read a detections json into {image_id: (boxes_xywh float32 (N, 4), scores float32 (N,))}.

    The file is a list of {"image_id", "bbox": [x, y, w, h], "score", optional "category_id"}
    (COCO results format, e.g. COCO_val2017_detections_AP_H_56_person.json). As mmpose 0.23: only
    category 1 (person) is kept when category_id is present, and boxes with score < score_thresh are
    dropped. Boxes keep their raw numbers and their order in the file; images without a kept box are
    absent from the result.
    """
    dets = read_json_file(json_file, "person detections file")
    if not isinstance(dets, list):
        raise ValueError(
            f"{json_file}: expected a list of detections in COCO results format "
            f"([{{'image_id', 'bbox', 'score', 'category_id'}}, ...]), got {type(dets).__name__}"
        )
    boxes = defaultdict(list)
    scores = defaultdict(list)
    for i, det in enumerate(dets):
        if not isinstance(det, dict) or not all(k in det for k in ("image_id", "bbox", "score")):
            raise ValueError(f"{json_file}: detection #{i} lacks one of 'image_id', 'bbox', 'score': {det!r}")
        if det.get("category_id", 1) != 1:
            continue
        bbox, score = det["bbox"], det["score"]
        try:
            values = [float(v) for v in bbox] + [float(score)]
        except (TypeError, ValueError):
            values = None
        if values is None or len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"{json_file}: detection #{i} (image id {det['image_id']}) needs a bbox of 4 finite numbers "
                f"and a finite score, got bbox={bbox!r} score={score!r}"
            )
        if values[2] < 0 or values[3] < 0:
            raise ValueError(f"{json_file}: detection #{i} (image id {det['image_id']}) has a negative size {bbox!r}")
        if values[4] < score_thresh:
            continue
        boxes[det["image_id"]].append(values[:4])
        scores[det["image_id"]].append(values[4])
    return {
        img_id: (np.asarray(boxes[img_id], dtype=np.float32).reshape(-1, 4), np.asarray(scores[img_id], dtype=np.float32))
        for img_id in boxes
    }
