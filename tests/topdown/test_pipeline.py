"""The inference steps shared by the model and the exported runtime, against the mmpose 0.23 golden
chain: decode (golden result preds) followed by rescoring and OKS-NMS (the evaluate path)."""
import numpy as np
import pytest

from hrnext_d2.topdown import geometry
from hrnext_d2.topdown.codec import HeatmapCodec
from hrnext_d2.topdown.nms import rescore_and_nms
from hrnext_d2.topdown.pipeline import (
    TopDownTestSettings,
    boxes_xyxy_to_center_scale,
    crop_matrices,
    heatmaps_to_poses,
    valid_box_mask,
)
from tests.conftest import shared_path
from tests.topdown.mmpose_reference import COCO_OKS_SIGMAS, result_boxes, result_preds


@pytest.fixture(scope="module")
def golden():
    return np.load(shared_path("golden", "topdown", "topdown_golden.npz"))


def test_heatmaps_to_poses_is_decode_then_evaluate(golden):
    codec = HeatmapCodec((192, 256), post_process="default")
    settings = TopDownTestSettings()
    for b in range(len(golden["decode_heatmaps"])):
        hm, c, s = golden["decode_heatmaps"][b], golden["decode_center"][b], golden["decode_scale"][b]
        box = golden["decode_bbox_score"][b]
        poses = heatmaps_to_poses(hm, c, s, box, codec, COCO_OKS_SIGMAS, settings)
        ref = golden["decode_result_preds"][b]  # mmpose's keypoints, bit for bit
        areas = golden["decode_result_boxes"][b][:, 4]
        keep, scores = rescore_and_nms(ref, box, areas, COCO_OKS_SIGMAS, vis_thr=0.2, oks_thr=0.9)
        np.testing.assert_array_equal(poses.keep, keep)
        np.testing.assert_array_equal(poses.keypoints, ref[keep])
        np.testing.assert_array_equal(poses.scores, scores[keep])
        # the areas it uses are mmpose's result-dict areas (quirk 14)
        np.testing.assert_array_equal(geometry.scale_areas(s), result_boxes(c, s, box)[:, 4])
    # without NMS every box comes back in input order
    no_nms = TopDownTestSettings(use_nms=False)
    poses = heatmaps_to_poses(golden["decode_heatmaps"][0], golden["decode_center"][0], golden["decode_scale"][0],
                              golden["decode_bbox_score"][0], codec, COCO_OKS_SIGMAS, no_nms)
    assert poses.keep.tolist() == [0, 1, 2]
    preds, maxvals = codec.decode(golden["decode_heatmaps"][0], golden["decode_center"][0], golden["decode_scale"][0])
    np.testing.assert_array_equal(poses.keypoints, result_preds(preds, maxvals))


def test_boxes_to_center_scale_and_matrices():
    boxes = np.array([[10.0, 20.0, 70.0, 220.0], [0.0, 0.0, 300.0, 80.0]])
    c, s = boxes_xyxy_to_center_scale(boxes, (192, 256), 1.25)
    c_ref, s_ref = geometry.box_xywh_to_center_scale(np.array([[10, 20, 60, 200], [0, 0, 300, 80]], float), (192, 256))
    np.testing.assert_array_equal(c, c_ref)
    np.testing.assert_array_equal(s, s_ref)
    m = crop_matrices(c, s, (192, 256))
    np.testing.assert_array_equal(m, geometry.get_affine_transforms(c, s, 0.0, (192, 256)))
    # pixels resized by 0.5: the image point (x, y) sits at pixel ((x + 0.5) / 2 - 0.5); same crop pixel
    m_half = crop_matrices(c, s, (192, 256), frame_hw=(400, 600), pixels_hw=(200, 300))
    p = np.array([50.0, 120.0])
    q = (p + 0.5) / 2 - 0.5
    np.testing.assert_allclose(m_half[0] @ np.append(q, 1.0), m[0] @ np.append(p, 1.0), atol=1e-9)
    assert valid_box_mask(np.array([[0, 0, 1, 1], [0, 0, 0, 5], [0, 0, np.inf, 5], [np.nan, 0, 3, 3]])).tolist() == [
        True, False, False, False]


def test_settings_from_config_and_dict_round_trip():
    from detectron2.config import get_cfg

    from hrnext_d2 import add_hrnext_config

    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.MODEL.TOPDOWN.SOFT_NMS = True
    cfg.MODEL.TOPDOWN.OKS_THR = 0.8
    settings = TopDownTestSettings.from_config(cfg)
    assert settings.soft_nms and settings.oks_thr == 0.8 and settings.box_padding == 1.25
    assert TopDownTestSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="BOX_PADDING"):
        TopDownTestSettings(box_padding=0)
