"""Heatmap codec against the mmpose 0.23 golden data, plus round-trip and flip behaviour."""
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.topdown.codec import HeatmapCodec, combine_flip, flip_back, get_max_preds
from hrnext_d2.topdown.geometry import get_affine_transform, get_udp_warp_matrix, warp_joints
from tests.conftest import shared_path
from tests.topdown.mmpose_reference import COCO_FLIP_PAIRS, result_boxes, result_preds


@pytest.fixture(scope="module")
def golden():
    return np.load(shared_path("golden", "topdown", "topdown_golden.npz"))


@pytest.mark.parametrize("tag,size,sigma", [("s2", (192, 256), 2.0), ("s3", (288, 384), 3.0)])
def test_targets_golden(golden, tag, size, sigma):
    codec = HeatmapCodec(size, sigma=sigma)
    assert codec.heatmap_size == (size[0] // 4, size[1] // 4)
    for i in range(len(golden["target_center"])):
        target, weight = codec.encode(golden[f"target_joints_crop_{tag}"][i], golden["target_joints_visible"][i])
        assert target.dtype == np.float32 and weight.dtype == np.float32
        np.testing.assert_array_equal(target, golden[f"target_heatmaps_{tag}"][i])
        np.testing.assert_array_equal(weight, golden[f"target_weight_{tag}"][i])


def test_targets_from_image_joints_golden(golden):
    """The training path: image joints -> warp (visible only) -> encode gives the golden targets."""
    codec = HeatmapCodec((192, 256), sigma=2.0)
    for i in range(len(golden["target_center"])):
        trans = get_affine_transform(golden["target_center"][i], golden["target_scale"][i], golden["target_rot"][i], (192, 256))
        joints = warp_joints(golden["target_joints_img"][i], golden["target_joints_visible"][i], trans)
        target, weight = codec.encode(joints, golden["target_joints_visible"][i][:, 0])
        np.testing.assert_array_equal(target, golden["target_heatmaps_s2"][i])
        np.testing.assert_array_equal(weight, golden["target_weight_s2"][i])


def test_argmax_golden(golden):
    for b in range(len(golden["decode_heatmaps"])):
        preds, maxvals = get_max_preds(golden["decode_heatmaps"][b])
        assert preds.dtype == np.float32
        np.testing.assert_array_equal(preds, golden["decode_argmax_xy"][b])
        np.testing.assert_array_equal(maxvals, golden["decode_maxvals"][b])


@pytest.mark.parametrize("post", ["default", "unbiased"])
def test_decode_golden(golden, post):
    codec = HeatmapCodec((192, 256), post_process=post, dark_kernel=11)
    for b in range(len(golden["decode_heatmaps"])):
        hm = golden["decode_heatmaps"][b]
        coords, maxvals = codec.decode_heatmap_coords(hm)
        np.testing.assert_array_equal(coords, golden[f"decode_hmcoords_{post}"][b])
        np.testing.assert_array_equal(maxvals, golden["decode_maxvals"][b])
        preds, maxvals = codec.decode(hm, golden["decode_center"][b], golden["decode_scale"][b])
        assert preds.dtype == np.float32 and preds.shape == golden[f"decode_preds_{post}"][b].shape
        np.testing.assert_array_equal(preds, golden[f"decode_preds_{post}"][b])
        np.testing.assert_array_equal(maxvals, golden["decode_maxvals"][b])


def test_decode_result_dict_golden(golden):
    codec = HeatmapCodec((192, 256))
    for b in range(len(golden["decode_heatmaps"])):
        preds, maxvals = codec.decode(golden["decode_heatmaps"][b], golden["decode_center"][b], golden["decode_scale"][b])
        np.testing.assert_array_equal(result_preds(preds, maxvals), golden["decode_result_preds"][b])
        boxes = result_boxes(golden["decode_center"][b], golden["decode_scale"][b], golden["decode_bbox_score"][b])
        assert boxes.dtype == np.float32
        np.testing.assert_array_equal(boxes, golden["decode_result_boxes"][b])
    # Without a box score the score column is 1.
    assert np.all(result_boxes(golden["decode_center"][0], golden["decode_scale"][0])[:, 5] == 1.0)


@pytest.mark.parametrize("shift,key", [(True, "flip_combined_shift"), (False, "flip_combined_noshift")])
def test_flip_combine_golden(golden, shift, key):
    for b in range(len(golden["flip_hm_orig"])):
        orig, flipped = golden["flip_hm_orig"][b], golden["flip_hm_flipped"][b]
        comb = combine_flip(orig, flipped, COCO_FLIP_PAIRS, shift)
        assert comb.dtype == np.float32
        np.testing.assert_array_equal(comb, golden[key][b])
        comb_t = HeatmapCodec.combine_flip(torch.from_numpy(orig), torch.from_numpy(flipped), COCO_FLIP_PAIRS, shift)
        assert isinstance(comb_t, torch.Tensor) and comb_t.dtype == torch.float32
        np.testing.assert_array_equal(comb_t.numpy(), golden[key][b])


def test_flip_result_golden(golden):
    codec = HeatmapCodec((192, 256))
    for b in range(len(golden["flip_hm_orig"])):
        comb = codec.combine_flip(golden["flip_hm_orig"][b], golden["flip_hm_flipped"][b], COCO_FLIP_PAIRS, True)
        preds, maxvals = codec.decode(comb, golden["flip_center"][b], golden["flip_scale"][b])
        np.testing.assert_array_equal(result_preds(preds, maxvals), golden["flip_result_preds"][b])
        boxes = result_boxes(golden["flip_center"][b], golden["flip_scale"][b], golden["flip_bbox_score"][b])
        np.testing.assert_array_equal(boxes, golden["flip_result_boxes"][b])


@pytest.mark.parametrize("post", ["default", "unbiased", "udp"])
def test_encode_decode_round_trip(post):
    """Encode joints, decode their targets: back within 0.25 heatmap px of the encoded position.

    MSRA puts the peak on the integer cell int(x / 4 + 0.5), so the encoded position is that cell
    (a symmetric blob gets no quarter shift); UDP encodes the sub-pixel position itself.
    """
    codec = HeatmapCodec((192, 256), sigma=2.0, post_process=post)
    rng = np.random.default_rng(0)
    # Away from the borders, where the blob is whole and DARK's blur sees no edge.
    joints = np.concatenate([rng.uniform(48, 144, (17, 1)), rng.uniform(48, 208, (17, 1))], axis=1).astype(np.float32)
    target, weight = codec.encode(joints, np.ones(17, np.float32))
    assert np.all(weight == 1)
    if codec.use_udp:
        # Identity crop for UDP: heatmap (W - 1) spans image_size - 1 pixels.
        center = np.array([[95.5, 127.5]], np.float32)
        scale = np.array([[191 / 200, 255 / 200]], np.float32)
        stride = np.array([191 / 47, 255 / 63])
        encoded = joints / stride
    else:
        assert target.max() == 1.0  # unnormalised Gaussian, peak exactly 1
        center = np.array([[96.0, 128.0]], np.float32)  # crop = image: x_img = 4 x_hm
        scale = np.array([[0.96, 1.28]], np.float32)
        stride = np.array([4.0, 4.0])
        encoded = np.floor(joints / 4 + 0.5)
    preds, maxvals = codec.decode(target[None], center, scale)
    err_hm = np.abs(preds[0] / stride - encoded)
    assert err_hm.max() <= 0.25 + 1e-4, err_hm.max()
    assert np.all(np.abs(preds[0] - joints) / stride <= 0.5 + 1e-4)
    assert np.all(maxvals > 0.5)


def test_round_trip_through_image():
    """Image joint -> crop -> target -> decode -> image lands within one heatmap cell's quarter."""
    codec = HeatmapCodec((192, 256))
    center, scale = np.array([300.0, 200.0], np.float32), np.array([1.2, 1.6], np.float32)
    joints_img = np.array([[280.3, 150.7, 0.0], [350.9, 260.2, 0.0]], np.float32)
    trans = get_affine_transform(center, scale, 0.0, (192, 256))
    crop = warp_joints(joints_img, np.ones(2), trans)
    target, _ = codec.encode(crop, np.ones(2))
    preds, _ = codec.decode(target[None], center[None], scale[None])
    px_per_cell = scale[0] * 200 / 48
    assert np.all(np.abs(preds[0] - joints_img[:, :2]) <= 0.25 * px_per_cell + 1e-3)


def test_udp_target_is_subpixel():
    codec = HeatmapCodec((192, 256), use_udp=True)
    j = np.array([[100.3, 50.6]], np.float32)
    target, _ = codec.encode(j, np.ones(1))
    y, x = np.unravel_index(np.argmax(target[0]), target[0].shape)
    stride = 191 / 47
    assert (x, y) == (round(100.3 / stride), round(50.6 / (255 / 63)))
    assert target[0].max() < 1.0  # the Gaussian centre is off the grid
    # UDP crop + encode + decode round trip back to the image.
    center, scale = np.array([300.0, 200.0], np.float32), np.array([1.2, 1.6], np.float32)
    joints_img = np.array([[280.3, 150.7, 0.0], [350.9, 260.2, 0.0]], np.float32)
    crop = warp_joints(joints_img, np.zeros(2), get_udp_warp_matrix(0.0, center, scale, (192, 256)), use_udp=True)
    target, _ = codec.encode(crop, np.ones(2))
    preds, _ = codec.decode(target[None], center[None], scale[None])
    np.testing.assert_allclose(preds[0], joints_img[:, :2], atol=0.3)


def test_flip_back_twice_is_identity():
    hm = np.random.default_rng(0).standard_normal((2, 17, 8, 6)).astype(np.float32)
    np.testing.assert_array_equal(flip_back(flip_back(hm, COCO_FLIP_PAIRS, False), COCO_FLIP_PAIRS, False), hm)
    t = torch.from_numpy(hm)
    assert torch.equal(flip_back(flip_back(t, COCO_FLIP_PAIRS, False), COCO_FLIP_PAIRS, False), t)
    # The shift moves everything one column right and duplicates column 0.
    back = flip_back(hm, COCO_FLIP_PAIRS, False)
    shifted = flip_back(hm, COCO_FLIP_PAIRS, True)
    np.testing.assert_array_equal(shifted[..., 1:], back[..., :-1])
    np.testing.assert_array_equal(shifted[..., 0], back[..., 0])
    # Channel 1 of the result is channel 2 of the input, mirrored.
    np.testing.assert_array_equal(back[:, 1], hm[:, 2, :, ::-1])


def test_default_decode_borders_and_ties():
    codec = HeatmapCodec((192, 256))
    hm = np.zeros((1, 4, 64, 48), np.float32)
    hm[0, 0, 30, 1], hm[0, 0, 30, 2] = 1.0, 0.5  # column 1: no refinement
    hm[0, 1, 30, 46], hm[0, 1, 30, 45] = 1.0, 0.5  # column W-2: refined toward 45
    hm[0, 2] = -1.0  # all negative -> (-1, -1), maxval kept
    hm[0, 3, 10, 5] = hm[0, 3, 4, 20] = 0.7  # tie -> first in row-major order
    coords, maxvals = codec.decode_heatmap_coords(hm)
    np.testing.assert_array_equal(coords[0, 0], [1.0, 30.0])
    np.testing.assert_array_equal(coords[0, 1], [45.75, 30.0])
    np.testing.assert_array_equal(coords[0, 2], [-1.0, -1.0])
    assert maxvals[0, 2, 0] == -1.0
    np.testing.assert_array_equal(coords[0, 3], [20.0, 4.0])


def test_from_config():
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.INPUT.TOPDOWN.IMAGE_SIZE = [288, 384]
    cfg.MODEL.TOPDOWN.SIGMA = 3.0
    cfg.MODEL.TOPDOWN.POST_PROCESS = "unbiased"
    cfg.MODEL.TOPDOWN.DARK_KERNEL = 17
    codec = HeatmapCodec.from_config(cfg)
    assert isinstance(codec, HeatmapCodec)
    assert codec.image_size == (288, 384) and codec.heatmap_size == (72, 96)
    assert codec.sigma == 3.0 and codec.post_process == "unbiased" and codec.dark_kernel == 17 and not codec.use_udp
    cfg.MODEL.TOPDOWN.DARK_KERNEL = 10
    with pytest.raises(ValueError, match="DARK_KERNEL"):
        HeatmapCodec.from_config(cfg)
    cfg.MODEL.TOPDOWN.DARK_KERNEL = 11
    cfg.MODEL.TOPDOWN.POST_PROCESS = "bogus"
    with pytest.raises(ValueError, match="POST_PROCESS"):
        HeatmapCodec.from_config(cfg)
    cfg.MODEL.TOPDOWN.POST_PROCESS = "default"
    cfg.INPUT.TOPDOWN.IMAGE_SIZE = [190, 256]
    with pytest.raises(ValueError, match="IMAGE_SIZE"):
        HeatmapCodec.from_config(cfg)


def test_bad_input_errors():
    codec = HeatmapCodec((192, 256))
    with pytest.raises(ValueError, match="joints_visible"):
        codec.encode(np.zeros((17, 3)), np.ones(16))
    with pytest.raises(ValueError, match="heatmaps"):
        codec.decode(np.zeros((17, 64, 48)), np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="centers"):
        codec.decode(np.zeros((2, 17, 64, 48)), np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="flip pair"):
        flip_back(np.zeros((1, 3, 4, 4)), [[1, 5]])


def test_stacked_blurs_match_per_channel_cv2():
    """The blurs run on vertically stacked channels; each must equal mmpose's per-channel cv2 call."""
    import cv2

    from hrnext_d2.topdown.codec import gaussian_blur, udp_blur

    rng = np.random.default_rng(0)
    hm = (rng.random((3, 17, 64, 48), dtype=np.float32) - 0.1).astype(np.float32)
    hm[0, 0] = 0.0  # all-zero channel: 0/0 = NaN after rescaling, as mmpose
    for kernel in (11, 17):
        b = (kernel - 1) // 2
        ref_dark = hm.copy()
        ref_udp = hm.copy()
        for i in range(3):
            for j in range(17):
                origin_max = np.max(hm[i, j])
                dr = np.zeros((64 + 2 * b, 48 + 2 * b), dtype=np.float32)
                dr[b:-b, b:-b] = hm[i, j]
                dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
                ref_dark[i, j] = dr[b:-b, b:-b]
                with np.errstate(divide="ignore", invalid="ignore"):
                    ref_dark[i, j] *= origin_max / np.max(ref_dark[i, j])
                cv2.GaussianBlur(ref_udp[i, j], (kernel, kernel), 0, ref_udp[i, j])
        np.testing.assert_array_equal(gaussian_blur(hm, kernel), ref_dark)  # NaNs in the same places
        np.testing.assert_array_equal(udp_blur(hm, kernel), ref_udp)
