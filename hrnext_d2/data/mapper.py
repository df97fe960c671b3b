"""Top-down dataset mapper: one person instance -> augmented crop + heatmap targets (training), or
one image -> image + person boxes (test).

Training follows mmpose 0.23's pipeline in its order: TopDownRandomFlip, TopDownHalfBodyTransform,
TopDownGetRandomScaleRotation, TopDownAffine, TopDownGenerateTarget. The crop uses the same
center/scale convention and affine code (``hrnext_d2.topdown.geometry``) as the model's inference,
and the targets come from the same codec that decodes, so training and inference cannot drift apart.
Both modes decode and check the image with ``hrnext_d2.data.image_checks.read_annotated_image``: a
file that does not read, or whose pixels are not the annotated size, is an error naming it.
"""
import copy
import logging
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.structures import Boxes, BoxMode, Instances

from ..topdown import geometry
from ..topdown.codec import HeatmapCodec
from .datasets.keypoint_metadata import resolve_keypoint_metadata
from .image_checks import read_annotated_image, read_image_or_fail  # noqa: F401  (read_image_or_fail: public here too)
from .instances import select_pose_annotations
from .test_boxes import resolve_test_boxes

__all__ = ["TopDownDatasetMapper", "read_image_or_fail", "resolve_test_boxes"]

logger = logging.getLogger(__name__)


class TopDownDatasetMapper:
    """Map a Detectron2 dict to what ``TopDownPoseEstimator`` consumes.

    Training (``is_train=True``): the input is one *instance* dict built by
    ``hrnext_d2.data.build.build_topdown_instance_dicts`` (file_name, image_id, center, scale, joints,
    joints_visible); the output is ``{"image": uint8 (3, H, W) crop in INPUT.FORMAT, "target": float32
    (K, h, w), "target_weight": float32 (K, 1), "image_id", "file_name", "center", "scale",
    "rotation", "flipped"}``. The augmentation draws come from ``np.random.default_rng(aug_seed)``
    when the dict has an ``aug_seed`` (set by the training loader from (seed, stream position), so
    a resumed run sees the same data), else from a per-process generator.

    Test (``is_train=False``): the input is a per-image Detectron2 dict; the output is the raw image
    (no resize) with ``instances`` holding ``pred_boxes`` (XYXY) and ``scores`` from the configured
    box source: ``"gt"`` (the persons mmpose evaluates with ground-truth boxes, score 1) or person
    detections ``{image_id: (boxes_xywh, scores)}``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        image_format: str = "RGB",
        image_size: Sequence[int] = (192, 256),
        codec: Optional[Any] = None,
        num_keypoints: int = 17,
        flip_pairs: Sequence[Tuple[int, int]] = (),
        upper_body_ids: Sequence[int] = (),
        flip_prob: float = 0.5,
        half_body_prob: float = 0.3,
        half_body_min_keypoints: int = 8,
        scale_factor: float = 0.5,
        rot_factor: float = 40.0,
        rot_prob: float = 0.6,
        use_udp: bool = False,
        test_boxes: Any = "gt",
    ):
        """
        Args:
            is_train: training (augmented crops + targets) or test (image + boxes).
            image_format: INPUT.FORMAT for ``read_image``.
            image_size: crop (w, h).
            codec: a ``HeatmapCodec`` (training only).
            num_keypoints: K.
            flip_pairs, upper_body_ids: the dataset's keypoint flip pairs and half-body upper ids.
            flip_prob, half_body_prob, half_body_min_keypoints, scale_factor, rot_factor, rot_prob:
                mmpose 0.23 augmentation parameters (INPUT.TOPDOWN).
            use_udp: unbiased data processing for the crop transform (MODEL.TOPDOWN.USE_UDP).
            test_boxes: "gt" or a dict ``image_id -> (boxes_xywh (N, 4), scores (N,))``.
        """
        self.is_train = is_train
        self.image_format = image_format
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if is_train and codec is None:
            raise ValueError("TopDownDatasetMapper: training needs a heatmap codec")
        self.codec = codec
        self.num_keypoints = int(num_keypoints)
        self.flip_pairs = [tuple(int(i) for i in p) for p in flip_pairs]
        self.upper_body_ids = [int(i) for i in upper_body_ids]
        self.flip_prob = float(flip_prob)
        self.half_body_prob = float(half_body_prob)
        self.half_body_min_keypoints = int(half_body_min_keypoints)
        self.scale_factor = float(scale_factor)
        self.rot_factor = float(rot_factor)
        self.rot_prob = float(rot_prob)
        self.use_udp = bool(use_udp)
        self.test_boxes = test_boxes
        self._rng = None
        self._rng_pid = None

    @classmethod
    def from_config(
        cls,
        cfg,
        is_train: bool = True,
        dataset_name: Optional[str] = None,
        dataset_dicts: Optional[Sequence[Dict[str, Any]]] = None,
    ) -> Dict[str, Any]:
        names = [dataset_name] if dataset_name else None
        info = resolve_keypoint_metadata(cfg, names)
        t = cfg.INPUT.TOPDOWN
        ret = {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "image_size": tuple(t.IMAGE_SIZE),
            "num_keypoints": cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS,
            "flip_pairs": info.flip_pairs,
            "upper_body_ids": info.upper_body_ids,
            "flip_prob": t.FLIP_PROB,
            "half_body_prob": t.HALF_BODY_PROB,
            "half_body_min_keypoints": t.HALF_BODY_MIN_KEYPOINTS,
            "scale_factor": t.SCALE_FACTOR,
            "rot_factor": t.ROT_FACTOR,
            "rot_prob": t.ROT_PROB,
            "use_udp": cfg.MODEL.TOPDOWN.USE_UDP,
        }
        if is_train:
            ret["codec"] = HeatmapCodec.from_config(cfg)
        else:
            if dataset_name is None:
                dataset_name = cfg.DATASETS.TEST[0]
            ret["test_boxes"] = resolve_test_boxes(cfg, dataset_name, dataset_dicts)
        return ret

    # ---------------------------------------------------------------------------------------------
    def _default_rng(self) -> np.random.Generator:
        # One generator per process: a generator created before DataLoader workers fork would give
        # every worker the same draws.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng()
            self._rng_pid = os.getpid()
        return self._rng

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        if self.is_train:
            return self._map_train(dataset_dict)
        return self._map_test(dataset_dict)

    # ---------------------------------------------------------------------------------------------
    def augment(
        self,
        rng: np.random.Generator,
        image_width: int,
        joints: np.ndarray,
        joints_visible: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
    ) -> Dict[str, Any]:
        """mmpose 0.23's random flip, half-body and scale/rotation, drawing from ``rng`` in the
        reference's order. Returns the new joints, visibility, center, scale, rotation and whether
        the image must be flipped. Inputs are not modified."""
        joints = joints.copy()
        joints_visible = joints_visible.copy()
        center = np.array(center, dtype=np.float32).copy()
        scale = np.array(scale, dtype=np.float32).copy()

        # TopDownRandomFlip
        flipped = False
        if rng.random() <= self.flip_prob:
            flipped = True
            joints, joints_visible = geometry.fliplr_joints(
                joints, joints_visible, image_width, self.flip_pairs
            )
            center = geometry.fliplr_center(center, image_width)
        # TopDownHalfBodyTransform
        center, scale = geometry.apply_half_body(
            joints,
            joints_visible,
            center,
            scale,
            self.upper_body_ids,
            self.image_size,
            rng,
            prob=self.half_body_prob,
            min_joints=self.half_body_min_keypoints,
        )
        # TopDownGetRandomScaleRotation
        scale, rotation = geometry.random_scale_rotation(
            scale, rng, scale_factor=self.scale_factor, rot_factor=self.rot_factor, rot_prob=self.rot_prob
        )
        return {
            "joints": joints,
            "joints_visible": joints_visible,
            "center": center,
            "scale": scale,
            "rotation": rotation,
            "flipped": flipped,
        }

    def crop_and_target(
        self,
        image: np.ndarray,
        joints: np.ndarray,
        joints_visible: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        rotation: float,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """TopDownAffine + TopDownGenerateTarget: (crop HWC uint8, joints in crop coordinates,
        target (K, h, w), target_weight (K, 1)). Only visible joints are moved, as in mmpose."""
        if self.use_udp:
            trans = geometry.get_udp_warp_matrix(rotation, center, scale, self.image_size)
        else:
            trans = geometry.get_affine_transform(center, scale, rotation, self.image_size)
        crop = geometry.warp_image(image, trans, self.image_size)
        joints_crop = geometry.warp_joints(joints, joints_visible, trans, use_udp=self.use_udp)
        target, target_weight = self.codec.encode(joints_crop, joints_visible)
        return crop, joints_crop, target, target_weight

    def _map_train(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        file_name = dataset_dict["file_name"]
        image = read_annotated_image(dataset_dict, self.image_format)
        if "aug_seed" in dataset_dict:
            rng = np.random.default_rng(dataset_dict["aug_seed"])
        else:
            rng = self._default_rng()
        aug = self.augment(
            rng,
            image.shape[1],
            np.asarray(dataset_dict["joints"], dtype=np.float32),
            np.asarray(dataset_dict["joints_visible"], dtype=np.float32),
            np.asarray(dataset_dict["center"], dtype=np.float32),
            np.asarray(dataset_dict["scale"], dtype=np.float32),
        )
        if aug["flipped"]:
            image = image[:, ::-1, :]
        crop, _, target, target_weight = self.crop_and_target(
            np.ascontiguousarray(image),
            aug["joints"],
            aug["joints_visible"],
            aug["center"],
            aug["scale"],
            aug["rotation"],
        )
        return {
            "image": torch.as_tensor(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            "target": torch.as_tensor(np.asarray(target, dtype=np.float32)),
            "target_weight": torch.as_tensor(np.asarray(target_weight, dtype=np.float32).reshape(-1, 1)),
            "image_id": dataset_dict.get("image_id"),
            "file_name": file_name,
            "center": aug["center"],
            "scale": aug["scale"],
            "rotation": aug["rotation"],
            "flipped": aug["flipped"],
        }

    # ---------------------------------------------------------------------------------------------
    def test_boxes_for(self, dataset_dict: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
        """(boxes_xywh float64 (N, 4), scores float32 (N,)) of one image from the box source."""
        if isinstance(self.test_boxes, str):
            if self.test_boxes != "gt":
                raise ValueError(f"unknown test box source {self.test_boxes!r}")
            persons, _ = select_pose_annotations(dataset_dict, self.num_keypoints)
            boxes = np.array([p["bbox"] for p in persons], dtype=np.float64).reshape(-1, 4)
            return boxes, np.ones((len(boxes),), dtype=np.float32)
        boxes, scores = self.test_boxes.get(
            dataset_dict["image_id"], (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
        )
        return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1)

    def _map_test(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        dataset_dict = copy.copy(dataset_dict)
        image = read_annotated_image(dataset_dict, self.image_format)
        h, w = image.shape[:2]
        boxes_xywh, scores = self.test_boxes_for(dataset_dict)
        instances = Instances((h, w))
        boxes_xyxy = BoxMode.convert(boxes_xywh.astype(np.float64), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        # Boxes are float32 (Detectron2 casts them): the crop centre / scale the model derives from
        # them match mmpose's from the raw (x, y, w, h) to ~1e-7 relative.
        instances.pred_boxes = Boxes(torch.as_tensor(np.asarray(boxes_xyxy), dtype=torch.float32))
        instances.scores = torch.as_tensor(scores, dtype=torch.float32)
        dataset_dict.pop("annotations", None)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["height"], dataset_dict["width"] = h, w
        dataset_dict["instances"] = instances
        return dataset_dict
