"""Crop geometry against the mmpose 0.23 golden data, plus behaviour checks beyond it."""
import numpy as np
import pytest

from hrnext_d2.topdown.geometry import (
    affine_transform_points,
    apply_half_body,
    box_xywh_to_center_scale,
    fliplr_center,
    fliplr_joints,
    get_affine_transform,
    get_affine_transforms,
    get_udp_warp_matrix,
    half_body_center_scale,
    random_scale_rotation,
    transform_preds,
    warp_image,
    warp_joints,
)
from tests.conftest import shared_path
from tests.topdown.mmpose_reference import COCO_FLIP_PAIRS


@pytest.fixture(scope="module")
def golden():
    return np.load(shared_path("golden", "topdown", "topdown_golden.npz"))


def test_box_to_center_scale_golden(golden):
    c, s = box_xywh_to_center_scale(golden["boxes_xywh"], image_size=(192, 256), padding=1.25)
    assert c.dtype == np.float32 and s.dtype == np.float32
    np.testing.assert_array_equal(c, golden["boxes_center"])
    np.testing.assert_array_equal(s, golden["boxes_scale"])
    # One box in -> one (2,) centre and scale out, same numbers.
    c0, s0 = box_xywh_to_center_scale(golden["boxes_xywh"][0], image_size=(192, 256))
    np.testing.assert_array_equal(c0, golden["boxes_center"][0])
    np.testing.assert_array_equal(s0, golden["boxes_scale"][0])


@pytest.mark.parametrize("inv,key", [(False, "affine_trans"), (True, "affine_trans_inv")])
def test_affine_transform_golden(golden, inv, key):
    batched = get_affine_transforms(
        golden["affine_center"], golden["affine_scale"], golden["affine_rot"], golden["affine_output_size"], inv=inv
    )
    assert batched.dtype == np.float64 and batched.shape == golden[key].shape
    np.testing.assert_allclose(batched, golden[key], rtol=0, atol=5e-11)
    for i in range(len(golden[key])):
        one = get_affine_transform(
            golden["affine_center"][i], golden["affine_scale"][i], golden["affine_rot"][i],
            golden["affine_output_size"][i], inv=inv,
        )
        np.testing.assert_allclose(one, golden[key][i], rtol=0, atol=5e-11)


def test_warp_crops_golden(golden):
    trans = get_affine_transforms(golden["warp_center"], golden["warp_scale"], golden["warp_rot"], (192, 256))
    assert trans.shape == golden["warp_trans"].shape
    np.testing.assert_allclose(trans, golden["warp_trans"], rtol=0, atol=5e-11)
    for i in range(len(golden["warp_trans"])):
        crop = warp_image(golden["warp_image"], golden["warp_trans"][i], (192, 256))
        assert crop.shape == (256, 192, 3) and crop.dtype == np.uint8
        np.testing.assert_array_equal(crop, golden["warp_crops"][i])


@pytest.mark.parametrize("tag,size", [("s2", (192, 256)), ("s3", (288, 384))])
def test_warp_joints_golden(golden, tag, size):
    for i in range(len(golden["target_center"])):
        trans = get_affine_transform(golden["target_center"][i], golden["target_scale"][i], golden["target_rot"][i], size)
        joints = warp_joints(golden["target_joints_img"][i], golden["target_joints_visible"][i], trans)
        assert joints.dtype == np.float32
        np.testing.assert_allclose(joints, golden[f"target_joints_crop_{tag}"][i], rtol=0, atol=3e-5)


@pytest.mark.parametrize("post", ["default", "unbiased"])
def test_transform_preds_golden(golden, post):
    coords = golden[f"decode_hmcoords_{post}"].reshape(-1, 17, 2)
    preds = transform_preds(
        coords, golden["decode_center"].reshape(-1, 2), golden["decode_scale"].reshape(-1, 2), (48, 64)
    )
    assert preds.dtype == np.float32
    np.testing.assert_array_equal(preds, golden[f"decode_preds_{post}"].reshape(-1, 17, 2))


def test_forward_then_inverse_affine_is_identity():
    pts = np.array([[10.0, 20.0], [300.5, 41.25], [-7.0, 512.0]])
    for rot in (0.0, 30.0, -45.0):
        fwd = get_affine_transform((160.5, 190.25), (0.6, 0.8), rot, (192, 256))
        inv = get_affine_transform((160.5, 190.25), (0.6, 0.8), rot, (192, 256), inv=True)
        back = affine_transform_points(affine_transform_points(pts, fwd), inv)
        np.testing.assert_allclose(back, pts, atol=1e-3)
    # The centre lands on the crop centre; positive rotation turns content counter-clockwise.
    fwd = get_affine_transform((100.0, 100.0), (1.0, 4 / 3), 90.0, (192, 256))
    np.testing.assert_allclose(affine_transform_points([[100.0, 100.0]], fwd), [[96.0, 128.0]], atol=1e-3)
    # A point right of the centre ends above it (y smaller) after +90 degrees.
    right = affine_transform_points([[150.0, 100.0]], fwd)[0]
    assert right[1] < 128.0 - 40 and abs(right[0] - 96.0) < 1e-3


def test_batched_points_per_matrix():
    trans = get_affine_transforms([[50, 60], [200, 100]], [[0.5, 0.6], [1.0, 1.2]], [0.0, 20.0], (192, 256))
    pts = np.random.default_rng(0).uniform(0, 300, size=(2, 5, 2))
    out = affine_transform_points(pts, trans)
    for i in range(2):
        np.testing.assert_array_equal(out[i], affine_transform_points(pts[i], trans[i]))


def test_transform_preds_matches_inverse_crop():
    """Heatmap cell j is input pixel 4 j of the crop, which the inverse warp maps to the image."""
    c, s = box_xywh_to_center_scale([40.0, 30.0, 120.0, 200.0], (192, 256))
    inv = get_affine_transform(c, s, 0.0, (192, 256), inv=True)
    hm = np.array([[[5.0, 7.0], [40.25, 60.75]]], dtype=np.float32)
    img = transform_preds(hm, c[None], s[None], (48, 64))
    np.testing.assert_allclose(img[0], affine_transform_points(hm[0] * 4, inv), atol=1e-3)
    # UDP maps heatmap corners to crop corners (W - 1 <-> image_size - 1).
    udp = transform_preds(np.array([[[0.0, 0.0], [47.0, 63.0]]]), c[None], s[None], (48, 64), use_udp=True)
    np.testing.assert_allclose(udp[0, 1] - udp[0, 0], s * 200, rtol=1e-6)


def test_udp_warp_matrix_maps_box_to_crop_corners():
    c = np.array([100.0, 150.0], np.float32)
    s = np.array([0.96, 1.28], np.float32)
    m = get_udp_warp_matrix(0.0, c, s, (192, 256))
    corners = affine_transform_points([c - s * 100, c + s * 100], m)
    np.testing.assert_allclose(corners, [[0.0, 0.0], [191.0, 255.0]], atol=1e-3)
    j = warp_joints(np.array([[100.0, 150.0, 0.0], [-5.0, 9.0, 0.0]]), [0, 0], m, use_udp=True)
    np.testing.assert_allclose(j[0, :2], [95.5, 127.5], atol=1e-3)  # UDP moves invisible joints too


def test_warp_joints_moves_only_visible():
    trans = get_affine_transform((100.0, 100.0), (1.0, 4 / 3), 0.0, (192, 256))
    joints = np.array([[100.0, 100.0, 0.0], [-1000.0, 5000.0, 0.0]], np.float32)
    out = warp_joints(joints, np.array([[1, 1, 0], [0, 0, 0]], np.float32), trans)
    np.testing.assert_allclose(out[0, :2], [96.0, 128.0], atol=1e-4)
    np.testing.assert_array_equal(out[1], joints[1])


def test_center_jitter():
    boxes = np.array([[10.0, 20.0, 100.0, 200.0]] * 2000)
    c0, s0 = box_xywh_to_center_scale(boxes, (192, 256))
    c, s = box_xywh_to_center_scale(boxes, (192, 256), jitter_rng=np.random.default_rng(3), jitter_prob=0.3)
    np.testing.assert_array_equal(s, s0)  # the scale uses the raw box
    moved = np.any(c != c0, axis=1)
    assert 0.25 < moved.mean() < 0.35
    d = (c - c0)[moved]
    assert np.all(np.abs(d[:, 0]) <= 0.2 * 100 + 1e-4) and np.all(np.abs(d[:, 1]) <= 0.2 * 200 + 1e-4)
    assert np.abs(d[:, 1]).max() > 30  # spans the whole +-0.2 h range


def test_fliplr_joints_twice_is_identity():
    rng = np.random.default_rng(1)
    joints = np.concatenate([rng.uniform(0, 600, (17, 2)), np.zeros((17, 1))], axis=1).astype(np.float32)
    vis = np.ones((17, 3), np.float32)
    vis[4] = 0
    once, vis1 = fliplr_joints(joints, vis, 640, COCO_FLIP_PAIRS)
    # Left and right swap; x mirrors about (640 - 1) / 2; the invisible joint 4 (now 3) is zeroed.
    np.testing.assert_allclose(once[2, 0], 639 - joints[1, 0])
    np.testing.assert_array_equal(vis1[3], np.zeros(3))
    np.testing.assert_array_equal(once[3], np.zeros(3))
    twice, vis2 = fliplr_joints(once, vis1, 640, COCO_FLIP_PAIRS)
    np.testing.assert_array_equal(vis2, vis)
    keep = vis[:, 0] > 0
    np.testing.assert_allclose(twice[keep], joints[keep], atol=1e-4)
    np.testing.assert_allclose(fliplr_center(fliplr_center(np.array([10.5, 3.0]), 640), 640), [10.5, 3.0])
    # (K,) visibility works too.
    once_k, _ = fliplr_joints(joints, vis[:, 0], 640, COCO_FLIP_PAIRS)
    np.testing.assert_array_equal(once_k, once)


def test_half_body():
    upper = list(range(11))
    joints = np.zeros((17, 3), np.float32)
    joints[:11, :2] = [[100 + 3 * i, 50 + 2 * i] for i in range(11)]
    joints[11:, :2] = [[90 + 5 * i, 200 + 10 * i] for i in range(6)]
    vis = np.ones((17, 3), np.float32)
    seen = set()
    for seed in range(20):
        c, s = half_body_center_scale(joints, vis, upper, (192, 256), np.random.default_rng(seed))
        half = "upper" if c[1] < 150 else "lower"
        seen.add(half)
        sel = joints[:11] if half == "upper" else joints[11:]
        np.testing.assert_allclose(c, sel[:, :2].mean(0), rtol=1e-6)
        assert s.dtype == np.float32
        np.testing.assert_allclose(s[0] / s[1], 0.75, rtol=1e-5)
        h = np.ptp(sel[:, 1])
        np.testing.assert_allclose(s[1], max(h, np.ptp(sel[:, 0]) / 0.75) / 200 * 1.5, rtol=1e-5)
    assert seen == {"upper", "lower"}
    # Fewer than two visible joints in any half -> no transform.
    vis1 = np.zeros((17, 3), np.float32)
    vis1[0] = 1
    assert half_body_center_scale(joints, vis1, upper, (192, 256), np.random.default_rng(0)) == (None, None)
    c0, s0 = np.array([1.0, 2.0], np.float32), np.array([1.0, 1.0], np.float32)
    c, s = apply_half_body(joints, vis1, c0, s0, upper, (192, 256), np.random.default_rng(0), prob=1.0)
    assert c is c0 and s is s0


def test_random_scale_rotation_ranges():
    rng = np.random.default_rng(0)
    s0 = np.array([1.0, 4 / 3], np.float32)
    rots, facs = [], []
    for _ in range(500):
        s, r = random_scale_rotation(s0, rng, 0.5, 40.0, 0.6)
        assert s.dtype == np.float32
        facs.append(s[0] / s0[0])
        rots.append(r)
    facs, rots = np.array(facs), np.array(rots)
    assert facs.min() >= 0.5 - 1e-6 and facs.max() <= 1.5 + 1e-6
    assert np.abs(rots).max() <= 80 and 0.3 < np.mean(rots == 0) < 0.5


def test_bad_input_errors():
    with pytest.raises(ValueError, match="boxes_xywh"):
        box_xywh_to_center_scale(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="image_size"):
        box_xywh_to_center_scale(np.zeros((3, 4)), image_size=(1, 2, 3))
