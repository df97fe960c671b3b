#!/usr/bin/env python3
"""Write the body13 dataset: the synthetic crowd's images with 13 of their 17 keypoints.

    python3 projects/custom_keypoints/prepare_body13.py [--train-images 600 --val-images 50]

Writes `$DETECTRON2_DATASETS/body13/{train,val}.json` (COCO format, 13 keypoints per person, image
paths relative to $DETECTRON2_DATASETS), generating the synthetic crowd splits there first if needed.
With a dataset of your own you skip this step: your json already has your keypoints.
"""
import argparse
import json
import os
import sys
from typing import List, Optional, Sequence

from hrnext_d2.data.datasets.coco import datasets_root, read_json_file
from hrnext_d2.data.datasets.synthetic import SyntheticCrowdSpec, ensure_synthetic_crowd_split

from body13 import BODY13_FROM_COCO, BODY13_KEYPOINT_NAMES, BODY13_SKELETON


def keypoint_subset_json(src_json: str, dst_json: str, keep: Sequence[int], names: Sequence[str], image_prefix: str) -> dict:
    """A COCO keypoints json with only the keypoints `keep` (indices into the source's), renamed
    `names`; `num_keypoints` recounted; image file names prefixed with `image_prefix`."""
    data = read_json_file(src_json)
    for ann in data["annotations"]:
        kp = ann.get("keypoints") or []
        sub = [v for i in keep for v in kp[3 * i : 3 * i + 3]]
        ann["keypoints"] = sub
        ann["num_keypoints"] = sum(1 for v in sub[2::3] if v > 0)
    for img in data["images"]:
        img["file_name"] = os.path.join(image_prefix, img["file_name"])
    index = {n: i + 1 for i, n in enumerate(names)}
    for cat in data["categories"]:
        cat["keypoints"] = list(names)
        cat["skeleton"] = [[index[a], index[b]] for a, b, _ in BODY13_SKELETON]
    os.makedirs(os.path.dirname(os.path.abspath(dst_json)), exist_ok=True)
    with open(dst_json, "w") as f:
        json.dump(data, f)
    return data


def main(argv: Optional[List[str]] = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=600, help="synthetic training images (default 600)")
    parser.add_argument("--val-images", type=int, default=50, help="synthetic validation images (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = datasets_root()
    written = []
    for split, num in (("train", args.train_images), ("val", args.val_images)):
        spec = SyntheticCrowdSpec(split=split, num_images=num, seed=args.seed)
        src_json, image_root = ensure_synthetic_crowd_split(spec, os.path.join(root, "synthetic_crowd"))
        dst = os.path.join(root, "body13", f"{split}.json")
        data = keypoint_subset_json(src_json, dst, BODY13_FROM_COCO, BODY13_KEYPOINT_NAMES, os.path.relpath(image_root, root))
        print(f"{dst}: {len(data['images'])} images, {len(data['annotations'])} persons, {len(BODY13_KEYPOINT_NAMES)} keypoints")
        written.append(dst)
    return written


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
