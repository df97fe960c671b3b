#!/usr/bin/env python3
"""Train or evaluate an HRNeXt top-down pose model, or a Detectron2 detector (Keypoint / Mask R-CNN on
HRNeXt-FPN), with Detectron2's standard training script.

Examples:
    # train on 8 GPUs
    tools/train_net.py --num-gpus 8 --config-file configs/coco/hrnext_small_coco_256x192.yaml
    # two processes on a CPU-only machine (gloo)
    tools/train_net.py --num-gpus 2 --config-file ... MODEL.DEVICE cpu
    # processes started by torchrun or srun join their world (see hrnext_d2/engine/launch.py)
    torchrun --nproc_per_node 8 tools/train_net.py --config-file ...
    # evaluate official weights (converted with tools/convert_mmpose_checkpoint.py, or as released)
    tools/train_net.py --config-file configs/crowdpose/hrnext_small_crowdpose_256x192.yaml \
        --eval-only MODEL.WEIGHTS converted.pth
    # continue an interrupted run from OUTPUT_DIR/last_checkpoint
    tools/train_net.py --config-file ... --resume
    # Keypoint R-CNN HRNeXt-S-FPN (box and keypoint AP)
    tools/train_net.py --config-file configs/keypoint_rcnn/keypoint_rcnn_hrnext_s_fpn_synthetic.yaml
"""
import logging
import os

import torch

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); the call under __main__ silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import hrnext_d2  # noqa: F401  (registers backbone, head, model, datasets)
from hrnext_d2.checkpoint import build_checkpointer, check_weights_for_evaluation
from hrnext_d2.config import add_hrnext_config
from hrnext_d2.engine import Trainer
from hrnext_d2.engine.launch import add_launcher_argument, launch_from_args
from hrnext_d2.utils.visualizer import visualize_predictions


def setup(args) -> CfgNode:
    """Config = Detectron2 defaults + hrnext_d2 keys + the config file + KEY VALUE overrides."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        fallback = True
    else:
        fallback = False
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup configures the "detectron2" and "fvcore" loggers; ours logs the dataset sizes,
    # box sources and evaluation tables.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="hrnext_d2")
    if fallback:
        logging.getLogger("detectron2").warning("CUDA is not available: MODEL.DEVICE set to cpu")
    return cfg


def visualize(cfg: CfgNode, model: torch.nn.Module) -> list:
    """TEST.VISUALIZE_NUM > 0: draw predictions on the first images of DATASETS.TEST[0] (ground
    truth beside them) into OUTPUT_DIR/visualization and print the paths."""
    if cfg.TEST.VISUALIZE_NUM <= 0 or not cfg.DATASETS.TEST or not comm.is_main_process():
        return []
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    out = os.path.join(cfg.OUTPUT_DIR, "visualization")
    paths = visualize_predictions(cfg, model, cfg.DATASETS.TEST[0], out, cfg.TEST.VISUALIZE_NUM)
    for path in paths:
        print(f"Visualised predictions: {path}")
    return paths


def main(args):
    cfg = setup(args)
    if args.eval_only:
        check_weights_for_evaluation(cfg, resume=args.resume)
        model = Trainer.build_model(cfg)
        # MODEL.WEIGHTS: a Detectron2 checkpoint, or an official mmpose HRNeXt one (loaded strictly).
        build_checkpointer(cfg, model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        visualize(cfg, model)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    res = trainer.train()
    visualize(cfg, trainer.model)
    return res


if __name__ == "__main__":
    silence_known_dependency_warnings()
    args = add_launcher_argument(default_argument_parser()).parse_args()
    print("Command Line Args:", args)
    launch_from_args(main, args)
