"""A keypoint set of your own: "body13", the 13 body joints (COCO's 17 without eyes and ears).

This file is what a user writes for a COCO-format dataset with its own keypoints: the keypoint
names in the json's order, which pairs swap under a horizontal flip, a skeleton to draw, the OKS
sigmas, and one `register_topdown_keypoint_dataset` call per split. Importing it registers
`body13_train` and `body13_val` (files under `$DETECTRON2_DATASETS/body13/`, written by
prepare_body13.py), as Detectron2 registers its builtin datasets on import; nothing is read from
disk until a dataset is used.
"""
import os
from typing import Optional, Tuple

from hrnext_d2.data.datasets import register_topdown_keypoint_dataset
from hrnext_d2.data.datasets.coco import datasets_root

__all__ = [
    "BODY13_KEYPOINT_NAMES",
    "BODY13_FLIP_MAP",
    "BODY13_SKELETON",
    "BODY13_OKS_SIGMAS",
    "BODY13_FROM_COCO",
    "register_body13_dataset",
    "register_all_body13",
]

# The json's keypoint order.
BODY13_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# Left / right pairs: swapped when training flips an image, and by flip test.
BODY13_FLIP_MAP: Tuple[Tuple[str, str], ...] = tuple(
    (f"left_{part}", f"right_{part}") for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
)
# Drawing: (keypoint, keypoint, RGB colour); left limbs green, right orange, trunk blue.
_L, _R, _C = (0, 255, 0), (255, 128, 0), (51, 153, 255)
BODY13_SKELETON = [
    ("left_ankle", "left_knee", _L), ("left_knee", "left_hip", _L),
    ("right_ankle", "right_knee", _R), ("right_knee", "right_hip", _R),
    ("left_hip", "right_hip", _C), ("left_shoulder", "left_hip", _C), ("right_shoulder", "right_hip", _C),
    ("left_shoulder", "right_shoulder", _C), ("left_shoulder", "left_elbow", _L), ("left_elbow", "left_wrist", _L),
    ("right_shoulder", "right_elbow", _R), ("right_elbow", "right_wrist", _R),
    ("nose", "left_shoulder", _C), ("nose", "right_shoulder", _C),
]  # fmt: skip
# OKS sigmas (how far a prediction may be, per keypoint, relative to the person's size): COCO's for
# these joints, with a wider nose (0.05: without eyes and ears the face is one point).
BODY13_OKS_SIGMAS: Tuple[float, ...] = (
    0.05, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
# For prepare_body13.py: the COCO keypoint index of each body13 keypoint.
BODY13_FROM_COCO: Tuple[int, ...] = (0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)


def register_body13_dataset(name: str, json_file: str, image_root: str) -> None:
    """One split: a COCO-format json whose persons carry the 13 keypoints above."""
    register_topdown_keypoint_dataset(
        name,
        json_file,
        image_root,
        keypoint_names=BODY13_KEYPOINT_NAMES,
        keypoint_flip_map=BODY13_FLIP_MAP,
        keypoint_connection_rules=BODY13_SKELETON,
        keypoint_oks_sigmas=BODY13_OKS_SIGMAS,
        protocol="coco",  # pycocotools OKS AP; needs `area` on every person
        test_box_source="gt",  # or the path of a person-detections json
    )


def register_all_body13(root: Optional[str] = None) -> None:
    """body13_train / body13_val: `<root>/body13/{train,val}.json`, image paths relative to `root`
    (default $DETECTRON2_DATASETS, as Detectron2's builtin datasets)."""
    root = root or datasets_root()
    for split in ("train", "val"):
        register_body13_dataset(f"body13_{split}", os.path.join(root, "body13", f"{split}.json"), root)


register_all_body13()
