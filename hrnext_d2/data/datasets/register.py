"""One public call to register a COCO-format keypoint dataset for top-down pose estimation.

CrowdPose and OCHuman are registered with it, and so can a user's own dataset with its own
keypoints: it sets every metadata key the model, the data loaders, the evaluator and Detectron2's
Visualizer read, and reads nothing from disk until `DatasetCatalog.get(name)` is called.
"""
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import load_topdown_coco_json
from .keypoint_metadata import build_keypoint_metadata

__all__ = [
    "register_topdown_keypoint_dataset",
    "topdown_dataset_metadata",
    "set_topdown_metadata",
    "TOPDOWN_EVALUATOR_TYPE",
    "KEYPOINT_PROTOCOLS",
]

logger = logging.getLogger(__name__)

TOPDOWN_EVALUATOR_TYPE = "topdown_keypoints"
# "coco": pycocotools OKS AP with the annotation areas (COCO, OCHuman);
# "crowdpose": xtcocotools 'keypoints_crowd' (area = 0.53 w h, easy/medium/hard by images[].crowdIndex).
KEYPOINT_PROTOCOLS = ("coco", "crowdpose")


def register_topdown_keypoint_dataset(
    name: str,
    json_file: str,
    image_root: str,
    keypoint_names: Sequence[str],
    keypoint_flip_map: Sequence[Tuple[str, str]],
    keypoint_connection_rules: Optional[Sequence[tuple]] = None,
    keypoint_oks_sigmas: Optional[Sequence[float]] = None,
    protocol: str = "coco",
    test_box_source: str = "gt",
    keypoint_upper_body_ids: Optional[Sequence[int]] = None,
    keypoint_lower_body_ids: Optional[Sequence[int]] = None,
    image_extra_keys: Optional[Sequence[str]] = None,
    loader: Optional[Callable[[], List[dict]]] = None,
    **extra_metadata,
) -> None:
    """Register `name` in DatasetCatalog (lazy COCO-format loader) and MetadataCatalog.

    Args:
        name: dataset name for DATASETS.TRAIN / DATASETS.TEST.
        json_file: COCO person-keypoints json; needs `area` on each person for protocol "coco".
        image_root: folder of the images.
        keypoint_names: names in the json's keypoint order.
        keypoint_flip_map: (left, right) name pairs swapped by a horizontal flip.
        keypoint_connection_rules: skeleton for drawing: (a, b) or (a, b, (r, g, b)) with keypoint
            names or 0-based indices.
        keypoint_oks_sigmas: per-keypoint OKS sigmas (default 0.025 each, with a warning).
        protocol: "coco" or "crowdpose" (see KEYPOINT_PROTOCOLS).
        test_box_source: "gt" or the path of a person-detections json (COCO results format).
        keypoint_upper_body_ids / keypoint_lower_body_ids: half-body groups (default: from names).
        image_extra_keys: image fields kept on each record (default: ("crowdIndex",) for "crowdpose").
        loader: a function returning the dataset dicts, in place of reading `json_file` with
            `load_topdown_coco_json` (e.g. a loader that generates the files first).
        extra_metadata: more metadata keys (e.g. thing_classes).
    """
    if protocol not in KEYPOINT_PROTOCOLS:
        raise ValueError(f"dataset {name!r}: protocol must be one of {KEYPOINT_PROTOCOLS}, got {protocol!r}")
    if not isinstance(test_box_source, str) or not test_box_source:
        raise ValueError(f"dataset {name!r}: test_box_source must be 'gt' or a detections json path")
    if keypoint_oks_sigmas is None:
        logger.warning(f"dataset {name!r}: no keypoint_oks_sigmas given; using 0.025 for every keypoint")
    keypoint_meta = build_keypoint_metadata(
        keypoint_names,
        keypoint_flip_map,
        keypoint_connection_rules,
        keypoint_oks_sigmas,
        keypoint_upper_body_ids,
        keypoint_lower_body_ids,
    )
    if image_extra_keys is None:
        image_extra_keys = ("crowdIndex",) if protocol == "crowdpose" else ()
    image_extra_keys = tuple(image_extra_keys)
    num_keypoints = len(keypoint_meta["keypoint_names"])

    def _load():
        return load_topdown_coco_json(
            json_file, image_root, name, num_keypoints=num_keypoints, image_extra_keys=image_extra_keys
        )

    DatasetCatalog.register(name, loader or _load)
    metadata = topdown_dataset_metadata(json_file, image_root, keypoint_meta, protocol, test_box_source)
    metadata["evaluator_type"] = TOPDOWN_EVALUATOR_TYPE
    metadata.update(extra_metadata)
    MetadataCatalog.get(name).set(**metadata)


def topdown_dataset_metadata(
    json_file: str, image_root: str, keypoint_meta: Dict[str, Any], protocol: str, test_box_source: str
) -> Dict[str, Any]:
    """Every metadata key the top-down data, model, evaluator and Visualizer read (one place)."""
    return dict(
        json_file=json_file,
        image_root=image_root,
        keypoint_protocol=protocol,
        test_box_source=test_box_source,
        thing_classes=["person"],
        **keypoint_meta,
    )


def _same(a: Any, b: Any) -> bool:
    """Equality of metadata values up to tuple / list nesting."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def set_topdown_metadata(name: str, metadata: Dict[str, Any]) -> None:
    """Add top-down keys to an existing dataset's metadata without touching what it has.

    Detectron2's `Metadata` refuses to change a key; keys already present must hold the same value
    (up to list / tuple), else this is an error naming the key.
    """
    meta = MetadataCatalog.get(name)
    new = {}
    for key, value in metadata.items():
        if key in meta.as_dict():
            if not _same(meta.get(key), value):
                raise ValueError(
                    f"dataset {name!r}: metadata {key!r} is already {meta.get(key)!r}, not {value!r}"
                )
        else:
            new[key] = value
    meta.set(**new)
