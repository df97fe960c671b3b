"""Which annotated persons are top-down pose instances (mmpose 0.23 rules, Detectron2 dicts).

mmpose's ``TopDownCocoDataset._load_coco_keypoint_annotation_kernel`` keeps a non-crowd person when
its box survives clipping to the image ("clean box") and it has labelled keypoints. The same rule
picks the training instances and the ground-truth test boxes, so both paths agree with the
reference's sample counts.
"""
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from detectron2.structures import BoxMode

from .datasets.coco import sanitize_box_xywh

__all__ = ["clean_box_xywh", "select_pose_annotations", "DROP_REASONS"]

DROP_REASONS = ("crowd", "no_box", "invalid_box", "no_keypoints")


def clean_box_xywh(bbox: List[float], bbox_mode: Any, width: int, height: int) -> Optional[List[float]]:
    """mmpose's box sanitation (``sanitize_box_xywh``) for a box in any Detectron2 ``BoxMode``."""
    box = BoxMode.convert(list(bbox), bbox_mode, BoxMode.XYWH_ABS)
    return sanitize_box_xywh([float(v) for v in box], width, height)


def select_pose_annotations(
    dataset_dict: Dict[str, Any], num_keypoints: int
) -> Tuple[List[Dict[str, Any]], Counter]:
    """The pose instances of one image and a count of the annotations dropped, by reason.

    Returns a list of ``{"bbox": clean box XYWH (raw numbers, like mmpose), "joints": float32 (K, 3)
    (x, y, 0) in mmpose pixel-index coordinates (Detectron2's +0.5 removed), "joints_visible":
    float32 (K, 3) (min(1, v), min(1, v), 0), "area": float}`` in annotation order.
    """
    width, height = int(dataset_dict["width"]), int(dataset_dict["height"])
    kept: List[Dict[str, Any]] = []
    dropped: Counter = Counter()
    for anno in dataset_dict.get("annotations", []):
        if anno.get("iscrowd", 0):
            dropped["crowd"] += 1
            continue
        if "bbox" not in anno:
            dropped["no_box"] += 1
            continue
        box = clean_box_xywh(anno["bbox"], anno.get("bbox_mode", BoxMode.XYWH_ABS), width, height)
        if box is None or ("area" in anno and not anno["area"] > 0):
            dropped["invalid_box"] += 1
            continue
        kpts = anno.get("keypoints")
        if kpts is None:
            dropped["no_keypoints"] += 1
            continue
        kpts = np.asarray(kpts, dtype=np.float64).reshape(-1, 3)
        if kpts.shape[0] != num_keypoints:
            raise ValueError(
                f"{dataset_dict.get('file_name', '?')}: an annotation has {kpts.shape[0]} keypoints, "
                f"the config expects MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS={num_keypoints}"
            )
        # mmpose drops max(keypoints) == 0 and num_keypoints == 0 (the json field; for CrowdPose
        # it counts the 12 body joints only, which the reference follows too).
        if not (kpts[:, 2] > 0).any() or anno.get("num_keypoints", 1) == 0:
            dropped["no_keypoints"] += 1
            continue
        joints = np.zeros((num_keypoints, 3), dtype=np.float32)
        joints[:, :2] = kpts[:, :2] - 0.5  # Detectron2 -> mmpose pixel-index coordinates
        vis = np.minimum(1.0, kpts[:, 2]).astype(np.float32)
        joints_visible = np.zeros((num_keypoints, 3), dtype=np.float32)
        joints_visible[:, 0] = vis
        joints_visible[:, 1] = vis
        kept.append(
            {
                "bbox": box,
                "joints": joints,
                "joints_visible": joints_visible,
                "area": float(anno.get("area", box[2] * box[3])),
            }
        )
    return kept, dropped
