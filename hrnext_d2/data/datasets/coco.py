"""COCO-format keypoint files -> Detectron2 dataset dicts.

`load_topdown_coco_json` mirrors `detectron2.data.datasets.load_coco_json` (keypoints + 0.5, boxes
raw XYWH_ABS, categories mapped to contiguous ids) so every dataset dict of this project has one
convention, and adds what top-down pose needs: `num_keypoints` on each person, image fields such as
CrowdPose's `crowdIndex`, and validation that names the image / annotation at fault. Persons without
labelled keypoints and crowd regions stay in the dicts (evaluation and visualisation need them);
`hrnext_d2.data.instances.select_pose_annotations` picks the training persons, as mmpose 0.23 does.
"""
import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

__all__ = [
    "datasets_root",
    "missing_file_error",
    "load_topdown_coco_json",
    "sanitize_box_xywh",
]

logger = logging.getLogger(__name__)

def datasets_root() -> str:
    """The datasets root exactly as Detectron2's builtin datasets compute it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def missing_file_error(path: str, what: str = "annotation file") -> FileNotFoundError:
    """One error that says what is missing, where it was looked for and how to point elsewhere."""
    return FileNotFoundError(
        f"{what} not found: {path!r}. Builtin datasets are read from $DETECTRON2_DATASETS "
        f"(now {os.getenv('DETECTRON2_DATASETS', '<unset>, so ./datasets')!s}); "
        "see datasets/README.md for the expected layout."
    )


def read_json_file(json_file: str, what: str = "annotation file"):
    """Parsed json of ``json_file``; a missing file or invalid json is an error naming the file."""
    if not os.path.isfile(json_file):
        raise missing_file_error(json_file, what)
    try:
        with open(json_file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file}: not valid json ({e})") from e


def _finite_numbers(values) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def load_topdown_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    num_keypoints: Optional[int] = None,
    image_extra_keys: Sequence[str] = (),
    load_segmentation: bool = False,
) -> List[dict]:
    """Read a COCO-format keypoint json into Detectron2 dataset dicts (one per image).

    Args:
        json_file: COCO person-keypoints json (COCO, CrowdPose, OCHuman or a user's own).
        image_root: folder holding the images named by `images[].file_name`.
        dataset_name: when given, its metadata receives `thing_classes` and
            `thing_dataset_id_to_contiguous_id` (as `load_coco_json`), and its `keypoint_names` fix
            the expected number of keypoints.
        num_keypoints: expected keypoints per person (default: from the metadata, else from the
            json's category, else from the first person).
        image_extra_keys: image fields copied onto the record when present (CrowdPose: crowdIndex).
        load_segmentation: also keep each person's `segmentation` (polygons or RLE) when present,
            for instance-segmentation models.

    Each record: file_name, height, width, image_id, the extra image keys, and `annotations`, each
    with iscrowd, bbox (raw COCO numbers), bbox_mode XYWH_ABS, keypoints (flat list, x/y + 0.5),
    category_id (contiguous), num_keypoints (from the file, else the labelled count) and area when
    the file has it. Segmentations are loaded only with `load_segmentation` (top-down pose does
    not use them; COCO train's polygons would dominate the memory of the dicts).
    """
    data = read_json_file(json_file)
    if not isinstance(data, dict):
        raise ValueError(f"{json_file}: expected a COCO json object with 'images' and 'annotations'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{json_file}: missing list '{key}' (not a COCO keypoint annotation file)")

    categories = data["categories"]
    if not categories:
        raise ValueError(f"{json_file}: 'categories' is empty")
    cat_ids = sorted(c["id"] for c in categories)
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    meta = MetadataCatalog.get(dataset_name) if dataset_name is not None else None
    if meta is not None:
        thing_classes = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
        if meta.get("thing_classes") is None:
            meta.thing_classes = thing_classes
        elif list(meta.thing_classes) != thing_classes:
            logger.warning(f"{json_file}: categories {thing_classes} differ from the metadata's {meta.thing_classes}")
        if meta.get("thing_dataset_id_to_contiguous_id") is None:
            meta.thing_dataset_id_to_contiguous_id = id_map

    if num_keypoints is None and meta is not None and meta.get("keypoint_names") is not None:
        num_keypoints = len(meta.keypoint_names)
    if num_keypoints is None:
        named = [len(c["keypoints"]) for c in categories if c.get("keypoints")]
        if named:
            num_keypoints = named[0]
    if num_keypoints is None:
        first = next((a for a in data["annotations"] if a.get("keypoints")), None)
        num_keypoints = len(first["keypoints"]) // 3 if first else 0

    images = {}
    for img in data["images"]:
        img_id = img.get("id")
        for key in ("id", "file_name", "height", "width"):
            if key not in img:
                raise ValueError(f"{json_file}: image {img_id!r} has no '{key}'")
        if not (_finite_numbers([img["height"], img["width"]]) and img["height"] > 0 and img["width"] > 0):
            raise ValueError(f"{json_file}: image id {img_id}: invalid size {img['width']}x{img['height']}")
        if img_id in images:
            raise ValueError(f"{json_file}: image id {img_id} appears twice")
        images[img_id] = img

    anns_per_image: Dict[object, List[dict]] = {img_id: [] for img_id in images}
    seen_ann_ids = set()
    unmatched = 0
    for ann in data["annotations"]:
        ann_id, img_id = ann.get("id"), ann.get("image_id")
        where = f"{json_file}: annotation id {ann_id} (image id {img_id})"
        if ann_id is not None:
            if ann_id in seen_ann_ids:
                raise ValueError(f"{where}: annotation id is not unique")
            seen_ann_ids.add(ann_id)
        if img_id not in anns_per_image:
            unmatched += 1
            continue
        if ann.get("ignore", 0):
            raise ValueError(f"{where}: the 'ignore' field is not supported (use iscrowd)")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not _finite_numbers(bbox):
            raise ValueError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{where}: 'bbox' has a negative size {bbox!r}")
        if ann.get("category_id") not in id_map:
            raise ValueError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories' {cat_ids}")
        obj = {
            "iscrowd": int(ann.get("iscrowd", 0)),
            "bbox": list(bbox),
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": id_map[ann["category_id"]],
        }
        kpts = ann.get("keypoints")
        if kpts:
            if len(kpts) != 3 * num_keypoints:
                raise ValueError(
                    f"{where}: 'keypoints' has {len(kpts)} values, expected {3 * num_keypoints} "
                    f"({num_keypoints} keypoints x (x, y, v))"
                )
            if not _finite_numbers(kpts):
                raise ValueError(f"{where}: 'keypoints' contains a non-finite value")
            # Pixel indices -> floating point coordinates, exactly as load_coco_json.
            obj["keypoints"] = [v + 0.5 if i % 3 != 2 else v for i, v in enumerate(kpts)]
            labelled = sum(1 for v in kpts[2::3] if v > 0)
        else:
            labelled = 0
        obj["num_keypoints"] = int(ann["num_keypoints"]) if "num_keypoints" in ann else labelled
        if "area" in ann:
            if not _finite_numbers([ann["area"]]):
                raise ValueError(f"{where}: 'area' is not a finite number: {ann['area']!r}")
            obj["area"] = ann["area"]
        if load_segmentation and ann.get("segmentation"):
            obj["segmentation"] = ann["segmentation"]
        anns_per_image[img_id].append(obj)
    if unmatched:
        logger.warning(f"{json_file} contains {unmatched} annotations whose image_id is not in 'images'; skipped.")

    dataset_dicts = []
    for img_id in sorted(images):
        img = images[img_id]
        record = {
            "file_name": os.path.join(image_root, img["file_name"]),
            "height": img["height"],
            "width": img["width"],
            "image_id": img_id,
        }
        for key in image_extra_keys:
            if key in img:
                record[key] = img[key]
        record["annotations"] = anns_per_image[img_id]
        dataset_dicts.append(record)
    logger.info(
        f"Loaded {len(dataset_dicts)} images, {sum(len(r['annotations']) for r in dataset_dicts)} persons "
        f"in COCO keypoint format from {json_file}"
    )
    return dataset_dicts


def sanitize_box_xywh(bbox: Sequence[float], width: float, height: float, area: Optional[float] = None):
    """mmpose 0.23's `clean_bbox`: clip to the image (inclusive pixel extent); None when degenerate."""
    x, y, w, h = bbox
    x1 = max(0, x)
    y1 = max(0, y)
    x2 = min(width - 1, x1 + max(0, w - 1))
    y2 = min(height - 1, y1 + max(0, h - 1))
    if (area is None or area > 0) and x2 > x1 and y2 > y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None
