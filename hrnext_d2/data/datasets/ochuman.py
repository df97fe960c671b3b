"""OCHuman (17 COCO keypoints) registered under $DETECTRON2_DATASETS/ochuman, as the reference lays it out.

ochuman/annotations/ochuman_coco_format_{val,test}_range_0.00_1.00.json (made from the official
ochuman.json by datasets/prepare_ochuman.py: val = first 2500 images, test = the remaining 2231),
images in ochuman/images/. OCHuman has no training split: models train on COCO and are evaluated
here with ground-truth boxes and the COCO protocol (the paper's table is OCHuman val).
"""
import os

from detectron2.data import DatasetCatalog

from .coco import datasets_root
from .keypoint_metadata import coco_keypoint_arguments
from .register import register_topdown_keypoint_dataset

__all__ = ["OCHUMAN_SPLITS", "register_all_ochuman"]

OCHUMAN_SPLITS = {
    f"ochuman_{split}": f"ochuman/annotations/ochuman_coco_format_{split}_range_0.00_1.00.json"
    for split in ("val", "test")
}
OCHUMAN_IMAGES = "ochuman/images"


def register_all_ochuman(root: str) -> None:
    """Register ochuman_{val,test} under `root` (skips names already registered)."""
    for name, json_file in OCHUMAN_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        register_topdown_keypoint_dataset(
            name,
            os.path.join(root, json_file),
            os.path.join(root, OCHUMAN_IMAGES),
            protocol="coco",
            test_box_source="gt",
            **coco_keypoint_arguments(),
        )


register_all_ochuman(datasets_root())
