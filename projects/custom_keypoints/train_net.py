#!/usr/bin/env python3
"""tools/train_net.py for datasets registered by this project (body13.py).

A Detectron2 dataset must be registered in every process that trains or evaluates on it, so a
training script imports the module that registers it, then runs the usual training main. This
script does exactly that and takes tools/train_net.py's arguments:

    python3 projects/custom_keypoints/train_net.py --config-file projects/custom_keypoints/configs/hrnext_small_body13.yaml
    python3 projects/custom_keypoints/train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python3 projects/custom_keypoints/train_net.py --config-file ... --num-gpus 8

For a dataset of your own, copy this file and body13.py and change body13.py.
"""
import importlib.util
import os
import sys

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.engine import default_argument_parser, launch

import body13  # noqa: F401  (registers body13_train / body13_val, in every process)

TOOLS_TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "train_net.py")


def _load_train_net():
    """tools/train_net.py as a module (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("hrnext_tools_train_net", TOOLS_TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load_train_net()


def main(args):
    return train_net.main(args)


if __name__ == "__main__":
    silence_known_dependency_warnings()
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    sys.exit(0)
