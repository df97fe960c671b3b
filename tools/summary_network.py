#!/usr/bin/env python3
"""Parameters and FLOPs (fvcore) of the HRNeXt top-down pose model of a config.

    python tools/summary_network.py --config-file configs/coco/hrnext_small_coco_256x192.yaml
    python tools/summary_network.py --config-file CFG --shape 384 288 [--formulation fast] [KEY VALUE ...]

The default input is INPUT.TOPDOWN.IMAGE_SIZE (width, height) of the config; --shape takes H W.
"""
import argparse
import sys

import torch

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); the call under __main__ silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.config import get_cfg

from hrnext_d2 import add_hrnext_config
from hrnext_d2.modeling.complexity import summarize_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--shape", nargs=2, type=int, metavar=("H", "W"), default=None,
                   help="crop height and width (default: INPUT.TOPDOWN.IMAGE_SIZE of the config)")
    p.add_argument("--formulation", choices=("reference", "fast"), default="reference",
                   help="ops to trace: the reference formulation (default, as the published figures) or ours")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    report = summarize_config(cfg, tuple(args.shape) if args.shape else None, args.formulation)
    print(report.format())
    return 0


if __name__ == "__main__":
    silence_known_dependency_warnings()
    sys.exit(main())
