#!/usr/bin/env python3
"""Decode every image of one or more datasets and report the unreadable and mis-sized ones, before a
run finds them (a corrupt image stops training when it is first drawn; a size that disagrees with the
annotation, e.g. from an EXIF orientation tag, would misplace the crops).

Examples:
    # the training and test sets of a config
    tools/check_dataset.py --config-file configs/coco/hrnext_small_coco_256x192.yaml
    # registered datasets by name
    tools/check_dataset.py --dataset crowdpose_trainval crowdpose_test
    # any COCO-format keypoint file
    tools/check_dataset.py --json annotations/train.json --image-root images/

Exit status 0 when every image reads and has its annotated size, 1 otherwise (each problem is
printed with the file and the reason).
"""
import argparse
import os
import sys
from typing import List, Tuple

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

import hrnext_d2  # noqa: F401  (registers the datasets)
from hrnext_d2.config import add_hrnext_config
from hrnext_d2.data.datasets import load_topdown_coco_json
from hrnext_d2.data.image_checks import find_image_problems


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", metavar="FILE", help="check DATASETS.TRAIN and DATASETS.TEST of this config")
    p.add_argument("--dataset", nargs="+", default=[], metavar="NAME", help="registered dataset names")
    p.add_argument("--json", metavar="FILE", help="a COCO-format keypoint annotation file (with --image-root)")
    p.add_argument("--image-root", metavar="DIR", help="folder of the images the --json file names")
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding threads")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if bool(args.json) != bool(args.image_root):
        p.error("--json and --image-root go together")
    if not (args.config_file or args.dataset or args.json):
        p.error("nothing to check: give --config-file, --dataset or --json/--image-root")
    return args


def _datasets(args) -> List[Tuple[str, list]]:
    out = []
    names = list(args.dataset)
    if args.config_file:
        cfg = get_cfg()
        add_hrnext_config(cfg)
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        names += [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) if n not in names]
    for name in names:
        out.append((name, DatasetCatalog.get(name)))
    if args.json:
        out.append((args.json, load_topdown_coco_json(args.json, args.image_root)))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="hrnext_d2")
    bad = 0
    for name, dicts in _datasets(args):
        problems = find_image_problems(dicts, num_workers=args.num_workers)
        files = len({d["file_name"] for d in dicts})
        unreadable = sum(p.kind == "unreadable" for p in problems)
        for p in problems:
            print(f"{p.kind}: {p.message}")
        print(f"{name}: {files} images checked: {unreadable} unreadable, {len(problems) - unreadable} mis-sized")
        bad += len(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
