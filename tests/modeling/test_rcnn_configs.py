"""configs/keypoint_rcnn: each config builds its model with the intended datasets, heads and sizes."""
import pytest
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import GeneralizedRCNN

from hrnext_d2.modeling.roi_heads import HRNeXtKeypointHead
from tests.conftest import REPO_ROOT
from tests.rcnn_configs import project_cfg, shrink

EXPECTED = {
    # config: (keypoints, mask, train, test)
    "keypoint_rcnn_hrnext_s_fpn_coco_1x.yaml": (17, False, "keypoints_coco_2017_train", "keypoints_coco_2017_val"),
    "keypoint_rcnn_hrnext_s_fpn_crowdpose_1x.yaml": (14, False, "crowdpose_trainval", "crowdpose_test"),
    "keypoint_rcnn_hrnext_s_fpn_synthetic.yaml": (17, False, "synthetic_crowd_train", "synthetic_crowd_val"),
    "keypoint_rcnn_R_50_FPN_synthetic_scratch.yaml": (17, False, "synthetic_crowd_train", "synthetic_crowd_val"),
    "mask_rcnn_hrnext_s_fpn_coco_1x.yaml": (0, True, "coco_2017_train", "coco_2017_val"),
    "mask_rcnn_hrnext_s_fpn_synthetic.yaml": (0, True, "synthetic_crowd_seg_train", "synthetic_crowd_seg_val"),
}


def test_every_config_is_listed():
    found = {p.name for p in (REPO_ROOT / "configs" / "keypoint_rcnn").glob("*.yaml") if not p.name.startswith("Base-")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_builds_its_model(name):
    k, mask, train, test = EXPECTED[name]
    cfg = project_cfg(f"configs/keypoint_rcnn/{name}")
    assert (cfg.DATASETS.TRAIN, cfg.DATASETS.TEST) == ((train,), (test,))
    assert cfg.MODEL.KEYPOINT_ON == (k > 0) and cfg.MODEL.MASK_ON == mask
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1 or not k
    r50 = "R_50" in name
    assert cfg.MODEL.BACKBONE.NAME == ("build_resnet_fpn_backbone" if r50 else "build_hrnext_fpn_backbone")
    if not r50:
        assert list(cfg.MODEL.FPN.IN_FEATURES) == ["res2", "res3", "res4", "res5"]
        assert cfg.SOLVER.OPTIMIZER == "AdamW" and cfg.INPUT.FORMAT == "RGB"
    model = build_model(shrink(cfg))
    assert isinstance(model, GeneralizedRCNN)
    if k:
        head = model.roi_heads.keypoint_head
        assert head.num_keypoints == k
        if not r50:
            assert isinstance(head, HRNeXtKeypointHead) and head.heatmap_size == (64, 48)
    assert model.roi_heads.mask_on == mask


def test_synthetic_comparison_shares_everything_but_the_model():
    """The R50 baseline differs from the HRNeXt config only in backbone, keypoint head, pixel format."""
    ours = project_cfg("configs/keypoint_rcnn/keypoint_rcnn_hrnext_s_fpn_synthetic.yaml")
    base = project_cfg("configs/keypoint_rcnn/keypoint_rcnn_R_50_FPN_synthetic_scratch.yaml")
    assert base.MODEL.WEIGHTS == "" and base.MODEL.RESNETS.NORM == "BN" and base.MODEL.BACKBONE.FREEZE_AT == 0
    for key in ("INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN", "INPUT.MIN_SIZE_TEST", "SOLVER", "DATASETS",
                "DATALOADER", "TEST", "MODEL.RPN", "MODEL.ROI_HEADS", "MODEL.ANCHOR_GENERATOR", "MODEL.FPN", "SEED"):
        a, b = ours, base
        for part in key.split("."):
            a, b = getattr(a, part), getattr(b, part)
        assert a == b, key
