"""On-device batched crop warp vs cv2.warpAffine (the reference's crop) on golden and real images."""
import json
import math

import cv2
import numpy as np
import torch

from hrnext_d2.topdown.crops import invert_affine, normalize_crops, warp_affine_crops
from tests.conftest import shared_path


def _box_affine(box_xywh, out_wh, rot_deg=0.0, padding=1.25):
    """Closed-form crop matrix (image -> crop) for a box, independent of hrnext_d2.topdown.geometry."""
    x, y, w, h = box_xywh
    cx, cy = x + w / 2, y + h / 2
    aspect = out_wh[0] / out_wh[1]
    w = max(w, h * aspect) * padding
    k = out_wh[0] / w
    t = math.radians(rot_deg)
    lin = k * np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    off = np.array([out_wh[0] / 2, out_wh[1] / 2]) - lin @ np.array([cx, cy])
    return np.concatenate([lin, off[:, None]], axis=1)


def test_golden_warp_crops_equal_cv2():
    g = np.load(shared_path("golden", "topdown", "topdown_golden.npz"))
    image, mats, ref = g["warp_image"], g["warp_trans"], g["warp_crops"].astype(np.float32)
    t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    out = warp_affine_crops(t, mats, (192, 256), round_to_uint8=True).permute(0, 2, 3, 1).numpy()
    assert out.shape == ref.shape
    # OpenCV's 1/32-pixel source grid, its integer weights and its half-up rounding are reproduced
    np.testing.assert_array_equal(out, ref)
    # without the 1/32-pixel snap a float sampler differs by up to several levels at sharp edges
    plain = warp_affine_crops(t, mats, (192, 256), round_to_uint8=True, cv2_subpixel=False)
    assert np.abs(plain.permute(0, 2, 3, 1).numpy() - ref).max() > 1
    # crop 2 lies partly outside the image: the constant-0 border must be reproduced
    outside = ref[2].sum(-1) == 0
    assert outside.mean() > 0.05 and np.all(out[2][outside] == 0)


def test_real_fixture_boxes_match_cv2_and_batching_is_exact():
    root = shared_path("fixtures", "coco")
    anns = json.load(open(root / "annotations" / "test_coco.json"))["annotations"]
    image = cv2.imread(str(root / "images" / "000000197388.jpg"))
    boxes = [a["bbox"] for a in anns if a["image_id"] == 197388]
    mats = np.stack([_box_affine(b, (192, 256), rot) for b, rot in zip(boxes, [0, 30, -45, 0, 10])])
    t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    ours = warp_affine_crops(t, mats, (192, 256), round_to_uint8=True)
    ref = np.stack([cv2.warpAffine(image, m, (192, 256), flags=cv2.INTER_LINEAR) for m in mats])
    np.testing.assert_array_equal(ours.permute(0, 2, 3, 1).numpy(), ref.astype(np.float32))
    # the rounding of cv2 matters: round-half-to-even (torch.round) would differ on ~0.5% of pixels
    sampled = warp_affine_crops(t.double(), mats, (192, 256)).permute(0, 2, 3, 1).numpy()
    assert np.mean(np.round(sampled) != ref) > 1e-3
    # float images (DefaultPredictor's float32 tensors) give the same crops
    ours_f = warp_affine_crops(t.float(), mats, (192, 256), round_to_uint8=True)
    assert torch.equal(ours, ours_f)
    # one crop at a time == all at once
    single = warp_affine_crops(t, mats[3:4], (192, 256), round_to_uint8=True)
    assert torch.equal(single[0], ours[3])
    # unrounded float crops stay close to cv2 on a float image
    ref_f = cv2.warpAffine(image.astype(np.float32), mats[1], (192, 256), flags=cv2.INTER_LINEAR)
    unrounded = warp_affine_crops(t.float(), mats[1:2], (192, 256))[0].permute(1, 2, 0).numpy()
    assert np.abs(unrounded - ref_f).mean() < 0.05


def test_exact_pixel_mapping_and_empty_input():
    # an integer translation samples pixels exactly
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).reshape(3, 20, 30)
    mat = np.array([[1.0, 0, -5], [0, 1.0, -7]])
    crop = warp_affine_crops(image, mat[None], (10, 6), cv2_subpixel=False)
    torch.testing.assert_close(crop[0], image[:, 7:13, 5:15], rtol=0, atol=1e-3)
    crop = warp_affine_crops(image, mat[None], (10, 6))
    torch.testing.assert_close(crop[0], image[:, 7:13, 5:15], rtol=0, atol=1e-3)
    assert warp_affine_crops(image, np.zeros((0, 2, 3)), (10, 6)).shape == (0, 3, 6, 10)
    inv = invert_affine(_box_affine((10, 20, 30, 40), (192, 256), 30)[None])[0]
    fwd = _box_affine((10, 20, 30, 40), (192, 256), 30)
    np.testing.assert_allclose(fwd[:, :2] @ inv[:, :2], np.eye(2), atol=1e-12)


def test_normalize_crops():
    crops = torch.full((2, 3, 4, 4), 255.0)
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    out = normalize_crops(crops, mean, std)
    torch.testing.assert_close(out[1, :, 0, 0], (255 - mean) / std)
