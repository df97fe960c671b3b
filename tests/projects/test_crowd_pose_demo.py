"""projects/crowd_pose_demo: the script's main() on a CrowdPose fixture image with random weights."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import shared_path

DEMO = Path(__file__).resolve().parents[2] / "projects" / "crowd_pose_demo" / "demo.py"
CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "crowdpose" / "hrnext_small_crowdpose_256x192.yaml")
# HRNeXt-S widths, one module per stage, 128x96 crops: a fast stand-in for the full model.
SMALL = [
    "INPUT.TOPDOWN.IMAGE_SIZE", "[96, 128]", "MODEL.HRNEXT.STAGE2.NUM_MODULES", "1",
    "MODEL.HRNEXT.STAGE3.NUM_MODULES", "1", "MODEL.HRNEXT.STAGE4.NUM_MODULES", "1", "MODEL.DEVICE", "cpu",
]  # fmt: skip


def _demo():
    spec = importlib.util.spec_from_file_location("crowd_pose_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A checkpoint of the small CrowdPose model with random weights, loaded through MODEL.WEIGHTS."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    demo = _demo()
    torch.manual_seed(0)
    model = build_model(demo.setup_cfg(CONFIG, SMALL))
    with torch.no_grad():  # a recognisable head bias, to see that MODEL.WEIGHTS is what runs
        model.keypoint_head.final_layer.bias.copy_(torch.linspace(-0.01, 0.01, 14))
    folder = tmp_path_factory.mktemp("demo_weights")
    DetectionCheckpointer(model, save_dir=str(folder)).save("model")
    return str(folder / "model.pth"), model.state_dict()["keypoint_head.final_layer.bias"].clone()


def test_demo_with_ground_truth_boxes(tmp_path, capsys, random_weights):
    weights, _ = random_weights
    image = shared_path("fixtures", "crowdpose", "images", "103319.jpg")
    gt = shared_path("fixtures", "crowdpose", "annotations", "test_crowdpose.json")
    out_file = tmp_path / "vis" / "103319_pose.jpg"
    result = _demo().main([
        "--config-file", CONFIG, "--input", str(image), "--output", str(out_file),
        "--boxes-json", str(gt), *SMALL, "MODEL.WEIGHTS", weights,
    ])
    inst = result["instances"]
    # two annotated persons in 103319 (found by file name); CrowdPose has 14 keypoints
    assert 1 <= len(inst) <= 2 and inst.pred_keypoints.shape[1:] == (14, 3)
    assert inst.image_size == (480, 640)
    drawn = cv2.imread(str(out_file))
    assert drawn is not None and drawn.shape == (480, 640, 3)
    assert not np.array_equal(drawn, cv2.imread(str(image)))  # something was drawn
    printed = capsys.readouterr().out
    assert printed.count("person ") == len(inst) and "top_head" in printed and "neck" in printed


def test_demo_with_detections_file_and_weights_loaded(tmp_path, random_weights):
    weights, bias = random_weights
    image = shared_path("fixtures", "crowdpose", "images", "106848.jpg")
    dets = shared_path("fixtures", "crowdpose", "annotations", "test_crowdpose_det_AP_40.json")
    demo = _demo()
    boxes, scores = demo.load_boxes(str(dets), str(image), 106848, 0.5)
    assert boxes.shape[1] == 4 and len(boxes) == len(scores) >= 1 and np.all(scores >= 0.5)
    out_file = tmp_path / "106848_pose.png"
    result = demo.main([
        "--config-file", CONFIG, "--input", str(image), "--output", str(out_file), "--boxes-json", str(dets),
        "--image-id", "106848", "--box-score-thresh", "0.5", *SMALL, "MODEL.WEIGHTS", weights,
    ])
    inst = result["instances"]
    assert 1 <= len(inst) <= len(boxes) and inst.pred_keypoints.shape[1:] == (14, 3)
    assert cv2.imread(str(out_file)).shape == (425, 640, 3)
    torch.testing.assert_close(result["predictor"].model.keypoint_head.final_layer.bias, bias)
    with pytest.raises(ValueError, match="--image-id"):
        demo.load_boxes(str(dets), str(image), None, 0.0)
