"""Configs for the R-CNN tests: Detectron2's own Keypoint R-CNN config with this project's backbone and
head switched in (as a user would), and sizes that keep a CPU training step to a second or two."""
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg

from hrnext_d2.config import add_hrnext_config
from tests.conftest import REPO_ROOT

D2_KEYPOINT_RCNN = "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml"


def d2_keypoint_rcnn_cfg(head: str = "HRNeXtKeypointHead") -> CfgNode:
    """Detectron2's keypoint_rcnn_R_50_FPN_1x.yaml with MODEL.BACKBONE.NAME build_hrnext_fpn_backbone
    and MODEL.ROI_KEYPOINT_HEAD.NAME `head`; no ImageNet weights, CPU."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file(D2_KEYPOINT_RCNN))
    cfg.MODEL.BACKBONE.NAME = "build_hrnext_fpn_backbone"
    cfg.MODEL.ROI_KEYPOINT_HEAD.NAME = head
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def project_cfg(relative_path: str) -> CfgNode:
    """A config of this repository (e.g. "configs/keypoint_rcnn/...yaml") on the CPU."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / relative_path))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def shrink(cfg: CfgNode, image_size: int = 96) -> CfgNode:
    """HRNeXt-S widths with one module per stage and one block per branch, a one-block head, small
    images, few proposals and ROIs, no data workers."""
    for stage in (cfg.MODEL.HRNEXT.STAGE1, cfg.MODEL.HRNEXT.STAGE2, cfg.MODEL.HRNEXT.STAGE3, cfg.MODEL.HRNEXT.STAGE4):
        stage.NUM_MODULES = 1
        stage.NUM_BLOCKS = [1] * stage.NUM_BRANCHES
    cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT.NUM_BLOCKS = 1
    cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT.CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 128
    cfg.INPUT.MIN_SIZE_TRAIN = (image_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = image_size * 4 // 3
    cfg.INPUT.MIN_SIZE_TEST = image_size
    cfg.INPUT.MAX_SIZE_TEST = image_size * 4 // 3
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg
