"""CrowdPose (14 keypoints) registered under $DETECTRON2_DATASETS/crowdpose, as the reference lays it out.

crowdpose/annotations/mmpose_crowdpose_{train,val,trainval,test}.json, images in crowdpose/images/.
The paper trains on trainval and tests on test with the YOLOv3 person boxes
det_for_crowd_test_0.1_0.5.json; the other splits use ground-truth boxes at test time (no detections
are distributed for them). Evaluation follows the official CrowdPose protocol ("crowdpose").
"""
import os

from detectron2.data import DatasetCatalog

from .coco import datasets_root
from .keypoint_metadata import crowdpose_keypoint_arguments
from .register import register_topdown_keypoint_dataset

__all__ = ["CROWDPOSE_SPLITS", "CROWDPOSE_TEST_DETECTIONS", "register_all_crowdpose"]

CROWDPOSE_SPLITS = {
    f"crowdpose_{split}": f"crowdpose/annotations/mmpose_crowdpose_{split}.json"
    for split in ("train", "val", "trainval", "test")
}
CROWDPOSE_IMAGES = "crowdpose/images"
CROWDPOSE_TEST_DETECTIONS = "crowdpose/annotations/det_for_crowd_test_0.1_0.5.json"


def register_all_crowdpose(root: str) -> None:
    """Register crowdpose_{train,val,trainval,test} under `root` (skips names already registered)."""
    for name, json_file in CROWDPOSE_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        box_source = os.path.join(root, CROWDPOSE_TEST_DETECTIONS) if name == "crowdpose_test" else "gt"
        register_topdown_keypoint_dataset(
            name,
            os.path.join(root, json_file),
            os.path.join(root, CROWDPOSE_IMAGES),
            protocol="crowdpose",
            test_box_source=box_source,
            image_extra_keys=("crowdIndex",),
            **crowdpose_keypoint_arguments(),
        )


register_all_crowdpose(datasets_root())
