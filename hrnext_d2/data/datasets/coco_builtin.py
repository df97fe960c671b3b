"""Top-down metadata for Detectron2's builtin COCO keypoint datasets (keypoints_coco_2017_*).

Detectron2 registers them itself (its `load_coco_json`, its paths under the datasets root,
evaluator_type "coco"); this adds only the keys it lacks, so nothing of Detectron2's is rebuilt.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import datasets_root
from .keypoint_metadata import get_coco_keypoint_metadata
from .register import set_topdown_metadata, topdown_dataset_metadata

__all__ = ["register_coco_keypoint_metadata", "COCO_VAL_PERSON_DETECTIONS"]

# Relative to the datasets root: HRNet's person detections on COCO val2017 (human AP 56.4).
COCO_VAL_PERSON_DETECTIONS = "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


def register_coco_keypoint_metadata(root: str) -> None:
    """Give Detectron2's builtin COCO keypoint datasets the top-down metadata keys.

    They stay Detectron2's (its `load_coco_json`, its paths under `root`, evaluator_type "coco"):
    only missing keys are added (OKS sigmas, flip pairs, body-part ids, protocol, test box source);
    the trainer picks the top-down evaluator for any dataset with a `keypoint_protocol`.
    """
    boxes = {
        "keypoints_coco_2017_train": "gt",
        "keypoints_coco_2017_val": os.path.join(root, COCO_VAL_PERSON_DETECTIONS),
        "keypoints_coco_2017_val_100": os.path.join(root, COCO_VAL_PERSON_DETECTIONS),
    }
    for name, test_box_source in boxes.items():
        if name not in DatasetCatalog.list():
            continue
        meta = MetadataCatalog.get(name)
        set_topdown_metadata(
            name,
            topdown_dataset_metadata(
                meta.json_file, meta.image_root, get_coco_keypoint_metadata(), "coco", test_box_source
            ),
        )


register_coco_keypoint_metadata(datasets_root())
