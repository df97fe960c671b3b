"""Keypoint definitions of the supported datasets, in the form Detectron2's metadata expects.

One place for names, flip maps, drawing rules, OKS sigmas and body-part ids, so that training
(flip, half-body), inference (flip test, OKS-NMS), evaluation (OKS) and drawing agree.
COCO's names, flip map and connection rules are Detectron2's own objects (the builtin COCO keypoint
datasets already carry them and Detectron2's `Metadata` refuses a different value for a key).

`resolve_keypoint_metadata(cfg)` is the one place where a config's keypoint facts (flip pairs, OKS
sigmas, upper-body ids) are decided, for the mapper, the model, the evaluator and NMS alike
(Detectron2's `create_keypoint_hflip_indices` plays that role for its Keypoint R-CNN).
"""
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
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
    "coco_keypoint_arguments",
    "crowdpose_keypoint_arguments",
    "KeypointInfo",
    "resolve_keypoint_metadata",
]

logger = logging.getLogger(__name__)

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


def _as_arguments(m: Dict[str, object]) -> Dict[str, object]:
    keys = ("keypoint_names", "keypoint_flip_map", "keypoint_connection_rules", "keypoint_oks_sigmas",
            "keypoint_upper_body_ids", "keypoint_lower_body_ids")
    return {k: m[k] for k in keys}


def coco_keypoint_arguments() -> Dict[str, object]:
    """COCO's keypoint definitions as keyword arguments of `register_topdown_keypoint_dataset`."""
    return _as_arguments(get_coco_keypoint_metadata())


def crowdpose_keypoint_arguments() -> Dict[str, object]:
    """CrowdPose's keypoint definitions as keyword arguments of `register_topdown_keypoint_dataset`."""
    return _as_arguments(get_crowdpose_keypoint_metadata())


@dataclass(frozen=True)
class KeypointInfo:
    """The keypoint facts a top-down model, its data and its evaluation share.

    ``source`` says where each came from (config key, dataset metadata or COCO defaults), for errors.
    """

    num_keypoints: int
    flip_pairs: Tuple[Tuple[int, int], ...]
    oks_sigmas: Tuple[float, ...]
    upper_body_ids: Tuple[int, ...]
    source: str = ""


def _registered(name: str) -> bool:
    # MetadataCatalog.get() would create an empty entry for an unknown name: ask the lists first.
    return name in DatasetCatalog.list() or name in MetadataCatalog.list()


def _keypoint_count(meta) -> Optional[int]:
    for key in ("keypoint_names", "keypoint_oks_sigmas"):
        value = meta.get(key, None)
        if value is not None:
            return len(value)
    return None


def _pairs_of(meta) -> Optional[List[Tuple[int, int]]]:
    if meta.get("keypoint_flip_pairs", None) is not None:
        return [(int(a), int(b)) for a, b in meta.keypoint_flip_pairs]
    if meta.get("keypoint_flip_map", None) is not None and meta.get("keypoint_names", None) is not None:
        return flip_map_to_flip_pairs(meta.keypoint_names, meta.keypoint_flip_map)
    return None


def _upper_of(meta) -> Optional[List[int]]:
    if meta.get("keypoint_upper_body_ids", None) is not None:
        return [int(i) for i in meta.keypoint_upper_body_ids]
    if meta.get("keypoint_names", None) is not None:
        return guess_body_part_ids(meta.keypoint_names)[0]
    return None


def resolve_keypoint_metadata(cfg: Any = None, dataset_names: Optional[Sequence[str]] = None) -> KeypointInfo:
    """Flip pairs, OKS sigmas and upper-body ids for a config and/or datasets.

    Each comes from the first of: the config key (MODEL.TOPDOWN.FLIP_PAIRS, MODEL.TOPDOWN.OKS_SIGMAS,
    INPUT.TOPDOWN.UPPER_BODY_IDS); the metadata of the first registered dataset among
    ``dataset_names`` (default: DATASETS.TRAIN, then DATASETS.TEST) that has keypoint metadata;
    COCO's, when the model has 17 keypoints. The keypoint count is MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
    (else the dataset's). Every dataset named must have that many keypoints (an error names the one
    that does not); datasets that disagree on flip pairs or sigmas get a warning.
    """
    if dataset_names is None:
        dataset_names = [] if cfg is None else list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    metas = [(n, MetadataCatalog.get(n)) for n in dataset_names if n and _registered(n)]
    metas = [(n, m) for n, m in metas if _keypoint_count(m) is not None]

    k = int(cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS) if cfg is not None else None
    if k is None:
        if not metas:
            raise ValueError(f"datasets {list(dataset_names)} have no keypoint metadata (keypoint_names / keypoint_oks_sigmas)")
        k = _keypoint_count(metas[0][1])
    for name, meta in metas:
        if _keypoint_count(meta) != k:
            raise ValueError(
                f"dataset {name!r} has {_keypoint_count(meta)} keypoints but "
                f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS is {k}"
            )

    coco = k == len(COCO_KEYPOINT_OKS_SIGMAS)
    coco_pairs = flip_map_to_flip_pairs(COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_KEYPOINT_FLIP_MAP)

    def pick(cfg_key: str, cfg_value, read, coco_value, what: str):
        if cfg_value:
            return list(cfg_value), cfg_key
        found = [(n, read(m)) for n, m in metas]
        found = [(n, v) for n, v in found if v is not None]
        if found:
            name, value = found[0]
            for other, v in found[1:]:
                if list(v) != list(value):
                    logger.warning(f"{what} of dataset {other!r} differ from those of {name!r}; using {name!r}'s")
            return list(value), f"{what} of dataset {name!r}"
        if coco:
            return list(coco_value), "COCO defaults"
        raise ValueError(
            f"no {what} for MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS={k}: set {cfg_key} or register the datasets "
            f"{list(dataset_names)} with keypoint metadata (register_topdown_keypoint_dataset)"
        )

    td = cfg.MODEL.TOPDOWN if cfg is not None else None
    pairs, pair_src = pick(
        "MODEL.TOPDOWN.FLIP_PAIRS", td.FLIP_PAIRS if td is not None else None, _pairs_of, coco_pairs, "flip pairs"
    )
    sigmas, sigma_src = pick(
        "MODEL.TOPDOWN.OKS_SIGMAS",
        td.OKS_SIGMAS if td is not None else None,
        lambda m: m.get("keypoint_oks_sigmas", None),
        COCO_KEYPOINT_OKS_SIGMAS,
        "OKS sigmas",
    )
    upper, upper_src = pick(
        "INPUT.TOPDOWN.UPPER_BODY_IDS",
        cfg.INPUT.TOPDOWN.UPPER_BODY_IDS if cfg is not None else None,
        _upper_of,
        COCO_UPPER_BODY_IDS,
        "upper-body ids",
    )
    if len(sigmas) != k:
        raise ValueError(f"{sigma_src} has {len(sigmas)} OKS sigmas for {k} keypoints")
    if any(not float(s) > 0 for s in sigmas):
        raise ValueError(f"{sigma_src}: OKS sigmas must be positive, got {list(sigmas)}")
    for p in pairs:
        if len(p) != 2 or not all(0 <= int(i) < k for i in p):
            raise ValueError(f"{pair_src}: flip pair {list(p)} is not two keypoint indices in [0, {k})")
    bad = [i for i in upper if not 0 <= int(i) < k]
    if bad:
        raise ValueError(f"{upper_src}: ids {bad} outside [0, {k})")
    return KeypointInfo(
        num_keypoints=k,
        flip_pairs=tuple((int(a), int(b)) for a, b in pairs),
        oks_sigmas=tuple(float(s) for s in sigmas),
        upper_body_ids=tuple(int(i) for i in upper),
        source=f"flip pairs: {pair_src}; sigmas: {sigma_src}; upper body: {upper_src}",
    )
