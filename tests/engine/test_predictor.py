"""DefaultPredictor / TopDownPredictor on real fixture images: whole-image fallback, supplied boxes,
and a real (small, randomly initialised) Detectron2 detector wired in as the person detector."""
import json

import cv2
import numpy as np
import pytest
import torch

from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from hrnext_d2.engine import TopDownPredictor
from hrnext_d2.modeling.meta_arch.person_detector import build_person_detector
from tests.conftest import shared_path
from tests.golden_weights import manifest, official_state_dict
from tests.modeling.test_top_down import IMAGE_785_BOX, PINNED_785, topdown_cfg

DETECTOR = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
# A ResNet-18 FPN Faster R-CNN at a small test size: fast on the CPU.
DETECTOR_OPTS = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "448",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "TEST.DETECTIONS_PER_IMAGE", "3",
]  # fmt: skip


def _image(name="000000197388.jpg"):
    return cv2.imread(str(shared_path("fixtures", "coco", "images", name)))


def _gt_boxes_xyxy(image_id):
    anns = json.load(open(shared_path("fixtures", "coco", "annotations", "test_coco.json")))["annotations"]
    xywh = np.array([a["bbox"] for a in anns if a["image_id"] == image_id], dtype=np.float64)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)


def _direct(model, bgr, boxes=None):
    """The model called by hand on an RGB tensor (what the predictors must reproduce)."""
    inp = {"image": torch.as_tensor(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float(),
           "height": bgr.shape[0], "width": bgr.shape[1]}
    if boxes is not None:
        inst = Instances(bgr.shape[:2])
        inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        inst.scores = torch.ones(len(boxes))
        inp["instances"] = inst
    with torch.no_grad():
        return model([inp])[0]["instances"]


def test_default_predictor_whole_image_fallback():
    torch.manual_seed(0)
    predictor = DefaultPredictor(topdown_cfg())
    bgr = _image("000000000785.jpg")
    inst = predictor(bgr)["instances"]
    assert inst.image_size == (425, 640)
    assert inst.pred_keypoints.shape == (1, 17, 3)
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 640.0, 425.0]]))
    # the predictor's BGR -> RGB conversion gives what the model computes on the RGB image
    torch.testing.assert_close(inst.pred_keypoints, _direct(predictor.model, bgr).pred_keypoints)


def test_topdown_predictor_with_supplied_boxes():
    torch.manual_seed(0)
    cfg = topdown_cfg()
    cfg.MODEL.TOPDOWN.USE_INPUT_BOXES = False  # the predictor turns it on for supplied boxes
    predictor = TopDownPredictor(cfg)
    bgr = _image()
    boxes = _gt_boxes_xyxy(197388)
    inst = predictor(bgr, boxes, np.ones(len(boxes)))["instances"]
    assert inst.image_size == (392, 640)
    assert 1 <= len(inst) <= len(boxes) and inst.pred_keypoints.shape[1:] == (17, 3)
    given = torch.as_tensor(boxes, dtype=torch.float32)
    for b in inst.pred_boxes.tensor:
        assert torch.isclose(given, b, atol=1e-3).all(1).any()
    ref = _direct(predictor.model, bgr, boxes)
    torch.testing.assert_close(inst.pred_keypoints, ref.pred_keypoints)
    # keypoints stay near their boxes (crop = box padded by 1.25)
    for b, k in zip(inst.pred_boxes.tensor, inst.pred_keypoints):
        w, h = b[2] - b[0], b[3] - b[1]
        assert torch.all(k[:, 0] > b[0] - w) and torch.all(k[:, 0] < b[2] + w)
        assert torch.all(k[:, 1] > b[1] - h) and torch.all(k[:, 1] < b[3] + h)
    # no boxes at all -> empty result with the right fields; boxes without scores -> score 1
    empty = predictor(bgr, np.zeros((0, 4)))["instances"]
    assert len(empty) == 0 and empty.pred_keypoints.shape == (0, 17, 3)
    with pytest.raises(ValueError, match="scores"):
        predictor(bgr, boxes, np.ones(2))


def test_topdown_predictor_loads_official_mmpose_checkpoint_and_reproduces_pinned_keypoints(tmp_path):
    """MODEL.WEIGHTS = an official-format mmpose file ({"state_dict": ...}, golden HRNeXt-S seed 0)."""
    path = tmp_path / "hrnext_s_coco_official.pth"
    torch.save({"state_dict": official_state_dict(manifest("hrnext_s_coco"), 0)}, path)
    cfg = topdown_cfg(small=False)
    cfg.MODEL.WEIGHTS = str(path)
    predictor = TopDownPredictor(cfg)
    x, y, w, h = IMAGE_785_BOX
    inst = predictor(_image("000000000785.jpg"), np.array([[x, y, x + w, y + h]]))["instances"]
    np.testing.assert_allclose(inst.pred_keypoints[0, :, :2].numpy(), PINNED_785[:, :2], atol=1e-3)
    np.testing.assert_allclose(inst.pred_keypoints[0, :, 2].numpy(), PINNED_785[:, 2], atol=1e-4)


def test_degenerate_boxes_are_skipped():
    torch.manual_seed(0)
    predictor = TopDownPredictor(topdown_cfg())
    boxes = np.array([[10.0, 10.0, 10.0, 50.0], [100.0, 50.0, 200.0, 300.0]])
    inst = predictor(_image("000000000785.jpg"), boxes, np.array([0.9, 0.8]))["instances"]
    assert len(inst) == 1
    torch.testing.assert_close(inst.pred_boxes.tensor[0], torch.tensor([100.0, 50.0, 200.0, 300.0]))


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory):
    """Random small Faster R-CNN whose classifier says 'person' everywhere (bias), as a checkpoint."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(DETECTOR))
    cfg.merge_from_list(DETECTOR_OPTS)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    sd = model.state_dict()
    sd["roi_heads.box_predictor.cls_score.weight"].zero_()
    bias = sd["roi_heads.box_predictor.cls_score.bias"]
    bias.zero_()
    bias[0] = 8.0  # person (class 0) over the 79 other classes and background
    path = tmp_path_factory.mktemp("detector") / "person_detector.pth"
    torch.save({"model": sd}, path)
    return str(path)


def _detector_cfg(weights):
    cfg = topdown_cfg()
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.CONFIG_FILE = DETECTOR
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.WEIGHTS = weights
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.OPTS = list(DETECTOR_OPTS)
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.SCORE_THRESH = 0.3
    return cfg


def test_person_detector_prepares_its_own_input_format_and_size(detector_weights):
    det = build_person_detector(_detector_cfg(detector_weights))
    assert det.input_format == "BGR" and det.person_class == 0
    rgb = torch.zeros(3, 100, 200)
    rgb[0] = 255.0  # red in RGB
    prepared = det._prepare({"image": rgb, "height": 100, "width": 200}, "RGB", torch.device("cpu"))
    assert prepared["image"].shape == (3, 224, 448)  # short side 256 would make the long side 512 > 448
    assert prepared["image"][2].mean() == 255.0 and prepared["image"][0].abs().sum() == 0  # now BGR
    assert (prepared["height"], prepared["width"]) == (100, 200)


def test_default_predictor_with_person_detector_produces_keypoints(detector_weights):
    torch.manual_seed(0)
    cfg = _detector_cfg(detector_weights)
    predictor = DefaultPredictor(cfg)
    bgr = _image()
    inst = predictor(bgr)["instances"]
    # the detector's person boxes (not the whole image) got keypoints
    boxes, scores = build_person_detector(cfg)(
        [{"image": torch.as_tensor(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float(),
          "height": 392, "width": 640}], "RGB", torch.device("cpu"))[0]
    assert 1 <= len(boxes) <= 3 and np.all(scores > 0.3)
    assert 1 <= len(inst) <= len(boxes)
    assert inst.pred_keypoints.shape[1:] == (17, 3)
    det_boxes = torch.as_tensor(boxes, dtype=torch.float32)
    for b in inst.pred_boxes.tensor:
        assert torch.isclose(det_boxes, b, atol=1e-3).all(1).any()
    assert not torch.equal(inst.pred_boxes.tensor[0], torch.tensor([0.0, 0.0, 640.0, 392.0]))
    # the detector is not part of the pose model's weights
    assert not any(k.startswith(("roi_heads", "proposal_generator")) for k in predictor.model.state_dict())
