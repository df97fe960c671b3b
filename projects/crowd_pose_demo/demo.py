#!/usr/bin/env python3
"""Multi-person pose on one image with an HRNeXt top-down model, drawn with Detectron2's Visualizer.

Examples:
  # CrowdPose model, boxes from a COCO-results detections file (as the paper's CrowdPose protocol)
  python projects/crowd_pose_demo/demo.py --config-file configs/crowdpose/hrnext_small_crowdpose_256x192.yaml \
      --input image.jpg --boxes-json det_for_crowd_test_0.1_0.5.json --image-id 103319 \
      --output out.jpg MODEL.WEIGHTS hrnext_s_crowdpose.pth
  # no boxes: the configured person detector (MODEL.TOPDOWN.PERSON_DETECTOR.*) or the whole image
  python projects/crowd_pose_demo/demo.py --config-file ... --input image.jpg --output out.jpg MODEL.WEIGHTS ...
"""
import argparse
import json
import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch

from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.utils.visualizer import Visualizer

from hrnext_d2 import add_hrnext_config
from hrnext_d2.data.datasets.keypoint_metadata import get_coco_keypoint_metadata
from hrnext_d2.engine.predictor import TopDownPredictor


def setup_cfg(config_file: str, opts: List[str]) -> CfgNode:
    """Config file + KEY VALUE overrides; CPU when no GPU is present."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def load_boxes(
    json_file: str, image_path: str, image_id: Optional[int], score_thresh: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Person boxes (XYXY, scores) of one image from a COCO annotation file or a COCO-results list.

    The image is found by ``image_id`` or, in an annotation file, by its file name.
    """
    with open(json_file) as f:
        data = json.load(f)
    if isinstance(data, dict):  # COCO annotations: ground-truth boxes, score 1
        if image_id is None:
            name = os.path.basename(image_path)
            ids = [im["id"] for im in data.get("images", []) if os.path.basename(im["file_name"]) == name]
            if not ids:
                raise ValueError(f"{json_file}: no image with file_name {name!r}; pass --image-id")
            image_id = ids[0]
        anns = [a for a in data.get("annotations", []) if a["image_id"] == image_id and not a.get("iscrowd", 0)]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        scores = np.ones(len(xywh))
    elif isinstance(data, list):  # COCO results: detections with scores
        if image_id is None:
            raise ValueError(f"{json_file} is a detections list: pass --image-id")
        dets = [d for d in data if d["image_id"] == image_id and d.get("category_id", 1) == 1 and d["score"] >= score_thresh]
        xywh = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d["score"] for d in dets], dtype=np.float64)
    else:
        raise ValueError(f"{json_file}: expected a COCO annotation dict or a COCO results list")
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return xyxy, scores


def keypoint_metadata(cfg: CfgNode):
    """Drawing metadata of DATASETS.TEST[0] (names, connection rules), else COCO's."""
    if len(cfg.DATASETS.TEST) and MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("keypoint_names") is not None:
        return MetadataCatalog.get(cfg.DATASETS.TEST[0])
    meta = MetadataCatalog.get("__crowd_pose_demo_coco")
    if meta.get("keypoint_names") is None:
        meta.set(**get_coco_keypoint_metadata())
    return meta


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="an hrnext_d2 config, e.g. configs/crowdpose/...yaml")
    parser.add_argument("--input", required=True, help="image file")
    parser.add_argument("--output", required=True, help="where to write the drawn image")
    parser.add_argument("--boxes-json", default="", help="COCO annotations or COCO-results detections")
    parser.add_argument("--image-id", type=int, default=None, help="image id in --boxes-json")
    parser.add_argument("--box-score-thresh", type=float, default=0.0, help="drop detections below this")
    parser.add_argument("--keypoint-thresh", type=float, default=0.05, help="Visualizer: hide keypoints below")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = setup_cfg(args.config_file, args.opts)
    image = cv2.imread(args.input, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"--input {args.input!r}: cannot read the image")
    predictor = TopDownPredictor(cfg)
    if args.boxes_json:
        boxes, scores = load_boxes(args.boxes_json, args.input, args.image_id, args.box_score_thresh)
        instances = predictor(image, boxes, scores)["instances"]
    else:
        instances = predictor(image)["instances"]
    instances = instances.to("cpu")

    metadata = keypoint_metadata(cfg)
    vis = Visualizer(image[:, :, ::-1], metadata)
    vis.keypoint_threshold = args.keypoint_thresh
    drawn = vis.draw_instance_predictions(instances).get_image()[:, :, ::-1]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if not cv2.imwrite(args.output, drawn):
        raise OSError(f"--output {args.output!r}: cannot write the image")

    names = metadata.get("keypoint_names") or [str(i) for i in range(instances.pred_keypoints.shape[1])]
    for i in range(len(instances)):
        print(f"person {i}: score {instances.scores[i].item():.3f} box {[round(v, 1) for v in instances.pred_boxes.tensor[i].tolist()]}")
        for name, (x, y, s) in zip(names, instances.pred_keypoints[i].tolist()):
            # pred_keypoints are Detectron2 coordinates (pixel index + 0.5)
            print(f"  {name:>16s}: x {x:7.1f}  y {y:7.1f}  score {s:.3f}")
    return {"instances": instances, "output": args.output, "predictor": predictor}


if __name__ == "__main__":
    main()
