"""Where a test set's person boxes come from, resolved and checked when a run starts.

A missing or mismatched detections file used to surface only when the first evaluation ran (after
training) or not at all (AP silently low). ``check_test_box_sources`` resolves every test set's box
source up front, so a run stops before training with the file named.
"""
import logging
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog

from .datasets.detections import load_person_detections

__all__ = ["resolve_test_boxes", "check_test_box_sources"]

logger = logging.getLogger(__name__)


def _test_box_source(cfg, dataset_name: str) -> str:
    source = cfg.DATASETS.TEST_BOXES
    if not source:
        source = getattr(MetadataCatalog.get(dataset_name), "test_box_source", "") or "gt"
    return source


def _labelled(anno: Dict[str, Any]) -> bool:
    """A non-crowd person with at least one labelled keypoint (one the evaluation scores)."""
    kpts = anno.get("keypoints") or []
    return not anno.get("iscrowd", 0) and any(v > 0 for v in kpts[2::3])


def _count_outside(boxes_xywh: np.ndarray, width: float, height: float) -> int:
    x, y, w, h = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4).T
    return int(((x >= width) | (y >= height) | (x + w <= 0) | (y + h <= 0)).sum())


def resolve_test_boxes(cfg, dataset_name: str, dataset_dicts: Optional[Sequence[Dict[str, Any]]] = None) -> Any:
    """DATASETS.TEST_BOXES, else the dataset's ``test_box_source``: "gt", or the detections loaded and
    matched to the dataset's images (``dataset_dicts``: the dataset, read from DatasetCatalog when
    not given)."""
    source = _test_box_source(cfg, dataset_name)
    if source == "gt":
        return "gt"
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"Person detections for {dataset_name!r} not found: {source!r} "
            "(DATASETS.TEST_BOXES or the dataset's test_box_source)"
        )
    if dataset_dicts is None:
        dataset_dicts = DatasetCatalog.get(dataset_name)
    image_ids = [d["image_id"] for d in dataset_dicts]
    with_persons = {d["image_id"] for d in dataset_dicts if any(_labelled(a) for a in d.get("annotations", []))}
    dets = load_person_detections(
        source,
        score_thresh=cfg.DATASETS.DET_SCORE_THRESH,
        category_id=cfg.DATASETS.DET_CATEGORY_ID,
        image_ids=image_ids,
        images_with_persons=with_persons,
        dataset_name=dataset_name,
    )
    sizes = {d["image_id"]: (d["width"], d["height"]) for d in dataset_dicts if "width" in d and "height" in d}
    outside = sum(_count_outside(boxes, *sizes[img]) for img, (boxes, _) in dets.items() if img in sizes)
    if outside:
        logger.warning(
            f"{source}: {outside} person boxes lie entirely outside their image; their keypoints will be too"
        )
    logger.info(
        f"Test boxes for {dataset_name}: {sum(len(v[1]) for v in dets.values())} person detections "
        f"on {len(dets)} images from {source} (score >= {cfg.DATASETS.DET_SCORE_THRESH})"
    )
    return dets


def check_test_box_sources(cfg) -> None:
    """Read every DATASETS.TEST dataset and resolve its box source (errors name the file at fault)."""
    for name in cfg.DATASETS.TEST:
        resolve_test_boxes(cfg, name, DatasetCatalog.get(name))
