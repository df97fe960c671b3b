#!/usr/bin/env python3
"""Draw HRNeXt pose predictions (and ground truth) into image files.

Examples:
    # the first 8 images of the config's test set, ground truth left, prediction right
    tools/visualize.py --config-file configs/quickstart/hrnext_small_synthetic.yaml \
        MODEL.WEIGHTS output/quickstart/hrnext_small_synthetic/model_final.pth
    # another registered dataset, more images, predictions only
    tools/visualize.py --config-file CFG --dataset ochuman_val --num 20 --no-gt MODEL.WEIGHTS W.pth
    # your own images (boxes: MODEL.TOPDOWN.PERSON_DETECTOR when configured, else the whole image)
    tools/visualize.py --config-file CFG --input a.jpg b.jpg MODEL.WEIGHTS W.pth
"""
import argparse
import os
import sys

import torch

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); the call under __main__ silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.config import CfgNode, get_cfg
from detectron2.utils.logger import setup_logger

import hrnext_d2  # noqa: F401  (registers model and datasets)
from hrnext_d2.checkpoint import build_checkpointer
from hrnext_d2.config import add_hrnext_config
from hrnext_d2.engine import Trainer
from hrnext_d2.utils.visualizer import visualize_images, visualize_predictions


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="config file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="registered dataset to draw (default: DATASETS.TEST[0])")
    src.add_argument("--input", nargs="+", metavar="IMG", help="image files to run on instead of a dataset")
    p.add_argument("--output", help="output folder (default: OUTPUT_DIR/visualization)")
    p.add_argument("--num", type=int, default=8, help="number of dataset images to draw (default 8)")
    p.add_argument("--no-gt", action="store_true", help="draw predictions only (dataset mode)")
    p.add_argument("--keypoint-threshold", type=float, default=0.05, help="draw keypoints scoring above this")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth")
    return p.parse_args(argv)


def setup(args) -> CfgNode:
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def main(argv=None) -> list:
    args = parse_args(argv)
    setup_logger(name="hrnext_d2")
    logger = setup_logger(name="visualize")
    cfg = setup(args)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: drawing the predictions of an untrained model")
    model = Trainer.build_model(cfg)
    # A Detectron2 checkpoint, or an official mmpose HRNeXt one (converted on the fly).
    build_checkpointer(cfg, model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "visualization")
    if args.input:
        paths = visualize_images(cfg, model, args.input, output, keypoint_threshold=args.keypoint_threshold)
    else:
        dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
        if not dataset:
            raise SystemExit("no dataset: pass --dataset NAME or --input IMG, or set DATASETS.TEST")
        paths = visualize_predictions(
            cfg, model, dataset, output, args.num, draw_gt=not args.no_gt, keypoint_threshold=args.keypoint_threshold
        )
    for path in paths:
        print(path)
    logger.info(f"wrote {len(paths)} image(s) to {output}")
    return paths


if __name__ == "__main__":
    silence_known_dependency_warnings()
    sys.exit(0 if main() is not None else 1)
