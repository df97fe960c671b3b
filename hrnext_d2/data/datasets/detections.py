"""Person detections (COCO results format) used as test-time boxes of top-down pose estimation.

A detections file that does not belong to the test set is the silent way to a low AP: images without
boxes simply score nothing. So the file's image ids are matched against the dataset's: no match is an
error with examples of both, a partial match a warning with counts, and ids written as strings
("785") are matched by value to integer ids (and the other way round).
"""
import logging
import math
from collections import defaultdict
from typing import Any, Collection, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from .coco import read_json_file

__all__ = ["load_person_detections", "match_detection_image_ids"]

logger = logging.getLogger(__name__)

_EXAMPLES = 5


def _examples(ids: Collection[Any]) -> str:
    ids = sorted(ids, key=lambda i: (type(i).__name__, str(i)))
    shown = ", ".join(repr(i) for i in ids[:_EXAMPLES])
    return f"[{shown}{', ...' if len(ids) > _EXAMPLES else ''}]"


def match_detection_image_ids(
    file_ids: Collection[Hashable],
    image_ids: Sequence[Hashable],
    json_file: str,
    dataset_name: str = "the dataset",
) -> Tuple[Dict[Hashable, Hashable], List[Hashable], int]:
    """Map the image ids of a detections file onto a dataset's image ids.

    Returns ``(mapping file id -> dataset id, unknown file ids, ids matched by value across str/int)``.
    No match at all is a ``ValueError`` naming the file and showing ids of both sides.
    """
    dataset = set(image_ids)
    by_text: Dict[str, List[Hashable]] = defaultdict(list)
    for i in image_ids:
        by_text[str(i)].append(i)
    mapping: Dict[Hashable, Hashable] = {}
    unknown: List[Hashable] = []
    converted = 0
    for fid in file_ids:
        if fid in dataset:
            mapping[fid] = fid
            continue
        same_text = by_text.get(str(fid), [])
        if len(same_text) > 1:
            raise ValueError(
                f"{json_file}: image id {fid!r} matches several image ids of {dataset_name!r} by value: {same_text!r}"
            )
        if same_text:
            mapping[fid] = same_text[0]
            converted += 1
        else:
            unknown.append(fid)
    if file_ids and not mapping:
        raise ValueError(
            f"{json_file}: none of its {len(file_ids)} image ids is an image of {dataset_name!r} "
            f"({len(dataset)} images): file ids e.g. {_examples(file_ids)}, dataset ids e.g. {_examples(dataset)}. "
            "Check DATASETS.TEST_BOXES (or the dataset's test_box_source)."
        )
    return mapping, unknown, converted


def load_person_detections(
    json_file: str,
    score_thresh: float = 0.0,
    category_id: int = 1,
    image_ids: Optional[Sequence[Hashable]] = None,
    images_with_persons: Optional[Collection[Hashable]] = None,
    dataset_name: str = "the dataset",
) -> Dict[Hashable, Tuple[np.ndarray, np.ndarray]]:
    """Read a detections json into {image_id: (boxes_xywh float32 (N, 4), scores float32 (N,))}.

    The file is a list of {"image_id", "bbox": [x, y, w, h], "score", optional "category_id"}
    (COCO results format, e.g. COCO_val2017_detections_AP_H_56_person.json). As mmpose 0.23: only
    ``category_id`` (person, 1 in COCO) is kept when entries carry a category, and boxes with score <
    score_thresh are dropped. Boxes keep their raw numbers and their order in the file; images without
    a kept box are absent from the result.

    With ``image_ids`` (the dataset's), the file's ids are matched to them
    (``match_detection_image_ids``): keys of the result are the dataset's ids, and a partial match
    is a warning counting matched images, images without boxes (those with annotated persons among
    ``images_with_persons`` cost recall) and unknown ids.
    """
    dets = read_json_file(json_file, "person detections file")
    if not isinstance(dets, list):
        raise ValueError(
            f"{json_file}: expected a list of detections in COCO results format "
            f"([{{'image_id', 'bbox', 'score', 'category_id'}}, ...]), got {type(dets).__name__}"
        )
    if not dets:
        raise ValueError(f"{json_file}: the detections list is empty")
    entries = []
    categories = set()
    for i, det in enumerate(dets):
        if not isinstance(det, dict) or not all(k in det for k in ("image_id", "bbox", "score")):
            raise ValueError(f"{json_file}: detection #{i} lacks one of 'image_id', 'bbox', 'score': {det!r}")
        if "category_id" in det:
            categories.add(det["category_id"])
            if det["category_id"] != category_id:
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
        if not isinstance(det["image_id"], (int, str)) or isinstance(det["image_id"], bool):
            raise ValueError(f"{json_file}: detection #{i} has an image id {det['image_id']!r} that is not an int or str")
        entries.append((det["image_id"], values))
    if not entries:
        raise ValueError(
            f"{json_file}: no detection has category_id {category_id!r} (DATASETS.DET_CATEGORY_ID); "
            f"the file's categories are {sorted(categories, key=str)}"
        )

    mapping: Optional[Dict[Hashable, Hashable]] = None
    if image_ids is not None:
        file_ids = list(dict.fromkeys(img for img, _ in entries))
        mapping, unknown, converted = match_detection_image_ids(file_ids, image_ids, json_file, dataset_name)

    boxes = defaultdict(list)
    scores = defaultdict(list)
    for img, values in entries:
        if values[4] < score_thresh:
            continue
        if mapping is not None:
            if img not in mapping:
                continue
            img = mapping[img]
        boxes[img].append(values[:4])
        scores[img].append(values[4])
    out = {
        img: (np.asarray(boxes[img], dtype=np.float32).reshape(-1, 4), np.asarray(scores[img], dtype=np.float32))
        for img in boxes
    }
    if image_ids is not None:
        without = [i for i in image_ids if i not in out]
        missed = [i for i in without if images_with_persons is None or i in images_with_persons]
        counts = (
            f"{len(out)} of {len(image_ids)} images of {dataset_name!r} have boxes (score >= {score_thresh}); "
            f"{len(without)} have none"
            + (f" ({len(missed)} of them with annotated persons, which count as missed)" if missed else "")
            + f"; {len(unknown)} image ids of the file are not in the dataset"
            + (f" (e.g. {_examples(unknown)})" if unknown else "")
            + (f"; {converted} ids matched by value across str/int" if converted else "")
        )
        if unknown or missed:
            logger.warning(f"{json_file}: partial match: {counts}")
        else:
            logger.info(f"{json_file}: {counts}")
    no_area = sum(int(((b[:, 2] <= 0) | (b[:, 3] <= 0)).sum()) for b, _ in out.values())
    if no_area:
        logger.warning(f"{json_file}: {no_area} kept boxes have no area (zero width or height); the model skips them")
    return out
