"""Rescoring and OKS-NMS against the mmpose 0.23 golden data, plus behaviour checks."""
import numpy as np
import pytest

from hrnext_d2.topdown.nms import oks_matrix, oks_nms, rescore, rescore_and_nms, soft_oks_nms
from tests.conftest import shared_path
from tests.topdown.mmpose_reference import COCO_OKS_SIGMAS, oks_iou


@pytest.fixture(scope="module")
def golden():
    return np.load(shared_path("golden", "topdown", "topdown_golden.npz"))


def _image(golden, i):
    n = int(golden["nms_counts"][i])
    return n, golden["nms_keypoints"][i, :n], golden["nms_area"][i, :n], golden["nms_box_score"][i, :n]


def _kept(row):
    return [int(v) for v in row if v >= 0]


def test_rescore_golden(golden):
    for img in range(len(golden["nms_counts"])):
        _check_rescore(golden, img)


def _check_rescore(golden, img):
    n, kp, area, box = _image(golden, img)
    scores = rescore(kp[:, :, 2], box, 0.2)
    assert scores.dtype == np.float64 and scores.shape == (n,)
    np.testing.assert_array_equal(scores, golden["nms_rescored"][img, :n])
    # A score of exactly float32(0.2) counts (compared in float64); no passing keypoint gives 0.
    f02 = np.float32(0.2)
    for p in range(n):
        s = kp[p, :, 2]
        if np.all(s <= f02) and np.any(s == f02):
            np.testing.assert_allclose(scores[p], np.float64(f02) * np.float64(box[p]), rtol=1e-12)
        if np.all(s < f02):
            assert scores[p] == 0.0


def test_oks_golden(golden):
    for img in range(len(golden["nms_counts"])):
        _check_oks(golden, img)


def _check_oks(golden, img):
    n, kp, area, _ = _image(golden, img)
    m = oks_matrix(kp, area, COCO_OKS_SIGMAS)
    assert m.dtype == np.float32 and m.shape == (n, n)
    np.testing.assert_array_equal(m, golden["nms_oks"][img, :n, :n])
    # The single-pose oracle, as mmpose calls it, with and without a vis_thr (quirk 18).
    for i in range(n):
        np.testing.assert_array_equal(oks_iou(kp[i], kp, area[i], area), golden["nms_oks"][img, i, :n])
        np.testing.assert_array_equal(
            oks_iou(kp[i], kp, area[i], area, vis_thr=0.2), golden["nms_oks_visthr"][img, i, :n]
        )


def test_nms_golden(golden):
    for img in range(len(golden["nms_counts"])):
        _check_nms(golden, img)


def _check_nms(golden, img):
    n, kp, area, box = _image(golden, img)
    scores = golden["nms_rescored"][img, :n]
    keep = oks_nms(kp, scores, area, 0.9, COCO_OKS_SIGMAS)
    assert keep == _kept(golden["nms_keep_oks"][img])
    keep_soft = soft_oks_nms(kp, scores, area, 0.9, COCO_OKS_SIGMAS, max_dets=20)
    assert keep_soft == _kept(golden["nms_keep_soft"][img])
    # The evaluate path end to end (rescore, then NMS).
    keep2, scores2 = rescore_and_nms(kp, box, area, COCO_OKS_SIGMAS, vis_thr=0.2, oks_thr=0.9)
    assert keep2.tolist() == keep
    np.testing.assert_array_equal(scores2, scores)
    keep3, _ = rescore_and_nms(kp, box, area, COCO_OKS_SIGMAS, vis_thr=0.2, oks_thr=0.9, soft_nms=True, max_dets=20)
    assert keep3.tolist() == keep_soft


def test_vis_thr_flag():
    """The mmpose 'and' bug only looks at the second person's scores; the fixed form needs both."""
    kp = np.zeros((2, 17, 3), np.float32)
    kp[1, :, 0] = np.arange(17)  # person 1 is offset on x by its keypoint index
    kp[0, :, 2] = 0.1  # person 0 below threshold everywhere
    kp[1, :, 2] = 0.9
    area = np.array([1000.0, 1000.0], np.float32)
    buggy = np.stack([oks_iou(kp[i], kp, area[i], area, vis_thr=0.2) for i in range(2)])
    fixed = np.stack([oks_iou(kp[i], kp, area[i], area, vis_thr=0.2, mmpose_vis_thr_bug=False) for i in range(2)])
    assert buggy[1, 0] == 0.0 and buggy[0, 1] > 0.0  # mask of the d-side person only
    assert fixed[0, 1] == 0.0 and fixed[1, 0] == 0.0
    # The package's OKS (the evaluate path) takes no vis_thr: every keypoint counts.
    assert oks_matrix(kp, area, COCO_OKS_SIGMAS)[1, 0] > 0.0


def test_nms_behaviour():
    rng = np.random.default_rng(0)
    base = np.concatenate([rng.uniform(100, 300, (17, 2)), np.full((17, 1), 0.9)], axis=1)
    far = base.copy()
    far[:, :2] += 500
    dup = base.copy()
    dup[:, :2] += 0.5
    kp = np.stack([base, dup, far]).astype(np.float32)
    area = np.full(3, 20000.0, np.float32)
    scores = np.array([0.8, 0.9, 0.7])
    # The duplicate with the higher score wins, the far pose survives.
    assert oks_nms(kp, scores, area, 0.9, COCO_OKS_SIGMAS) == [1, 2]
    # Soft-NMS drops nothing below max_dets but reorders by decayed score: the far pose (no overlap)
    # now beats the suppressed duplicate.
    assert soft_oks_nms(kp, scores, area, 0.9, COCO_OKS_SIGMAS) == [1, 2, 0]
    assert soft_oks_nms(kp, scores, area, 0.9, COCO_OKS_SIGMAS, max_dets=2) == [1, 2]
    assert oks_nms(kp[:0], scores[:0], area[:0], 0.9, COCO_OKS_SIGMAS) == []
    # An OKS exactly at the threshold is kept (only > thr suppresses).
    oks = oks_matrix(kp, area, COCO_OKS_SIGMAS)[1, 0]
    assert oks_nms(kp, scores, area, float(oks), COCO_OKS_SIGMAS) == [1, 0, 2]


def test_bad_input_errors():
    kp = np.zeros((2, 17, 3), np.float32)
    with pytest.raises(ValueError, match="sigmas"):
        oks_matrix(kp, np.ones(2), sigmas=np.ones(14))
    with pytest.raises(ValueError, match="box scores"):
        rescore(kp[:, :, 2], np.ones(3))
    with pytest.raises(ValueError, match="scores"):
        oks_nms(kp, np.ones(3), np.ones(2), 0.9, COCO_OKS_SIGMAS)
