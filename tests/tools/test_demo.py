"""tools/demo.py as a user runs it: a folder of real images with a detections file, a generated video
with tracking, a Keypoint R-CNN model-zoo config; outputs, JSON, progress, and no warning noise."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hrnext_d2.data.datasets.synthetic_video import SyntheticCrowdVideoSpec, write_synthetic_crowd_video
from hrnext_d2.utils.tracking import box_iou_matrix
from tests.conftest import REPO_ROOT, shared_path, tool_env

# End to end (processes): deselect with -m "not slow".
pytestmark = pytest.mark.slow

QUICKSTART = "configs/quickstart/hrnext_small_synthetic.yaml"
# Random weights: the keypoints mean nothing, the pipeline is what is tested.
SMALL = ["MODEL.WEIGHTS", "", "MODEL.HRNEXT.STAGE3.NUM_MODULES", "1", "MODEL.HRNEXT.STAGE4.NUM_MODULES", "1"]


def _demo(*args, timeout=600):
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "demo.py"), *args],
        cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "Warning" not in proc.stderr and "warn" not in proc.stderr.lower(), proc.stderr[-3000:]
    return proc


def test_folder_of_images_with_a_detections_file(tmp_path):
    images = shared_path("fixtures", "coco", "images")
    dets = shared_path("fixtures", "coco", "annotations", "test_coco_det_AP_H_56.json")
    out, js = tmp_path / "drawn", tmp_path / "poses.json"
    proc = _demo("--config-file", QUICKSTART, "--input", str(images), "--boxes", str(dets), "--output", str(out),
                 "--json", str(js), "--confidence-threshold", "0.3", "--opts", *SMALL)
    assert "images: 100%" in proc.stderr and "3/3" in proc.stderr  # progress
    for name in ("000000000785.jpg", "000000040083.jpg", "000000197388.jpg"):
        drawn, original = cv2.imread(str(out / name)), cv2.imread(str(images / name))
        assert drawn.shape == original.shape and np.abs(drawn.astype(int) - original).mean() > 0.5
    records = json.load(open(js))
    # one record per detected box kept (score >= 0.3, person boxes of the detections file)
    det = [d for d in json.load(open(dets)) if d["score"] >= 0.3 and d.get("category_id", 1) == 1]
    for image_id in (785, 40083, 197388):
        mine = [r for r in records if r["image_id"] == image_id]
        assert 1 <= len(mine) <= sum(d["image_id"] == image_id for d in det)
        assert all(r["image"].endswith(f"{image_id:012d}.jpg") and len(r["keypoints"]) == 51 for r in mine)
    assert "track_id" not in records[0]


def test_video_is_written_with_its_fps_and_size_and_ids_stay(tmp_path):
    spec = SyntheticCrowdVideoSpec(num_frames=12, fps=15.0, seed=1, num_people=3)
    video, ann = str(tmp_path / "walk.mp4"), str(tmp_path / "walk.json")
    persons = write_synthetic_crowd_video(spec, video, ann)
    out, js = tmp_path / "walk_poses.mp4", tmp_path / "walk_poses.json"
    proc = _demo("--config-file", QUICKSTART, "--video-input", video, "--boxes", ann, "--output", str(out),
                 "--json", str(js), "--opts", *SMALL, "TRACKING.SIMILARITY", "iou")
    assert "video: 100%" in proc.stderr and "12/12" in proc.stderr
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (256, 192)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    records = json.load(open(js))
    assert sorted({r["frame"] for r in records}) == list(range(12)) and len(records) == 36
    # each figure keeps one id (random weights: boxes are the given ones, so IoU association)
    ids = {}
    for f in range(12):
        mine = [r for r in records if r["frame"] == f]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)])
        figures = box_iou_matrix(boxes, np.stack([p["bbox"] for p in persons[f]])).argmax(axis=1)
        for r, fig in zip(mine, figures):
            ids.setdefault(int(fig), set()).add(r["track_id"])
    assert sorted(ids) == [0, 1, 2] and all(len(v) == 1 for v in ids.values()), ids
    assert len({next(iter(v)) for v in ids.values()}) == 3


def test_keypoint_rcnn_model_zoo_config(tmp_path):
    image = shared_path("fixtures", "coco", "images", "000000197388.jpg")
    out, js = tmp_path / "krcnn.jpg", tmp_path / "krcnn.json"
    _demo("--config-file", "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml", "--input", str(image), "--output", str(out),
          "--json", str(js), "--confidence-threshold", "0.0",
          "--opts", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18",
          "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "INPUT.MIN_SIZE_TEST", "160", "TEST.DETECTIONS_PER_IMAGE", "3")
    assert cv2.imread(str(out)).shape == cv2.imread(str(image)).shape
    records = json.load(open(js))  # random weights at score threshold 0 still detect boxes
    assert 1 <= len(records) <= 3
    assert all(r["image_id"] == 197388 and len(r["keypoints"]) == 51 for r in records)
