"""Keypoint definitions of the supported datasets, in the form Detectron2's metadata expects.

One place for names, flip maps, drawing rules, OKS sigmas and body-part ids, so that training
(flip, half-body), inference (flip test, OKS-NMS), evaluation (OKS) and drawing agree.
COCO's names, flip map and connection rules are Detectron2's own objects (the builtin COCO keypoint
datasets already carry them and Detectron2's `Metadata` refuses a different value for a key).
"""
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data.datasets.builtin_meta import (
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    KEYPOINT_CONNECTION_RULES as COCO_KEYPOINT_CONNECTION_RULES,
)

__all__ = [
    "COCO_PERSON_KEYPOINT_NAMES",
    "COCO_PERSON_KEYPOINT_FLIP_MAP",
    "COCO_KEYPOINT_CONNECTION_RULES",
    "COCO_KEYPOINT_OKS_SIGMAS",
    "COCO_UPPER_BODY_IDS",
    "COCO_LOWER_BODY_IDS",
    "CROWDPOSE_KEYPOINT_NAMES",
    "CROWDPOSE_KEYPOINT_FLIP_MAP",
    "CROWDPOSE_KEYPOINT_CONNECTION_RULES",
    "CROWDPOSE_KEYPOINT_OKS_SIGMAS",
    "CROWDPOSE_UPPER_BODY_IDS",
    "CROWDPOSE_LOWER_BODY_IDS",
    "flip_map_to_flip_pairs",
    "guess_body_part_ids",
    "build_keypoint_metadata",
    "get_coco_keypoint_metadata",
    "get_crowdpose_keypoint_metadata",
]

# ---- COCO (17 keypoints; also OCHuman, which uses COCO's order) -----------------------------------
COCO_KEYPOINT_OKS_SIGMAS: Tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
# As mmpose's dataset_info (half-body transform): head and arms / hips and legs.
COCO_UPPER_BODY_IDS: Tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
COCO_LOWER_BODY_IDS: Tuple[int, ...] = (11, 12, 13, 14, 15, 16)

# ---- CrowdPose (14 keypoints) ---------------------------------------------------------------------
# Names as mmpose's CrowdPose dataset_info (the json calls keypoint 12 "head").
CROWDPOSE_KEYPOINT_NAMES: Tuple[str, ...] = (
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
    "top_head", "neck",
)  # fmt: skip
CROWDPOSE_KEYPOINT_FLIP_MAP: Tuple[Tuple[str, str], ...] = (
    ("left_shoulder", "right_shoulder"),
    ("left_elbow", "right_elbow"),
    ("left_wrist", "right_wrist"),
    ("left_hip", "right_hip"),
    ("left_knee", "right_knee"),
    ("left_ankle", "right_ankle"),
)
# CrowdPose's own skeleton (mmpose dataset_info colours: left green, right orange, centre blue).
# The `skeleton` field of the CrowdPose json is COCO's, copied; it must not be used for drawing.
_LEFT, _RIGHT, _CENTRE = (0, 255, 0), (255, 128, 0), (51, 153, 255)
CROWDPOSE_KEYPOINT_CONNECTION_RULES: List[Tuple[str, str, Tuple[int, int, int]]] = [
    ("left_ankle", "left_knee", _LEFT),
    ("left_knee", "left_hip", _LEFT),
    ("right_ankle", "right_knee", _RIGHT),
    ("right_knee", "right_hip", _RIGHT),
    ("left_hip", "right_hip", _CENTRE),
    ("left_shoulder", "left_hip", _CENTRE),
    ("right_shoulder", "right_hip", _CENTRE),
    ("left_shoulder", "right_shoulder", _CENTRE),
    ("left_shoulder", "left_elbow", _LEFT),
    ("right_shoulder", "right_elbow", _RIGHT),
    ("left_elbow", "left_wrist", _LEFT),
    ("right_elbow", "right_wrist", _RIGHT),
    ("top_head", "neck", _CENTRE),
    ("right_shoulder", "neck", _CENTRE),
    ("left_shoulder", "neck", _CENTRE),
]
CROWDPOSE_KEYPOINT_OKS_SIGMAS: Tuple[float, ...] = (
    0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089, 0.079, 0.079,
)  # fmt: skip
CROWDPOSE_UPPER_BODY_IDS: Tuple[int, ...] = (0, 1, 2, 3, 4, 5, 12, 13)
CROWDPOSE_LOWER_BODY_IDS: Tuple[int, ...] = (6, 7, 8, 9, 10, 11)

# Names that put a keypoint in the lower body when a user's dataset gives no body-part ids.
_LOWER_BODY_WORDS = ("hip", "knee", "ankle", "foot", "heel", "toe", "leg", "thigh", "shin")


def flip_map_to_flip_pairs(
    keypoint_names: Sequence[str], flip_map: Sequence[Tuple[str, str]]
) -> List[Tuple[int, int]]:
    """Name pairs (Detectron2's `keypoint_flip_map`) -> index pairs (mmpose's `flip_pairs`)."""
    index = {name: i for i, name in enumerate(keypoint_names)}
    pairs = []
    for pair in flip_map:
        if len(pair) != 2:
            raise ValueError(f"keypoint_flip_map entry {pair!r} is not a pair of keypoint names")
        for name in pair:
            if name not in index:
                raise ValueError(
                    f"keypoint_flip_map names {name!r}, which is not in keypoint_names {list(keypoint_names)}"
                )
        pairs.append((index[pair[0]], index[pair[1]]))
    return pairs


def guess_body_part_ids(keypoint_names: Sequence[str]) -> Tuple[List[int], List[int]]:
    """Upper / lower body ids from the names (hips, knees, ankles, feet = lower; the rest upper)."""
    lower = [i for i, n in enumerate(keypoint_names) if any(w in n.lower() for w in _LOWER_BODY_WORDS)]
    upper = [i for i in range(len(keypoint_names)) if i not in lower]
    return upper, lower


def _default_colour(i: int) -> Tuple[int, int, int]:
    palette = [(255, 128, 0), (0, 255, 0), (51, 153, 255), (255, 51, 255), (255, 255, 0), (0, 255, 255)]
    return palette[i % len(palette)]


def _connection_rules(keypoint_names: Sequence[str], rules) -> List[Tuple[str, str, Tuple[int, int, int]]]:
    """Accept (a, b) or (a, b, colour) with names or 0-based indices; return Detectron2's form."""
    out = []
    for i, rule in enumerate(rules or []):
        if len(rule) not in (2, 3):
            raise ValueError(f"keypoint connection rule {rule!r} is not (a, b) or (a, b, (r, g, b))")
        ends = []
        for e in rule[:2]:
            if isinstance(e, str):
                if e not in keypoint_names:
                    raise ValueError(f"keypoint connection rule {rule!r} names unknown keypoint {e!r}")
                ends.append(e)
            else:
                e = int(e)
                if not 0 <= e < len(keypoint_names):
                    raise ValueError(
                        f"keypoint connection rule {rule!r}: index {e} outside 0..{len(keypoint_names) - 1}"
                    )
                ends.append(keypoint_names[e])
        colour = tuple(int(c) for c in rule[2]) if len(rule) == 3 else _default_colour(i)
        out.append((ends[0], ends[1], colour))
    return out


def build_keypoint_metadata(
    keypoint_names: Sequence[str],
    keypoint_flip_map: Sequence[Tuple[str, str]],
    keypoint_connection_rules=None,
    keypoint_oks_sigmas: Optional[Sequence[float]] = None,
    keypoint_upper_body_ids: Optional[Sequence[int]] = None,
    keypoint_lower_body_ids: Optional[Sequence[int]] = None,
) -> Dict[str, object]:
    """Validated keypoint metadata (names, flip map and pairs, skeleton rules, sigmas, body-part ids).

    Sigmas default to 0.025 per keypoint when not given (a neutral OKS tolerance, with a warning
    left to the caller); body-part ids default to a guess from the names.
    """
    names = list(keypoint_names)
    if len(set(names)) != len(names):
        raise ValueError(f"keypoint_names has duplicates: {names}")
    pairs = flip_map_to_flip_pairs(names, keypoint_flip_map)
    if keypoint_oks_sigmas is None:
        sigmas = [0.025] * len(names)
    else:
        sigmas = [float(s) for s in keypoint_oks_sigmas]
    if len(sigmas) != len(names):
        raise ValueError(f"keypoint_oks_sigmas has {len(sigmas)} values for {len(names)} keypoints")
    if any(not s > 0 for s in sigmas):
        raise ValueError(f"keypoint_oks_sigmas must be positive: {sigmas}")
    if keypoint_upper_body_ids is None or keypoint_lower_body_ids is None:
        upper, lower = guess_body_part_ids(names)
        upper = list(keypoint_upper_body_ids) if keypoint_upper_body_ids is not None else upper
        lower = list(keypoint_lower_body_ids) if keypoint_lower_body_ids is not None else lower
    else:
        upper, lower = list(keypoint_upper_body_ids), list(keypoint_lower_body_ids)
    for key, ids in (("keypoint_upper_body_ids", upper), ("keypoint_lower_body_ids", lower)):
        bad = [i for i in ids if not 0 <= int(i) < len(names)]
        if bad:
            raise ValueError(f"{key} has ids outside 0..{len(names) - 1}: {bad}")
    return {
        "keypoint_names": tuple(names),
        "keypoint_flip_map": tuple((str(a), str(b)) for a, b in keypoint_flip_map),
        "keypoint_flip_pairs": pairs,
        "keypoint_connection_rules": _connection_rules(names, keypoint_connection_rules),
        "keypoint_oks_sigmas": sigmas,
        "keypoint_upper_body_ids": [int(i) for i in upper],
        "keypoint_lower_body_ids": [int(i) for i in lower],
    }


def get_coco_keypoint_metadata() -> Dict[str, object]:
    """COCO person keypoints (also OCHuman)."""
    return build_keypoint_metadata(
        COCO_PERSON_KEYPOINT_NAMES,
        COCO_PERSON_KEYPOINT_FLIP_MAP,
        COCO_KEYPOINT_CONNECTION_RULES,
        COCO_KEYPOINT_OKS_SIGMAS,
        COCO_UPPER_BODY_IDS,
        COCO_LOWER_BODY_IDS,
    )


def get_crowdpose_keypoint_metadata() -> Dict[str, object]:
    """CrowdPose's 14 keypoints with its own skeleton."""
    return build_keypoint_metadata(
        CROWDPOSE_KEYPOINT_NAMES,
        CROWDPOSE_KEYPOINT_FLIP_MAP,
        CROWDPOSE_KEYPOINT_CONNECTION_RULES,
        CROWDPOSE_KEYPOINT_OKS_SIGMAS,
        CROWDPOSE_UPPER_BODY_IDS,
        CROWDPOSE_LOWER_BODY_IDS,
    )
