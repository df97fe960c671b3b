"""The onnxruntime pose pipeline: TopDownPredictor's keypoints on the CrowdPose and COCO fixtures (ground
truth boxes), with the flip test in the graph or in the runtime; it runs with torch unimportable."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hrnext_d2.export import OnnxPosePipeline
from tests.conftest import REPO_ROOT, shared_path, tool_env


def _fixture_images(dataset):
    """[(file path, gt boxes XYXY)] of a fixture dataset, images with at least one box."""
    root = shared_path("fixtures", dataset)
    data = json.load(open(root / "annotations" / f"test_{dataset}.json"))
    out = []
    for im in data["images"]:
        xywh = np.array([a["bbox"] for a in data["annotations"] if a["image_id"] == im["id"]], np.float64)
        if len(xywh):
            out.append((root / "images" / im["file_name"], np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)))
    return out


def _assert_same_as_predictor(out, inst, boxes):
    kpts = inst.pred_keypoints.numpy()
    assert out["keypoints"].shape == kpts.shape and out["keypoints"].dtype == np.float32
    assert out["boxes"].dtype == np.float32 and out["scores"].dtype == np.float32
    np.testing.assert_allclose(out["boxes"], inst.pred_boxes.tensor.numpy(), atol=1e-4)  # same persons, same order
    np.testing.assert_array_equal(out["boxes"], boxes.astype(np.float32)[out["box_indices"]])
    assert np.abs(out["keypoints"][..., :2] - kpts[..., :2]).max() <= 0.5
    assert np.abs(out["keypoints"][..., 2] - kpts[..., 2]).max() <= 1e-3
    assert np.abs(out["scores"] - inst.scores.numpy()).max() <= 1e-3


@pytest.mark.parametrize("dataset,fixture", [("coco", "coco_onnx"), ("crowdpose", "crowdpose_onnx_flip")])
def test_pipeline_equals_topdown_predictor_on_fixtures(dataset, fixture, request):
    exp = request.getfixturevalue(fixture)
    pipeline = OnnxPosePipeline(str(exp.model_dir), num_threads=2)
    persons = 0
    for path, boxes in _fixture_images(dataset):
        image = cv2.imread(str(path))
        scores = np.linspace(0.9, 0.6, len(boxes))
        out = pipeline(image, boxes, scores)
        inst = exp.predictor(image, boxes, scores)["instances"]
        _assert_same_as_predictor(out, inst, boxes)
        persons += len(inst)
        # measured: identical positions and scores within 3e-6 (the crops are identical; only the
        # network's float32 arithmetic differs between onnxruntime and torch)
        assert np.abs(out["keypoints"][..., :2] - inst.pred_keypoints[..., :2].numpy()).max() <= 1e-3
    assert persons >= 4


def test_pipeline_edge_cases_and_errors(coco_onnx, tmp_path):
    pipeline = OnnxPosePipeline(coco_onnx.model_dir)
    image = cv2.imread(str(_fixture_images("coco")[0][0]))
    empty = pipeline(image, np.zeros((0, 4)))
    assert empty["keypoints"].shape == (0, 17, 3) and empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,)
    # a box without area has no crop: skipped, as by the model
    out = pipeline(image, np.array([[10.0, 10.0, 10.0, 50.0], [100.0, 50.0, 200.0, 300.0]]))
    assert len(out["scores"]) == 1 and out["box_indices"].tolist() == [1]
    with pytest.raises(ValueError, match="2 boxes but 3 box_scores"):
        pipeline(image, np.ones((2, 4)) * [0, 0, 10, 10], np.ones(3))
    with pytest.raises(ValueError, match=r"image_bgr must be an \(H, W, 3\) uint8 array"):
        pipeline(image.astype(np.float32), np.zeros((0, 4)))
    with pytest.raises(Exception, match="model.json: not found"):
        OnnxPosePipeline(tmp_path)


# Runs in a fresh interpreter where importing torch or Detectron2 fails, as on a machine without them.
_TORCH_FREE = r"""
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "detectron2"):
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)", name=name.split(".")[0])
        return None

sys.meta_path.insert(0, Refuse())
import cv2, numpy as np
from hrnext_d2.export import OnnxPosePipeline

model_dir, image_path, boxes = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]))
out = OnnxPosePipeline(model_dir, num_threads=1)(cv2.imread(image_path), boxes)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "detectron2"))
print(json.dumps({"loaded": loaded, **{k: v.tolist() for k, v in out.items()}}))
"""


def test_pipeline_runs_without_torch(crowdpose_onnx_flip):
    path, boxes = _fixture_images("crowdpose")[0]
    proc = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE, str(crowdpose_onnx_flip.model_dir), str(path), json.dumps(boxes.tolist())],
        cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    inst = crowdpose_onnx_flip.predictor(cv2.imread(str(path)), boxes)["instances"]
    out = {k: np.asarray(v, dtype=np.int64 if k == "box_indices" else np.float32) for k, v in result.items() if k != "loaded"}
    _assert_same_as_predictor(out, inst, boxes)


def test_demo_backend_runs_the_real_pipeline(coco_onnx):
    """tools/demo.py --backend onnxruntime --model DIR: the exported pipeline behind the demo's backend
    gives the predictor's persons as Instances; no boxes = the whole image, as the top-down backend."""
    from hrnext_d2.engine.pose_backends import build_pose_backend

    backend = build_pose_backend(coco_onnx.cfg, "onnxruntime", str(coco_onnx.model_dir))
    path, boxes = _fixture_images("coco")[0]
    image = cv2.imread(str(path))
    scores = np.linspace(0.9, 0.6, len(boxes))
    inst = backend(image, boxes, scores)
    ref = coco_onnx.predictor(image, boxes, scores)["instances"]
    assert inst.image_size == image.shape[:2] and len(inst) == len(ref) == len(boxes)
    np.testing.assert_allclose(inst.pred_boxes.tensor.numpy(), ref.pred_boxes.tensor.numpy(), atol=1e-4)
    assert np.abs(inst.pred_keypoints[..., :2].numpy() - ref.pred_keypoints[..., :2].numpy()).max() <= 1e-3
    assert np.abs(inst.scores.numpy() - ref.scores.numpy()).max() <= 1e-3
    assert inst.pred_classes.tolist() == [0] * len(boxes)
    whole = backend(image)
    h, w = image.shape[:2]
    assert len(whole) == 1 and whole.pred_boxes.tensor.tolist() == [[0.0, 0.0, float(w), float(h)]]
    assert whole.pred_keypoints.shape == (1, 17, 3)
