"""TopDownPredictor input: BGR uint8 (H, W, 3) is the contract; grey, single-channel, alpha, RGB
order, float 0..1 / 0..255 and wide integer images are converted to exactly the same pixels, ambiguous
ones are refused, and unusable person boxes are dropped with a counting warning (an error when none
is left)."""
import logging

import cv2
import numpy as np
import pytest
import torch

from hrnext_d2.checkpoint import CheckpointLoadError
from hrnext_d2.engine import TopDownPredictor
from hrnext_d2.engine.image_input import to_bgr_uint8, validate_person_boxes
from tests.conftest import shared_path
from tests.fault_injection import captured_logs, write_pickle_with_payload
from tests.modeling.test_top_down import IMAGE_785_BOX, topdown_cfg

X, Y, W, H = IMAGE_785_BOX
BOX = np.array([[X, Y, X + W, Y + H]])


@pytest.fixture(scope="module")
def bgr():
    return cv2.imread(str(shared_path("fixtures", "coco", "images", "000000000785.jpg")))


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return TopDownPredictor(topdown_cfg())


def test_conversions_give_the_same_pixels(bgr):
    rgb = bgr[:, :, ::-1]
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    grey3 = np.repeat(grey[:, :, None], 3, axis=2)
    alpha = np.full(bgr.shape[:2] + (1,), 255, np.uint8)
    same = {
        "BGR uint8": to_bgr_uint8(bgr),
        "RGB uint8": to_bgr_uint8(rgb, "RGB"),
        "RGBA": to_bgr_uint8(np.concatenate([rgb, alpha], 2), "RGB"),
        "BGRA": to_bgr_uint8(np.concatenate([bgr, alpha], 2)),
        "float 0..1": to_bgr_uint8(bgr.astype(np.float32) / 255.0),
        "float 0..255": to_bgr_uint8(bgr.astype(np.float64)),
        "int64 0..255": to_bgr_uint8(bgr.astype(np.int64)),
        "uint16": to_bgr_uint8(bgr.astype(np.uint16) * 257),
    }
    for what, out in same.items():
        assert out.dtype == np.uint8 and out.shape == bgr.shape and out.flags["C_CONTIGUOUS"], what
        np.testing.assert_array_equal(out, bgr, err_msg=what)
    np.testing.assert_array_equal(to_bgr_uint8(grey), grey3)
    np.testing.assert_array_equal(to_bgr_uint8(grey[:, :, None]), grey3)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda b: (b.astype(np.float32) - 128.0) / 64.0, r"values in \[-2, 1.984\]: expected 0..1 or 0..255"),
        (lambda b: b.astype(np.float32) * 2.0, r"values in \[0, 510\]: expected 0..1 or 0..255"),
        (lambda b: np.where(b > 100, np.nan, b / 255.0), "NaN or infinite"),
        (lambda b: b.astype(np.int16) - 1, r"dtype int16 with values in \[-1, 254\]: only 0..255"),
        (lambda b: b > 100, "bool"),
        (lambda b: np.ascontiguousarray(b.transpose(2, 0, 1)), r"shape \(3, 425, 640\).*channels first"),
        (lambda b: b[:, :, :2], r"shape \(425, 640, 2\)"),
        (lambda b: None, "image is None"),
    ],
    ids=["normalised", "float 0..510", "NaN", "int16 negative", "bool", "channels first", "2 channels", "None"],
)
def test_ambiguous_images_are_refused(predictor, bgr, make, message):
    with pytest.raises(ValueError, match="TopDownPredictor: .*" + message):
        predictor(make(bgr), BOX)


def test_converted_inputs_give_the_same_keypoints(predictor, bgr):
    ref = predictor(bgr, BOX)["instances"].pred_keypoints
    for image, fmt in ((bgr[:, :, ::-1].copy(), "RGB"), (bgr.astype(np.float32) / 255.0, "BGR")):
        torch.testing.assert_close(predictor(image, BOX, image_format=fmt)["instances"].pred_keypoints, ref)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    torch.testing.assert_close(predictor(grey, BOX)["instances"].pred_keypoints,
                               predictor(np.repeat(grey[:, :, None], 3, 2), BOX)["instances"].pred_keypoints)
    # without boxes (DefaultPredictor's path) the conversion applies too
    torch.testing.assert_close(predictor(bgr[:, :, ::-1].copy(), image_format="RGB")["instances"].pred_keypoints,
                               predictor(bgr)["instances"].pred_keypoints)


def test_unusable_boxes_are_dropped_with_a_count_and_all_unusable_is_an_error(predictor, bgr):
    boxes = np.concatenate([BOX, [[700, 10, 900, 300], [0, 0, np.inf, 100], [50, 50, 50, 80], [-100, -50, 40, 60]]])
    with captured_logs("hrnext_d2.engine", logging.WARNING) as logs:
        inst = predictor(bgr, boxes, np.ones(5))["instances"]
    assert logs == [
        "Dropped 3 of 5 person boxes: 1 with a non-finite coordinate or score, 1 without a positive width and "
        "height, 1 entirely outside the 640x425 image"
    ]
    usable = torch.tensor([BOX[0], [-100.0, -50.0, 40.0, 60.0]], dtype=torch.float32)  # partly outside is kept
    assert 1 <= len(inst) <= 2
    for b in inst.pred_boxes.tensor:
        assert torch.isclose(usable, b).all(1).any(), b
    assert np.isfinite(inst.pred_keypoints.numpy()).all()
    with pytest.raises(ValueError, match=r"TopDownPredictor: none of the 2 person boxes is usable: 1 with a non-finite"):
        predictor(bgr, np.array([[700, 10, 900, 300], [np.nan, 0, 10, 10]]))
    with pytest.raises(ValueError, match=r"boxes_xyxy of shape \(2, 3\)"):
        validate_person_boxes(np.zeros((2, 3)), None, (10, 10))


def test_pickled_weights_are_refused_by_the_predictor(tmp_path):
    marker = tmp_path / "code_ran"
    cfg = topdown_cfg()
    cfg.MODEL.WEIGHTS = str(write_pickle_with_payload(tmp_path / "model.pkl", marker, extra={"model": {}}))
    with pytest.raises(CheckpointLoadError, match=r"model\.pkl: a pickle file; .*MODEL.WEIGHTS_ALLOW_PICKLE"):
        TopDownPredictor(cfg)
    assert not marker.exists()
