#!/usr/bin/env python3
"""Lay out the official CrowdPose annotations the way `crowdpose_{train,val,trainval,test}` read them.

    python3 datasets/prepare_crowdpose.py --src /path/to/CrowdPose/annotations \
        [--images-dir $DETECTRON2_DATASETS/crowdpose/images] \
        [--output-dir $DETECTRON2_DATASETS/crowdpose/annotations] \
        [--detections /path/to/det_for_crowd_test_0.1_0.5.json]

Reads crowdpose_{train,val,test,trainval}.json (trainval is made from train + val when absent),
validates them (one person category with 14 keypoints, 42 keypoint values per person, every image
with a `crowdIndex`, unique ids, every image file present) and writes
mmpose_crowdpose_{split}.json. Image `width`/`height` are taken from the image files: some releases
of the official files have them swapped (mmpose issue #310 corrected this in its copies); each
fix is counted. The YOLOv3 test boxes, when given, are checked and copied beside them.
Exit status 1 when a check fails; nothing is written for a split that fails.
"""
import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Optional, Tuple

SPLITS = ("train", "val", "test", "trainval")
NUM_KEYPOINTS = 14
DETECTIONS_NAME = "det_for_crowd_test_0.1_0.5.json"


class CrowdPoseFormatError(ValueError):
    pass


def _image_size(path: str) -> Optional[Tuple[int, int]]:
    """(width, height) from the image header, None when the file is missing."""
    if not os.path.isfile(path):
        return None
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def merge_train_val(train: Dict, val: Dict) -> Dict:
    """trainval = train + val (ids must not collide)."""
    for key in ("images", "annotations"):
        clash = {x["id"] for x in train[key]} & {x["id"] for x in val[key]}
        if clash:
            raise CrowdPoseFormatError(f"train and val share {key} ids, e.g. {sorted(clash)[:5]}")
    return {
        "images": train["images"] + val["images"],
        "annotations": train["annotations"] + val["annotations"],
        "categories": train["categories"],
    }


def validate_and_fix(data: Dict, name: str, images_dir: Optional[str]) -> Dict[str, int]:
    """Check one split in place (see the module docstring); returns counts of what was fixed."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CrowdPoseFormatError(f"{name}: missing list '{key}'")
    cats = data["categories"]
    if len(cats) != 1 or len(cats[0].get("keypoints", [])) != NUM_KEYPOINTS:
        raise CrowdPoseFormatError(f"{name}: expected one person category with {NUM_KEYPOINTS} keypoints, got {cats}")
    cat_id = cats[0]["id"]

    ids = [img.get("id") for img in data["images"]]
    if len(set(ids)) != len(ids):
        raise CrowdPoseFormatError(f"{name}: image ids are not unique")
    no_index = [img.get("id") for img in data["images"] if "crowdIndex" not in img]
    if no_index:
        raise CrowdPoseFormatError(f"{name}: {len(no_index)} images have no crowdIndex, e.g. ids {no_index[:5]}")
    known = set(ids)
    ann_ids = set()
    for ann in data["annotations"]:
        where = f"{name}: annotation id {ann.get('id')} (image id {ann.get('image_id')})"
        if ann.get("id") in ann_ids:
            raise CrowdPoseFormatError(f"{where}: annotation id is not unique")
        ann_ids.add(ann.get("id"))
        if ann.get("image_id") not in known:
            raise CrowdPoseFormatError(f"{where}: image id not in 'images'")
        if len(ann.get("keypoints", [])) != 3 * NUM_KEYPOINTS:
            raise CrowdPoseFormatError(f"{where}: {len(ann.get('keypoints', []))} keypoint values, expected {3 * NUM_KEYPOINTS}")
        if len(ann.get("bbox", [])) != 4:
            raise CrowdPoseFormatError(f"{where}: bbox {ann.get('bbox')!r} is not [x, y, w, h]")
        if ann.get("category_id") != cat_id:
            raise CrowdPoseFormatError(f"{where}: category_id {ann.get('category_id')} is not {cat_id}")

    counts = {"images": len(data["images"]), "persons": len(data["annotations"]), "swapped_sizes": 0, "other_sizes": 0}
    if images_dir is None:
        return counts
    missing: List[str] = []
    for img in data["images"]:
        size = _image_size(os.path.join(images_dir, img["file_name"]))
        if size is None:
            missing.append(img["file_name"])
            continue
        w, h = size
        if (img["width"], img["height"]) == (w, h):
            continue
        counts["swapped_sizes" if (img["width"], img["height"]) == (h, w) else "other_sizes"] += 1
        img["width"], img["height"] = w, h
    if missing:
        raise CrowdPoseFormatError(f"{name}: {len(missing)} images missing under {images_dir}, e.g. {missing[:5]}")
    return counts


def check_detections(path: str, test_image_ids) -> int:
    with open(path) as f:
        dets = json.load(f)
    if not isinstance(dets, list) or not all(
        isinstance(d, dict) and {"image_id", "bbox", "score"} <= set(d) and len(d["bbox"]) == 4 for d in dets
    ):
        raise CrowdPoseFormatError(f"{path}: not a list of {{image_id, bbox [x, y, w, h], score}} detections")
    unknown = {d["image_id"] for d in dets} - set(test_image_ids)
    if unknown:
        raise CrowdPoseFormatError(f"{path}: detections for images not in the test split, e.g. {sorted(unknown)[:5]}")
    return len(dets)


def main(argv=None) -> int:
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="folder with the official crowdpose_{train,val,test,trainval}.json")
    parser.add_argument("--images-dir", default=os.path.join(root, "crowdpose", "images"))
    parser.add_argument("--output-dir", default=os.path.join(root, "crowdpose", "annotations"))
    parser.add_argument("--detections", default="", help=f"the YOLOv3 test boxes ({DETECTIONS_NAME})")
    parser.add_argument("--no-image-check", action="store_true",
                        help="do not open the images (sizes stay as in the json; missing files not detected)")
    args = parser.parse_args(argv)

    sources = {}
    for split in SPLITS:
        path = os.path.join(args.src, f"crowdpose_{split}.json")
        if os.path.isfile(path):
            with open(path) as f:
                sources[split] = json.load(f)
    if "trainval" not in sources and {"train", "val"} <= set(sources):
        sources["trainval"] = merge_train_val(sources["train"], sources["val"])
        print("crowdpose_trainval.json not found: made from train + val")
    absent = [s for s in SPLITS if s not in sources]
    if absent:
        print(f"warning: no crowdpose_{{{','.join(absent)}}}.json under {args.src}", file=sys.stderr)

    os.makedirs(args.output_dir, exist_ok=True)
    failures = 0
    images_dir = None if args.no_image_check else args.images_dir
    for split, data in sources.items():
        try:
            counts = validate_and_fix(data, f"crowdpose_{split}.json", images_dir)
        except CrowdPoseFormatError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        out = os.path.join(args.output_dir, f"mmpose_crowdpose_{split}.json")
        with open(out, "w") as f:
            json.dump(data, f)
        print(f"{out}: {counts['images']} images, {counts['persons']} persons; image sizes fixed: "
              f"{counts['swapped_sizes']} swapped, {counts['other_sizes']} other")

    if args.detections:
        try:
            if "test" not in sources:
                raise CrowdPoseFormatError("detections given but no crowdpose_test.json to check them against")
            n = check_detections(args.detections, [img["id"] for img in sources["test"]["images"]])
            dst = os.path.join(args.output_dir, DETECTIONS_NAME)
            if os.path.abspath(args.detections) != os.path.abspath(dst):
                shutil.copyfile(args.detections, dst)
            print(f"{dst}: {n} person boxes")
        except CrowdPoseFormatError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
