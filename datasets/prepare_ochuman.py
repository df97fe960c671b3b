#!/usr/bin/env python3
"""Make the OCHuman COCO-format files that `ochuman_val` / `ochuman_test` read, from the official ochuman.json.

    python3 datasets/prepare_ochuman.py --ochuman-json /path/to/ochuman.json \
        [--images-dir $DETECTRON2_DATASETS/ochuman/images] [--output-dir $DETECTRON2_DATASETS/ochuman/annotations]

The conversion is OCHumanApi's `OCHuman(Filter='kpt&segm').toCocoFormart(subset, maxIouRange=(0, 1))`:
persons with both keypoints and a mask (4731 images, 8110 persons in the official file), images sorted
by id, val = the first 2500 images, test = the remaining 2231; image and annotation ids restart at 1
in each file; boxes xyxy -> xywh with area w*h; OCHuman's 19 keypoints are reordered to COCO's 17
with visibility vis/self-occluded -> 2, occluded by others -> 1, missing -> 0; the outer-minus-inner
polygon mask becomes a compressed RLE. Needs only numpy and pycocotools (not OCHumanApi).
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Sequence

import numpy as np

COCO_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
                 [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
NUM_VAL_IMAGES = 2500
OFFICIAL_COUNTS = {"val": 2500, "test": 2231}


def _polygons_to_mask(polygons: List, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_util

    rles = mask_util.frPyObjects(polygons, height, width)
    return mask_util.decode(mask_util.merge(rles))


def segms_to_rle(segms: Dict) -> Dict:
    """OCHuman's {'outer', 'inner', 'height', 'width'} polygons -> compressed RLE (outer minus inner)."""
    from pycocotools import mask as mask_util

    h, w = segms["height"], segms["width"]
    if len(segms["outer"]) > 0:
        mask = _polygons_to_mask(segms["outer"], h, w)
        if len(segms.get("inner", [])) > 0:
            mask[_polygons_to_mask(segms["inner"], h, w) > 0] = 0
    else:
        mask = np.zeros((h, w), dtype=np.uint8)
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _to_coco_keypoints(kpt: Sequence[float], names: Sequence[str], where: str):
    coco, labelled = [], 0
    if len(kpt) != 3 * len(names):
        raise ValueError(f"{where}: {len(kpt)} keypoint values for {len(names)} keypoint_names")
    for name in COCO_KEYPOINTS:
        idx = names.index(name)
        x, y, v = kpt[idx * 3: idx * 3 + 3]
        # OCHuman: missing 0, vis 1, self_occluded 2, others_occluded 3.
        if v in (1, 2):
            v = 2
            labelled += 1
        elif v == 3:
            v = 1
            labelled += 1
        coco += [x, y, v]
    return coco, labelled


def convert(ochuman: Dict, subset: str, max_iou_range=(0.0, 1.0)) -> Dict:
    """The COCO-format dict of one subset ('val', 'test' or 'all')."""
    names = ochuman["keypoint_names"]
    missing = [n for n in COCO_KEYPOINTS if n not in names]
    if missing:
        raise ValueError(f"ochuman.json keypoint_names lacks {missing}")
    images = {}
    for item in ochuman["images"]:
        annos = [a for a in item["annotations"] if a.get("keypoints") and a.get("segms")]
        if annos:
            images[item["image_id"]] = dict(item, annotations=annos)
    img_ids = sorted(images)
    img_ids = {"all": img_ids, "val": img_ids[:NUM_VAL_IMAGES], "test": img_ids[NUM_VAL_IMAGES:]}[subset]

    out = {
        "annotations": [],
        "categories": [{"supercategory": "person", "id": 1, "name": "person", "skeleton": COCO_SKELETON,
                        "keypoints": COCO_KEYPOINTS}],
        "images": [],
    }
    new_img_id, new_ann_id = 1, 1
    for image_id in img_ids:
        item = images[image_id]
        count = 0
        for anno in item["annotations"]:
            if not max_iou_range[0] <= anno["max_iou"] < max_iou_range[1]:
                continue
            x1, y1, x2, y2 = anno["bbox"]
            where = f"image {image_id!r} ({item['file_name']})"
            keypoints, labelled = _to_coco_keypoints(anno["keypoints"], names, where)
            out["annotations"].append({
                "image_id": new_img_id,
                "area": (x2 - x1) * (y2 - y1),
                "num_keypoints": labelled,
                "iscrowd": 0,
                "id": new_ann_id,
                "category_id": 1,
                "keypoints": keypoints,
                "segmentation": segms_to_rle(anno["segms"]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
            })
            new_ann_id += 1
            count += 1
        if count:
            out["images"].append({"id": new_img_id, "file_name": item["file_name"], "height": item["height"],
                                  "width": item["width"]})
            new_img_id += 1
    return out


def main(argv=None) -> int:
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ochuman-json", required=True, help="the official ochuman.json")
    parser.add_argument("--images-dir", default=os.path.join(root, "ochuman", "images"),
                        help="check that every image of the output exists here ('' to skip)")
    parser.add_argument("--output-dir", default=os.path.join(root, "ochuman", "annotations"))
    args = parser.parse_args(argv)

    if not os.path.isfile(args.ochuman_json):
        parser.error(f"not found: {args.ochuman_json}")
    with open(args.ochuman_json) as f:
        ochuman = json.load(f)
    for key in ("images", "keypoint_names"):
        if key not in ochuman:
            parser.error(f"{args.ochuman_json} has no '{key}': not OCHuman's ochuman.json")
    os.makedirs(args.output_dir, exist_ok=True)
    problems = 0
    for subset in ("val", "test"):
        data = convert(ochuman, subset)
        path = os.path.join(args.output_dir, f"ochuman_coco_format_{subset}_range_0.00_1.00.json")
        with open(path, "w") as f:
            json.dump(data, f)
        n_img, n_ann = len(data["images"]), len(data["annotations"])
        print(f"{path}: {n_img} images, {n_ann} persons")
        if n_img != OFFICIAL_COUNTS[subset]:
            print(f"  note: the official OCHuman {subset} split has {OFFICIAL_COUNTS[subset]} images", file=sys.stderr)
        if args.images_dir:
            missing = [img["file_name"] for img in data["images"]
                       if not os.path.isfile(os.path.join(args.images_dir, img["file_name"]))]
            if missing:
                problems += 1
                print(f"  error: {len(missing)} images missing under {args.images_dir}, e.g. {missing[:5]}",
                      file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
