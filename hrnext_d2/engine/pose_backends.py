"""Pose backends: one call, ``backend(image_bgr, boxes_xyxy=None, box_scores=None) -> Instances``,
over the ways this project runs a pose model.

Why: the demo, its video loop and tracking should not care whether poses come from our PyTorch
top-down model, from a plain Detectron2 model (e.g. Keypoint R-CNN, which finds its own persons), or
from the exported onnxruntime pipeline. Every backend returns CPU ``Instances`` with ``pred_boxes``
(XYXY), ``scores``, ``pred_classes`` and ``pred_keypoints`` (N, K, 3) in Detectron2's convention
(pixel index + 0.5), in the pixels of the given image.

- "topdown": ``TopDownPredictor`` (MODEL.META_ARCHITECTURE TopDownPoseEstimator). Takes boxes;
  without them, the configured person detector or the whole image.
- "predictor": Detectron2's ``DefaultPredictor`` for any other keypoint model; it finds its own
  persons, so it takes no boxes.
- "onnxruntime": ``hrnext_d2.export.OnnxPosePipeline(model_dir)``, imported only when chosen (it
  needs onnxruntime). Takes boxes; without them, the whole image.
"""
import logging
from typing import Optional

import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor
from detectron2.structures import Boxes, Instances

from .predictor import TopDownPredictor

__all__ = [
    "PoseBackend",
    "TopDownBackend",
    "DefaultPredictorBackend",
    "OnnxRuntimeBackend",
    "POSE_BACKENDS",
    "build_pose_backend",
]

logger = logging.getLogger(__name__)

POSE_BACKENDS = ("auto", "topdown", "predictor", "onnxruntime")
TOPDOWN_META_ARCHITECTURE = "TopDownPoseEstimator"


class PoseBackend:
    """Base of the backends: ``accepts_boxes`` says whether person boxes can be given."""

    name = ""
    accepts_boxes = True
    # The Detectron2 person detector the backend already holds (reused as a box source), if any.
    person_detector = None

    def __call__(
        self, image_bgr: np.ndarray, boxes_xyxy: Optional[np.ndarray] = None, box_scores: Optional[np.ndarray] = None
    ) -> Instances:
        raise NotImplementedError


def _boxes_and_scores(boxes_xyxy, box_scores):
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float32) if box_scores is None else np.asarray(box_scores, np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} person boxes but {len(scores)} box scores")
    return boxes, scores


class TopDownBackend(PoseBackend):
    """Our PyTorch top-down model through ``TopDownPredictor``."""

    name = "topdown"

    def __init__(self, cfg: CfgNode):
        self.predictor = TopDownPredictor(cfg)
        self.person_detector = getattr(self.predictor.model, "person_detector", None)

    def __call__(self, image_bgr, boxes_xyxy=None, box_scores=None) -> Instances:
        if boxes_xyxy is None:
            return self.predictor(image_bgr)["instances"].to("cpu")
        boxes, scores = _boxes_and_scores(boxes_xyxy, box_scores)
        return self.predictor(image_bgr, boxes, scores)["instances"].to("cpu")


class DefaultPredictorBackend(PoseBackend):
    """Any Detectron2 keypoint model (e.g. Keypoint R-CNN) through ``DefaultPredictor``."""

    name = "predictor"
    accepts_boxes = False

    def __init__(self, cfg: CfgNode):
        if not cfg.MODEL.KEYPOINT_ON:
            raise ValueError(
                f"backend 'predictor': the config's model ({cfg.MODEL.META_ARCHITECTURE}) has MODEL.KEYPOINT_ON "
                "False, so it predicts no keypoints"
            )
        self.predictor = DefaultPredictor(cfg)

    def __call__(self, image_bgr, boxes_xyxy=None, box_scores=None) -> Instances:
        if boxes_xyxy is not None:
            raise ValueError("backend 'predictor' finds its own persons: it takes no person boxes")
        instances = self.predictor(image_bgr)["instances"].to("cpu")
        if instances.has("pred_keypoint_heatmaps"):
            instances.remove("pred_keypoint_heatmaps")
        if len(instances) == 0 and not instances.has("pred_keypoints"):
            instances.pred_keypoints = torch.zeros((0, self.predictor.cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS, 3))
        return instances


class OnnxRuntimeBackend(PoseBackend):
    """The exported pipeline: ``OnnxPosePipeline(model_dir)(image_bgr, boxes_xyxy, box_scores)`` returns
    {"boxes": (M, 4) XYXY, "scores": (M,), "keypoints": (M, K, 3) in Detectron2's convention}."""

    name = "onnxruntime"

    def __init__(self, model_dir: str):
        try:
            # Imported here, not at the top: the export package and onnxruntime are optional.
            from hrnext_d2.export import OnnxPosePipeline
        except ImportError as e:
            raise ImportError(
                f"backend 'onnxruntime' needs hrnext_d2.export.OnnxPosePipeline and onnxruntime ({e}); "
                "install onnxruntime, or use --backend topdown"
            ) from e
        if not model_dir:
            raise ValueError("backend 'onnxruntime' needs the exported model's folder (--model DIR)")
        self.pipeline = OnnxPosePipeline(model_dir)

    def __call__(self, image_bgr, boxes_xyxy=None, box_scores=None) -> Instances:
        h, w = image_bgr.shape[:2]
        if boxes_xyxy is None:
            boxes_xyxy = np.array([[0.0, 0.0, w, h]], np.float32)
        boxes, scores = _boxes_and_scores(boxes_xyxy, box_scores)
        out = self.pipeline(image_bgr, boxes, scores)
        for key in ("boxes", "scores", "keypoints"):
            if key not in out:
                raise KeyError(f"OnnxPosePipeline returned no {key!r} (got {sorted(out)})")
        keypoints = np.asarray(out["keypoints"], np.float32)
        if keypoints.ndim != 3 or keypoints.shape[2] != 3:
            raise ValueError(f"OnnxPosePipeline keypoints must be (M, K, 3), got {keypoints.shape}")
        instances = Instances((h, w))
        instances.pred_boxes = Boxes(torch.as_tensor(np.asarray(out["boxes"], np.float32).reshape(-1, 4)))
        instances.scores = torch.as_tensor(np.asarray(out["scores"], np.float32).reshape(-1))
        instances.pred_classes = torch.zeros(len(keypoints), dtype=torch.int64)
        instances.pred_keypoints = torch.as_tensor(keypoints)
        return instances


def build_pose_backend(cfg: CfgNode, backend: str = "auto", model_dir: Optional[str] = None) -> PoseBackend:
    """The backend named `backend` ("auto": "topdown" for TopDownPoseEstimator configs, else "predictor")."""
    if backend not in POSE_BACKENDS:
        raise ValueError(f"unknown pose backend {backend!r}; choose one of {POSE_BACKENDS}")
    if backend == "auto":
        backend = "topdown" if cfg.MODEL.META_ARCHITECTURE == TOPDOWN_META_ARCHITECTURE else "predictor"
    if backend == "topdown":
        if cfg.MODEL.META_ARCHITECTURE != TOPDOWN_META_ARCHITECTURE:
            raise ValueError(
                f"backend 'topdown' needs MODEL.META_ARCHITECTURE {TOPDOWN_META_ARCHITECTURE}, got "
                f"{cfg.MODEL.META_ARCHITECTURE!r} (use backend 'predictor')"
            )
        return TopDownBackend(cfg)
    if backend == "predictor":
        return DefaultPredictorBackend(cfg)
    return OnnxRuntimeBackend(model_dir or "")

