"""VideoPosePredictor on the synthetic crowd video: detection every N frames with boxes propagated
from keypoints, ids with the real top-down model, the backends (top-down, DefaultPredictor with a
Keypoint R-CNN config, the onnxruntime slot) and the person box sources."""
import json
import sys
import types

import cv2
import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, Instances

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.data.datasets.keypoint_metadata import COCO_KEYPOINT_OKS_SIGMAS
from hrnext_d2.data.datasets.synthetic import SyntheticCrowdSpec, register_synthetic_crowd
from hrnext_d2.data.datasets.synthetic_video import SyntheticCrowdVideoSpec, write_synthetic_crowd_video
from hrnext_d2.data.mapper import TopDownDatasetMapper
from hrnext_d2.engine import FrameKey, VideoPosePredictor, build_person_box_source, build_pose_backend
from hrnext_d2.engine.person_boxes import DetectionsFileBoxes, WholeImageBoxes
from hrnext_d2.engine.pose_backends import DefaultPredictorBackend, OnnxRuntimeBackend, PoseBackend, TopDownBackend
from hrnext_d2.utils.tracking import PoseTracker, box_iou_matrix
from tests.modeling.test_top_down import topdown_cfg

SPEC = SyntheticCrowdVideoSpec(num_frames=40, fps=25.0, seed=0, num_people=3)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """(video path, annotations json path, frames BGR, persons per frame)."""
    folder = tmp_path_factory.mktemp("video")
    path, ann = str(folder / "walk.mp4"), str(folder / "walk.json")
    persons = write_synthetic_crowd_video(SPEC, path, ann)
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    return path, ann, frames, persons


class GroundTruthPoses(PoseBackend):
    """A stand-in pose model for the loop's logic: for each given box, the true pose (+ noise) of the
    figure centred in it (as a top-down model poses the person centred in its crop); a box that
    overlaps that figure by IoU 0.5 or less gives a pose with no confident keypoint."""

    name = "ground-truth"

    def __init__(self, noise_px=1.5):
        self.persons = []
        self.rng = np.random.default_rng(0)
        self.noise_px = noise_px
        self.calls = []  # (boxes given, best IoU of each with a true box)

    def __call__(self, image_bgr, boxes_xyxy=None, box_scores=None):
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        truth = np.stack([p["bbox"] for p in self.persons])
        iou = box_iou_matrix(boxes, truth)
        self.calls.append((boxes, iou.max(axis=1)))
        kpts = np.zeros((len(boxes), 17, 3))
        centres = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
        distance = np.linalg.norm(centres(boxes)[:, None] - centres(truth)[None], axis=2)
        for i, j in enumerate(distance.argmin(axis=1)):
            if iou[i, j] > 0.5:
                kpts[i] = self.persons[j]["keypoints"]
                kpts[i, :, 2] = np.where(kpts[i, :, 2] > 0, 0.9, 0.0)
                kpts[i, :, :2] += self.rng.normal(0, self.noise_px, (17, 2))
        inst = Instances(image_bgr.shape[:2])
        inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
        inst.pred_keypoints = torch.as_tensor(kpts, dtype=torch.float32)
        return inst


def _ids_per_figure(per_frame_ids):
    """{figure: [id per frame]} from [(figures, ids)] by matching output boxes to the true ones."""
    out = {}
    for figures, ids in per_frame_ids:
        for fig, tid in zip(figures, ids):
            out.setdefault(fig, []).append(tid)
    return out


def _match(instances, persons, by="keypoints"):
    """(figure of each output person, its track id): the figure whose true keypoints are nearest
    (by="keypoints"), or whose true box overlaps most (by="box", for a model with random weights)."""
    if by == "box":
        score = box_iou_matrix(instances.pred_boxes.tensor.numpy(), np.stack([p["bbox"] for p in persons]))
    else:
        truth = np.stack([p["keypoints"][:, :2] for p in persons])
        score = -np.linalg.norm(instances.pred_keypoints.numpy()[:, None, :, :2] - truth[None], axis=3).mean(axis=2)
    return [persons[j]["track_id"] for j in score.argmax(axis=1)], instances.track_ids.tolist()


def test_detection_every_n_frames_propagates_boxes_and_keeps_ids(video):
    path, ann, frames, persons = video
    backend = GroundTruthPoses()
    tracker = PoseTracker(oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS, fps=SPEC.fps)
    predictor = VideoPosePredictor(backend, DetectionsFileBoxes(ann), tracker, detect_every=4)
    seen = []
    for f, frame in enumerate(frames):
        backend.persons = persons[f]
        inst = predictor(frame, FrameKey(frame=f), f / SPEC.fps)
        assert len(inst) == SPEC.num_people
        seen.append(_match(inst, persons[f]))
    assert predictor.num_detection_frames == 10  # frames 0, 4, ..., 36
    ids = _ids_per_figure(seen)
    assert all(len(set(v)) == 1 for v in ids.values()), ids
    assert len({v[0] for v in ids.values()}) == SPEC.num_people
    # propagated boxes (3 of every 4 frames) stay on their person
    propagated = [best for f, (_, best) in enumerate(backend.calls) if f % 4]
    assert min(float(b.min()) for b in propagated) > 0.5


def test_a_person_who_leaves_is_dropped_until_the_next_detection(video):
    """A propagated box on background gives no confident keypoint: the pose is dropped."""
    path, ann, frames, persons = video
    backend = GroundTruthPoses()
    predictor = VideoPosePredictor(
        backend, DetectionsFileBoxes(ann), PoseTracker(oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS), detect_every=3
    )
    backend.persons = persons[0]
    assert len(predictor(frames[0], FrameKey(frame=0))) == 3
    backend.persons = [persons[1][0], persons[1][2]]  # figure 1 has left: its propagated box finds nobody
    inst = predictor(frames[1], FrameKey(frame=1))
    assert len(inst) == 2 and predictor.num_detection_frames == 1
    assert sorted(inst.track_ids.tolist()) == [0, 2]


def test_topdown_backend_ids_on_the_video(video):
    """The real model (random weights) on ground-truth boxes: each figure keeps one id (IoU)."""
    path, ann, frames, persons = video
    torch.manual_seed(0)
    cfg = topdown_cfg()
    cfg.TRACKING.SIMILARITY = "iou"
    backend = build_pose_backend(cfg)
    assert isinstance(backend, TopDownBackend)
    predictor = VideoPosePredictor.from_config(cfg, backend, build_person_box_source(ann, cfg), fps=SPEC.fps)
    seen = []
    for f in range(6):
        inst = predictor(frames[f], FrameKey(frame=f), f / SPEC.fps)
        assert inst.pred_keypoints.shape == (3, 17, 3) and inst.track_ids.shape == (3,)
        seen.append(_match(inst, persons[f], by="box"))
    ids = _ids_per_figure(seen)
    assert sorted(v[0] for v in ids.values()) == [0, 1, 2] and all(len(set(v)) == 1 for v in ids.values())


def test_images_are_independent_without_tracking(video):
    path, ann, frames, persons = video
    torch.manual_seed(0)
    cfg = topdown_cfg()
    predictor = VideoPosePredictor.from_config(cfg, build_pose_backend(cfg), WholeImageBoxes(), track=False)
    inst = predictor(frames[0], FrameKey(image="a.jpg"))
    assert len(inst) == 1 and not inst.has("track_ids")
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 256.0, 192.0]]))


def test_ground_truth_boxes_from_the_annotation_file_give_the_evaluation_poses(tmp_path):
    """The demo's path on images (read_image, boxes from the annotation json) gives exactly the
    poses evaluation computes with DATASETS.TEST_BOXES "gt" (test mapper -> model)."""
    name = "synthetic_crowd_test_demo_boxes"
    spec = SyntheticCrowdSpec(split="val", num_images=3, seed=11, truncation_prob=0.5)
    register_synthetic_crowd(name, spec, root=str(tmp_path))
    try:
        torch.manual_seed(0)
        cfg = topdown_cfg()
        cfg.DATASETS.TEST = (name,)
        backend = TopDownBackend(cfg)
        dicts = DatasetCatalog.get(name)
        source = DetectionsFileBoxes(MetadataCatalog.get(name).json_file)
        predictor = VideoPosePredictor(backend, source, None)
        mapper = TopDownDatasetMapper(cfg, False, dataset_name=name)
        for d in dicts:
            ours = predictor(read_image(d["file_name"], format="BGR"), FrameKey(image=d["file_name"]))
            with torch.no_grad():
                ref = backend.predictor.model([mapper(dict(d))])[0]["instances"]
            assert len(ours) == len(ref) >= 2
            torch.testing.assert_close(ours.pred_boxes.tensor, ref.pred_boxes.tensor)
            torch.testing.assert_close(ours.pred_keypoints, ref.pred_keypoints)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_keypoint_rcnn_config_runs_through_default_predictor(video):
    """Detectron2's own Keypoint R-CNN config (ResNet-18 at a small size, random weights)."""
    path, ann, frames, persons = video
    torch.manual_seed(0)
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "INPUT.MIN_SIZE_TEST", "128", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "4",
    ])  # fmt: skip
    backend = build_pose_backend(cfg)
    assert isinstance(backend, DefaultPredictorBackend) and not backend.accepts_boxes
    with pytest.raises(ValueError, match="finds its own persons"):
        VideoPosePredictor.from_config(cfg, backend, WholeImageBoxes())
    predictor = VideoPosePredictor.from_config(cfg, backend, None, fps=SPEC.fps)
    inst = predictor(frames[0], FrameKey(frame=0), 0.0)
    assert inst.pred_keypoints.shape[1:] == (17, 3) and len(inst.track_ids) == len(inst)
    assert not inst.has("pred_keypoint_heatmaps")
    with pytest.raises(ValueError, match="META_ARCHITECTURE"):
        build_pose_backend(cfg, "topdown")


def test_onnxruntime_backend_without_the_export_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "hrnext_d2.export", None)  # as if the package were absent
    with pytest.raises(ImportError, match="hrnext_d2.export.OnnxPosePipeline and onnxruntime"):
        build_pose_backend(topdown_cfg(), "onnxruntime", "exported/")


def test_onnxruntime_backend_follows_the_pipeline_interface(video, monkeypatch):
    """A pipeline with the documented interface (here computed by the PyTorch model) gives the same
    Instances through the onnxruntime backend as the top-down backend; no boxes = the whole image."""
    path, ann, frames, persons = video
    torch.manual_seed(0)
    torch_backend = TopDownBackend(topdown_cfg())
    calls = []

    class OnnxPosePipeline:
        def __init__(self, model_dir):
            calls.append(model_dir)

        def __call__(self, image_bgr, boxes_xyxy, box_scores=None):
            inst = torch_backend(image_bgr, boxes_xyxy, box_scores)
            return {"boxes": inst.pred_boxes.tensor.numpy(), "scores": inst.scores.numpy(), "keypoints": inst.pred_keypoints.numpy()}

    monkeypatch.setitem(sys.modules, "hrnext_d2.export", types.SimpleNamespace(OnnxPosePipeline=OnnxPosePipeline))
    backend = build_pose_backend(topdown_cfg(), "onnxruntime", "exported/")
    assert isinstance(backend, OnnxRuntimeBackend) and calls == ["exported/"]
    boxes = np.stack([p["bbox"] for p in persons[0]])
    ours, ref = backend(frames[0], boxes), torch_backend(frames[0], boxes)
    torch.testing.assert_close(ours.pred_keypoints, ref.pred_keypoints)
    torch.testing.assert_close(ours.pred_boxes.tensor, ref.pred_boxes.tensor)
    whole = backend(frames[0])
    torch.testing.assert_close(whole.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 256.0, 192.0]]))


def test_detections_file_boxes(tmp_path):
    results = [
        {"frame": 3, "bbox": [10, 20, 30, 40], "score": 0.9},
        {"frame": 3, "bbox": [0, 0, 5, 5], "score": 0.1},
        {"image": "dir/000000000785.jpg", "bbox": [1, 2, 3, 4], "score": 0.8},
        {"image_id": 42, "bbox": [5, 5, 10, 10], "score": 0.7, "category_id": 1},
        {"image_id": 42, "bbox": [5, 5, 10, 10], "score": 0.99, "category_id": 2},
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(results))
    image = np.zeros((50, 60, 3), np.uint8)
    src = DetectionsFileBoxes(str(path), score_thresh=0.5)
    boxes, scores = src(image, FrameKey(frame=3))
    np.testing.assert_allclose(boxes, [[10, 20, 40, 60]]) and np.testing.assert_allclose(scores, [0.9])
    assert len(src(image, FrameKey(frame=4))[0]) == 0
    np.testing.assert_allclose(src(image, FrameKey(image="/other/000000000785.jpg"))[0], [[1, 2, 4, 6]])
    np.testing.assert_allclose(src(image, FrameKey(image="000000000042.png"))[0], [[5, 5, 15, 15]])  # number in the name
    assert len(src(image, FrameKey(image="cat.jpg"))[0]) == 0

    coco = {"images": [{"id": 7, "file_name": "a/b.jpg"}], "annotations": [
        {"id": 1, "image_id": 7, "bbox": [1, 1, 2, 2], "iscrowd": 0},
        {"id": 2, "image_id": 7, "bbox": [0, 0, 9, 9], "iscrowd": 1},
    ], "categories": [{"id": 1}]}  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    boxes, scores = DetectionsFileBoxes(str(tmp_path / "ann.json"))(image, FrameKey(image="b.jpg"))
    np.testing.assert_allclose(boxes, [[1, 1, 3, 3]]) and np.testing.assert_allclose(scores, [1.0])

    (tmp_path / "bad.json").write_text(json.dumps([{"frame": 0, "bbox": [1, 2, 3], "score": 1}]))
    with pytest.raises(ValueError, match="bad.json"):
        DetectionsFileBoxes(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="not 'detector', 'whole-image'"):
        build_person_box_source(str(tmp_path / "missing.json"), topdown_cfg())
