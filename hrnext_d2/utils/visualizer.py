"""Drawing pose predictions (and ground truth) with Detectron2's `Visualizer`.

Why a module: the command-line tool (`tools/visualize.py`) and the end of a training run both draw
the same way. Skeletons come from the dataset metadata (`keypoint_names`,
`keypoint_connection_rules`), exactly as Detectron2 draws its own keypoint models. Top-down models
and Detectron2 detectors (Keypoint / Mask R-CNN: boxes, keypoints, masks) are drawn alike; only the
input mapping differs (person boxes for the former, Detectron2's test-time resize for the latter).
"""
from __future__ import annotations

import copy
import os
from typing import Dict, Iterable, List, Optional

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..data.datasets.keypoint_metadata import get_coco_keypoint_metadata
from ..data.mapper import TopDownDatasetMapper
from ..modeling.meta_arch import is_topdown_architecture

__all__ = [
    "draw_pose_predictions",
    "draw_pose_ground_truth",
    "draw_tracked_poses",
    "track_colour",
    "keypoint_drawing_metadata",
    "visualize_predictions",
    "visualize_images",
]

# Small synthetic / crowd images are drawn enlarged so keypoints and labels stay readable.
_MIN_DRAW_SIDE = 480


def _draw_scale(image: np.ndarray) -> float:
    return max(1.0, _MIN_DRAW_SIDE / max(min(image.shape[:2]), 1))


def draw_pose_predictions(
    image_rgb: np.ndarray,
    instances: Instances,
    metadata,
    keypoint_threshold: float = 0.05,
    scale: Optional[float] = None,
) -> np.ndarray:
    """RGB uint8 image with the predicted boxes, scores and skeletons of `instances` drawn on it."""
    scale = _draw_scale(image_rgb) if scale is None else scale
    vis = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    vis.keypoint_threshold = keypoint_threshold
    inst = instances.to("cpu")
    if inst.has("pred_keypoint_heatmaps"):
        inst.remove("pred_keypoint_heatmaps")  # drawn as keypoints, not as heatmaps
    return vis.draw_instance_predictions(inst).get_image()


def track_colour(track_id: int) -> np.ndarray:
    """RGB colour in [0, 1] of a track id: Detectron2's palette, the same for an id in every frame."""
    palette = colormap(rgb=True, maximum=1)
    return palette[int(track_id) % len(palette)]


def draw_tracked_poses(
    image_rgb: np.ndarray,
    instances: Instances,
    metadata,
    keypoint_threshold: float = 0.05,
    scale: float = 1.0,
) -> np.ndarray:
    """RGB uint8 image with each person's skeleton, box and label; with `track_ids`, the box and the
    label ("id 3 0.87") take the id's colour, so a person keeps one colour from frame to frame.

    Drawn at `scale` 1 by default: a video keeps its frame size.
    """
    vis = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    vis.keypoint_threshold = keypoint_threshold
    inst = instances.to("cpu")
    if len(inst) == 0:
        return vis.output.get_image()
    scores = inst.scores.tolist() if inst.has("scores") else [None] * len(inst)
    if inst.has("track_ids"):
        ids = inst.track_ids.tolist()
        labels = [f"id {i}" + ("" if s is None else f" {s:.2f}") for i, s in zip(ids, scores)]
        colours = [track_colour(i) for i in ids]
    else:
        labels = ["" if s is None else f"{s:.2f}" for s in scores]
        colours = None
    boxes = inst.pred_boxes.tensor.numpy() if inst.has("pred_boxes") else None
    keypoints = inst.pred_keypoints.numpy() if inst.has("pred_keypoints") else None
    return vis.overlay_instances(boxes=boxes, labels=labels, keypoints=keypoints, assigned_colors=colours).get_image()


def keypoint_drawing_metadata(cfg) -> Metadata:
    """Names and skeleton to draw a config's keypoints with: those of the first dataset of
    DATASETS.TEST, then DATASETS.TRAIN, with MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS keypoints; else
    COCO's for 17 keypoints; else numbered keypoints without a skeleton."""
    k = int(cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS)
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        if name in MetadataCatalog.list() or name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            names = meta.get("keypoint_names", None)
            if names is not None and len(names) == k:
                return meta
    meta = Metadata(name=f"keypoints_{k}")
    if k == 17:
        coco = get_coco_keypoint_metadata()
        meta.set(keypoint_names=coco["keypoint_names"], keypoint_connection_rules=coco["keypoint_connection_rules"])
    else:
        meta.set(keypoint_names=tuple(f"keypoint_{i}" for i in range(k)))
    meta.set(thing_classes=["person"])
    return meta


def draw_pose_ground_truth(image_rgb: np.ndarray, dataset_dict: Dict, metadata, scale: Optional[float] = None) -> np.ndarray:
    """RGB uint8 image with the ground-truth boxes and skeletons (visibility 1 and 2) of a dataset dict."""
    scale = _draw_scale(image_rgb) if scale is None else scale
    vis = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    # Visualizer reads keypoint visibility as a score: 0 (unlabelled) is below its threshold.
    return vis.draw_dataset_dict(dataset_dict).get_image()


def _write(path: str, image_rgb: np.ndarray) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(image_rgb[:, :, ::-1])):
        raise OSError(f"could not write visualisation {path!r}")
    return path


def _run(model: torch.nn.Module, inputs: List[Dict]) -> List[Dict]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(inputs)
    finally:
        model.train(was_training)


def _read_rgb(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path!r}")
    return d2_utils.read_image(path, format="RGB")


def visualize_predictions(
    cfg,
    model: torch.nn.Module,
    dataset_name: str,
    output_dir: str,
    num: int,
    draw_gt: bool = True,
    keypoint_threshold: float = 0.05,
) -> List[str]:
    """Runs `model` on the first `num` images of `dataset_name` and writes one PNG per image.

    Inputs are mapped as in evaluation: a top-down model gets the dataset's configured test boxes
    (ground truth or detections), a detector Detectron2's test mapping. With `draw_gt`, each PNG
    shows ground truth (left) beside the prediction (right). Returns the written paths.
    """
    if num <= 0:
        return []
    dicts = DatasetCatalog.get(dataset_name)[: int(num)]
    metadata = MetadataCatalog.get(dataset_name)
    if is_topdown_architecture(cfg):
        mapper = TopDownDatasetMapper(cfg, False, dataset_name=dataset_name)
    else:
        mapper = DatasetMapper(cfg, False)
    paths = []
    for d in dicts:
        inputs = mapper(copy.deepcopy(d))
        instances = _run(model, [inputs])[0]["instances"]
        image = _read_rgb(d["file_name"])
        panel = draw_pose_predictions(image, instances, metadata, keypoint_threshold)
        if draw_gt and d.get("annotations"):
            gt = draw_pose_ground_truth(image, d, metadata)
            gap = np.full((panel.shape[0], 8, 3), 255, dtype=np.uint8)
            panel = np.concatenate([gt, gap, panel], axis=1)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        paths.append(_write(os.path.join(output_dir, f"{dataset_name}_{stem}.png"), panel))
    return paths


def visualize_images(
    cfg,
    model: torch.nn.Module,
    image_paths: Iterable[str],
    output_dir: str,
    metadata=None,
    keypoint_threshold: float = 0.05,
) -> List[str]:
    """Runs `model` on image files without annotations and writes one PNG per image.

    A detector finds its own boxes (on the image resized as DefaultPredictor does, INPUT.MIN_SIZE_TEST);
    a top-down model uses MODEL.TOPDOWN.PERSON_DETECTOR when configured, else the whole image as one
    person box. Drawing uses `metadata` (default: that of DATASETS.TEST[0], else TRAIN[0], for the
    keypoint names and skeleton).
    """
    if metadata is None:
        names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
        metadata = MetadataCatalog.get(names[0]) if names else MetadataCatalog.get("keypoints_coco_2017_val")
    paths = []
    for path in image_paths:
        image = d2_utils.read_image(path, format=cfg.INPUT.FORMAT) if os.path.isfile(path) else _read_rgb(path)
        h, w = image.shape[:2]
        resized = image
        if cfg.INPUT.MIN_SIZE_TEST > 0:  # 0 for top-down models: crops come from the raw image
            size = cfg.INPUT.MIN_SIZE_TEST
            resized = T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST).get_transform(image).apply_image(image)
        inputs = {"image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))), "height": h, "width": w}
        instances = _run(model, [inputs])[0]["instances"]
        rgb = image if cfg.INPUT.FORMAT == "RGB" else image[:, :, ::-1]
        panel = draw_pose_predictions(np.ascontiguousarray(rgb), instances, metadata, keypoint_threshold)
        stem = os.path.splitext(os.path.basename(path))[0]
        paths.append(_write(os.path.join(output_dir, f"{stem}.png"), panel))
    return paths
