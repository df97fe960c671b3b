"""TopDownDatasetMapper: golden crops/targets, augmentation invariants, test-time boxes, bad input."""
import json

import cv2
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog

from hrnext_d2.topdown import geometry
from hrnext_d2.data.build import build_topdown_instance_dicts
from hrnext_d2.data.datasets import load_person_detections
from hrnext_d2.data.datasets.keypoint_metadata import COCO_UPPER_BODY_IDS
from hrnext_d2.data.mapper import TopDownDatasetMapper
from hrnext_d2.topdown.codec import HeatmapCodec
from tests.conftest import shared_path
from tests.data.topdown_fixtures import (
    COCO_FIXTURE,
    COCO_FIXTURE_DET,
    CROWDPOSE_FIXTURE,
    register_fixture_datasets,
    tiny_cfg,
)

COCO_FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def _mapper(image_size=(192, 256), sigma=2.0, **aug) -> TopDownDatasetMapper:
    hm = (image_size[0] // 4, image_size[1] // 4)
    kwargs = dict(
        flip_prob=0.0, half_body_prob=0.0, half_body_min_keypoints=8, scale_factor=0.0, rot_factor=0.0,
        rot_prob=0.0,
    )
    kwargs.update(aug)
    return TopDownDatasetMapper(
        is_train=True,
        image_format="RGB",
        image_size=image_size,
        codec=HeatmapCodec(image_size=image_size, heatmap_size=hm, sigma=sigma),
        num_keypoints=17,
        flip_pairs=COCO_FLIP_PAIRS,
        upper_body_ids=COCO_UPPER_BODY_IDS,
        **kwargs,
    )


@pytest.fixture(scope="module")
def golden():
    return np.load(shared_path("golden", "topdown", "topdown_golden.npz"))


def test_crop_matches_golden_warp(golden):
    mapper = _mapper()
    image = golden["warp_image"]
    joints = np.zeros((17, 3), np.float32)
    vis = np.zeros((17, 3), np.float32)
    for i in range(3):
        crop, _, _, _ = mapper.crop_and_target(
            image, joints, vis, golden["warp_center"][i], golden["warp_scale"][i], float(golden["warp_rot"][i])
        )
        assert crop.dtype == np.uint8 and crop.shape == (256, 192, 3)
        np.testing.assert_array_equal(crop, golden["warp_crops"][i])


@pytest.mark.parametrize("size,sigma,suffix", [((192, 256), 2.0, "s2"), ((288, 384), 3.0, "s3")])
def test_targets_match_golden(golden, size, sigma, suffix):
    mapper = _mapper(image_size=size, sigma=sigma)
    image = np.zeros((8, 8, 3), np.uint8)
    for i in range(4):
        _, joints_crop, target, weight = mapper.crop_and_target(
            image,
            golden["target_joints_img"][i],
            golden["target_joints_visible"][i],
            golden["target_center"][i],
            golden["target_scale"][i],
            float(golden["target_rot"][i]),
        )
        np.testing.assert_allclose(joints_crop, golden[f"target_joints_crop_{suffix}"][i], atol=3e-5)
        np.testing.assert_allclose(target, golden[f"target_heatmaps_{suffix}"][i], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(np.asarray(weight).reshape(17, 1), golden[f"target_weight_{suffix}"][i])


def _dot_image(tmp_path, w=200, h=160, dot=(60, 50)) -> str:
    img = np.full((h, w, 3), 40, np.uint8)
    x, y = dot
    img[y - 1 : y + 2, x - 1 : x + 2] = 255
    path = str(tmp_path / "dot.png")
    cv2.imwrite(path, img)
    return path


def _instance(file_name, joints_xy, visible, center, scale):
    joints = np.zeros((17, 3), np.float32)
    joints[:, :2] = joints_xy
    vis = np.zeros((17, 3), np.float32)
    vis[:, 0] = vis[:, 1] = visible
    return {
        "file_name": file_name, "image_id": 1, "height": 160, "width": 200,
        "joints": joints, "joints_visible": vis,
        "center": np.asarray(center, np.float32), "scale": np.asarray(scale, np.float32),
    }


@pytest.mark.parametrize("flip", [False, True])
def test_flipped_keypoint_lands_on_flipped_pixel(tmp_path, flip):
    """A bright dot at the left wrist (9): after the flip it is the right wrist (10), and the crop
    shows the dot where channel 10's target peaks (and the reverse without flip)."""
    dot = (60, 50)
    path = _dot_image(tmp_path, dot=dot)
    xy = np.zeros((17, 2), np.float32)
    xy[9] = dot
    visible = np.zeros(17, np.float32)
    visible[9] = 1
    mapper = _mapper(image_size=(96, 128), flip_prob=1.0 if flip else 0.0)
    d = _instance(path, xy, visible, center=(100, 80), scale=(1.2, 1.6))
    out = mapper(dict(d, aug_seed=[0, 1]))
    assert out["flipped"] is flip
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 128, 96)
    assert out["target"].dtype == torch.float32 and out["target"].shape == (17, 32, 24)
    assert out["target_weight"].shape == (17, 1)
    on, off = (10, 9) if flip else (9, 10)
    assert out["target_weight"][on, 0] == 1 and out["target_weight"][off, 0] == 0
    assert out["target"][off].abs().max() == 0
    hy, hx = np.unravel_index(int(out["target"][on].argmax()), (32, 24))
    crop = out["image"].numpy().max(axis=0)
    cy, cx = np.unravel_index(int(crop.argmax()), crop.shape)
    assert crop[cy, cx] > 150
    # heatmap cell j is crop pixel 4 j; the target centre is int(x / 4 + 0.5)
    assert abs(hx * 4 - cx) <= 2 and abs(hy * 4 - cy) <= 2
    expected_center_x = 200 - 100 - 1 if flip else 100
    assert out["center"][0] == pytest.approx(expected_center_x)


def test_half_body_picks_upper_or_lower_joints(tmp_path):
    """Half-body (p=1): the crop centre is the mean of the chosen half's visible joints; the half is
    upper when the generator's normal draw is < 0.5 (mmpose's randn) and the upper half has > 2."""
    path = _dot_image(tmp_path)
    rs = np.random.default_rng(0)
    xy = np.zeros((17, 2), np.float32)
    xy[:11] = rs.uniform([60, 20], [140, 70], size=(11, 2))  # head and arms: top
    xy[11:] = rs.uniform([70, 90], [130, 150], size=(6, 2))  # hips and legs: bottom
    visible = np.ones(17, np.float32)
    mapper = _mapper(half_body_prob=1.0, half_body_min_keypoints=8)
    d = _instance(path, xy, visible, center=(100, 80), scale=(1.0, 1.0))
    seen = set()
    for seed in range(12):
        aug = mapper.augment(
            np.random.default_rng(seed), 200, d["joints"], d["joints_visible"], d["center"], d["scale"]
        )
        r = np.random.default_rng(seed)
        r.random(), r.random()  # flip draw, half-body draw
        upper = r.standard_normal() < 0.5
        ids = list(range(11)) if upper else list(range(11, 17))
        seen.add(upper)
        np.testing.assert_allclose(aug["center"], xy[ids].mean(axis=0), rtol=1e-6)
        sel = xy[ids]
        w, h = sel.max(0) - sel.min(0)
        w, h = (w, w / 0.75) if w > 0.75 * h else (h * 0.75, h)
        np.testing.assert_allclose(aug["scale"], np.array([w, h]) / 200 * 1.5, rtol=1e-5)
    assert seen == {True, False}
    # Not more than HALF_BODY_MIN_KEYPOINTS visible: untouched.
    visible8 = np.zeros(17, np.float32)
    visible8[:8] = 1
    d8 = _instance(path, xy, visible8, center=(100, 80), scale=(1.0, 1.0))
    aug = mapper.augment(np.random.default_rng(0), 200, d8["joints"], d8["joints_visible"], d8["center"], d8["scale"])
    np.testing.assert_array_equal(aug["center"], d8["center"])


def test_augmentation_is_a_function_of_the_seed():
    register_fixture_datasets()
    cfg = tiny_cfg()
    inst = build_topdown_instance_dicts(COCO_FIXTURE, num_keypoints=17, image_size=(48, 64))[0]
    mapper = TopDownDatasetMapper(cfg, True)
    a = mapper(dict(inst, aug_seed=[3, 10]))
    b = mapper(dict(inst, aug_seed=[3, 10]))
    c = mapper(dict(inst, aug_seed=[3, 11]))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert (a["rotation"], a["flipped"], tuple(a["scale"])) != (c["rotation"], c["flipped"], tuple(c["scale"]))
    assert a["image"].shape == (3, 64, 48) and a["target"].shape == (17, 16, 12)
    assert a["image_id"] == inst["image_id"] and a["file_name"] == inst["file_name"]


def test_unreadable_image_names_the_file(tmp_path):
    mapper = _mapper()
    d = _instance(str(tmp_path / "missing.jpg"), np.zeros((17, 2)), np.ones(17), (50, 50), (1, 1))
    with pytest.raises(Exception, match="missing.jpg"):
        mapper(d)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(Exception, match="corrupt.jpg"):
        mapper(dict(d, file_name=str(bad)))


def _test_mapper(name, test_boxes="", num_keypoints=17, thresh=0.0):
    cfg = tiny_cfg(test=(name,), train=(name,), num_keypoints=num_keypoints)
    cfg.DATASETS.TEST_BOXES = test_boxes
    cfg.DATASETS.DET_SCORE_THRESH = thresh
    return TopDownDatasetMapper(cfg, False, dataset_name=name)


def test_test_mode_gt_boxes_are_mmpose_persons():
    """'gt' boxes: the clean boxes of non-crowd persons with keypoints (CrowdPose 106848 has one
    person without keypoints: 2 boxes there), score 1; raw image, no resize."""
    register_fixture_datasets()
    mapper = _test_mapper(CROWDPOSE_FIXTURE, num_keypoints=14)
    dicts = {d["image_id"]: d for d in DatasetCatalog.get(CROWDPOSE_FIXTURE)}
    out = mapper(dicts[106848])
    assert out["image"].shape == (3, 425, 640) and out["image"].dtype == torch.uint8
    inst = out["instances"]
    assert len(inst) == 2 and inst.image_size == (425, 640)
    assert torch.equal(inst.scores, torch.ones(2))
    raw = json.load(open(shared_path("fixtures", "crowdpose", "annotations", "test_crowdpose.json")))
    boxes = [a["bbox"] for a in raw["annotations"] if a["image_id"] == 106848 and a["num_keypoints"] > 0]
    clean = []
    for x, y, w, h in boxes:
        x1, y1 = max(0, x), max(0, y)
        x2, y2 = min(639, x1 + max(0, w - 1)), min(424, y1 + max(0, h - 1))
        clean.append([x1, y1, x2 - x1, y2 - y1])
    # The model's XYXY -> XYWH gives the crops mmpose takes from the clean boxes (float32 Boxes).
    got = inst.pred_boxes.tensor.numpy().astype(np.float64)
    got_xywh = np.concatenate([got[:, :2], got[:, 2:] - got[:, :2]], axis=1)
    np.testing.assert_allclose(got_xywh, clean, rtol=0, atol=1e-4)
    for a, b in zip(geometry.box_xywh_to_center_scale(got_xywh), geometry.box_xywh_to_center_scale(np.array(clean))):
        np.testing.assert_allclose(a, b, rtol=3e-7, atol=0)


def test_test_mode_detection_boxes():
    register_fixture_datasets()
    det_file = str(shared_path("fixtures", "coco", "annotations", "test_coco_det_AP_H_56.json"))
    mapper = _test_mapper(COCO_FIXTURE_DET, thresh=0.1)
    dets = load_person_detections(det_file, score_thresh=0.1)
    for d in DatasetCatalog.get(COCO_FIXTURE_DET):
        out = mapper(d)
        boxes, scores = dets.get(d["image_id"], (np.zeros((0, 4)), np.zeros(0)))
        inst = out["instances"]
        assert len(inst) == len(scores)
        np.testing.assert_allclose(inst.scores.numpy(), scores)
        xyxy = np.asarray(boxes, np.float64).copy()
        xyxy[:, 2:] += xyxy[:, :2]
        np.testing.assert_allclose(inst.pred_boxes.tensor.numpy(), xyxy, rtol=1e-6, atol=1e-3)
    # DATASETS.TEST_BOXES "gt" overrides the dataset's detections.
    gt_mapper = _test_mapper(COCO_FIXTURE_DET, test_boxes="gt")
    counts = [len(gt_mapper(d)["instances"]) for d in DatasetCatalog.get(COCO_FIXTURE_DET)]
    assert sorted(counts) == [1, 2, 5]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        _test_mapper(COCO_FIXTURE_DET, test_boxes="/nope.json")
