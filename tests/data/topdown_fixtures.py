"""Register the real keypoint fixtures (../shared/fixtures) as top-down datasets, and tiny configs.

Shared by the data, engine and tools tests: fixture datasets under fixed names, registered once per
process with the public `register_topdown_keypoint_dataset`.
"""
import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.data.datasets import register_topdown_keypoint_dataset
from hrnext_d2.data.datasets.keypoint_metadata import coco_keypoint_arguments, crowdpose_keypoint_arguments
from tests.conftest import REPO_ROOT, shared_path

COCO_FIXTURE = "hrnext_fixture_coco"
COCO_FIXTURE_DET = "hrnext_fixture_coco_det"
CROWDPOSE_FIXTURE = "hrnext_fixture_crowdpose"
CROWDPOSE_FIXTURE_DET = "hrnext_fixture_crowdpose_det"


def register_fixture_datasets() -> None:
    """Register the COCO and CrowdPose fixtures (gt boxes and detector boxes); skip if absent."""
    root = shared_path("fixtures")
    coco_json = os.path.join(root, "coco", "annotations", "test_coco.json")
    coco_det = os.path.join(root, "coco", "annotations", "test_coco_det_AP_H_56.json")
    cp_json = os.path.join(root, "crowdpose", "annotations", "test_crowdpose.json")
    cp_det = os.path.join(root, "crowdpose", "annotations", "test_crowdpose_det_AP_40.json")
    entries = [
        (COCO_FIXTURE, coco_json, os.path.join(root, "coco", "images"), "coco", "gt", coco_keypoint_arguments()),
        (COCO_FIXTURE_DET, coco_json, os.path.join(root, "coco", "images"), "coco", coco_det, coco_keypoint_arguments()),
        (CROWDPOSE_FIXTURE, cp_json, os.path.join(root, "crowdpose", "images"), "crowdpose", "gt",
         crowdpose_keypoint_arguments()),
        (CROWDPOSE_FIXTURE_DET, cp_json, os.path.join(root, "crowdpose", "images"), "crowdpose", cp_det,
         crowdpose_keypoint_arguments()),
    ]
    for name, json_file, image_root, protocol, boxes, meta in entries:
        if name in DatasetCatalog.list():
            continue
        register_topdown_keypoint_dataset(
            name, json_file, image_root, protocol=protocol, test_box_source=boxes, **meta
        )


def tiny_cfg(output_dir: str = "", train=(COCO_FIXTURE,), test=(COCO_FIXTURE,), num_keypoints: int = 17):
    """HRNeXt-S widths with one module per stage and one block per branch, 48x64 crops, batch 2,
    CPU, no workers: a training iteration takes well under a second."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / "configs" / "Base-HRNeXt-S.yaml"))
    hrnext = cfg.MODEL.HRNEXT
    for stage in (hrnext.STAGE1, hrnext.STAGE2, hrnext.STAGE3, hrnext.STAGE4):
        stage.NUM_MODULES = 1
        stage.NUM_BLOCKS = [1] * stage.NUM_BRANCHES
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = num_keypoints
    cfg.INPUT.TOPDOWN.IMAGE_SIZE = [48, 64]
    cfg.DATASETS.TRAIN = tuple(train)
    cfg.DATASETS.TEST = tuple(test)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.EPOCHS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 0
    cfg.TEST.EVAL_PERIOD_EPOCHS = 0
    cfg.SOLVER.MAX_ITER = 4
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 7
    cfg.OUTPUT_DIR = output_dir
    return cfg


def crowdpose_reference_layout(tmp_path):
    """The CrowdPose fixtures in the reference layout under tmp_path/data, returned as the datasets
    root: crowdpose/annotations/mmpose_crowdpose_{trainval,test}.json (both the fixture's ground
    truth), det_for_crowd_test_0.1_0.5.json (its detections) and crowdpose/images/."""
    fixtures = shared_path("fixtures", "crowdpose")
    ann = tmp_path / "data" / "crowdpose" / "annotations"
    ann.mkdir(parents=True)
    gt = fixtures / "annotations" / "test_crowdpose.json"
    os.symlink(gt, ann / "mmpose_crowdpose_test.json")
    os.symlink(gt, ann / "mmpose_crowdpose_trainval.json")
    os.symlink(fixtures / "annotations" / "test_crowdpose_det_AP_40.json", ann / "det_for_crowd_test_0.1_0.5.json")
    os.symlink(fixtures / "images", tmp_path / "data" / "crowdpose" / "images")
    return tmp_path / "data"
