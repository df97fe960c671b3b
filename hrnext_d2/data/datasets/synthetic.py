"""A synthetic crowded-people keypoint dataset that needs no download.

Why: a quick, self-contained way to train and evaluate the whole top-down pipeline (crops, targets,
HRNeXt, flip test, OKS AP) on a CPU. Each image holds several procedural human figures (limbs as
outlined capsules, a torso, a head with a face, gloved hands and shoes) with the 17 COCO keypoints, standing
over and in front of each other on a cluttered, noisy background.

Facts the annotations obey:
- Figures are painted back to front. A keypoint covered by a later figure has visibility 1, one
  outside the image 0 (written as 0, 0, 0 like COCO), every other one 2. Every keypoint lies inside
  its own figure's silhouette, so "covered" is exact at the keypoint's pixel.
- Figures face the camera: the person's left side is on the image's right, as in COCO. Left limbs
  are drawn lighter than right limbs.
- Keypoints in the json are COCO pixel indices (integer = pixel centre, like cv2 drawing); loading
  goes through `load_topdown_coco_json` (Detectron2's convention: + 0.5) like every COCO-format set.
  `bbox` is the tight box of the figure's whole silhouette inside the image (occluded parts
  included), `area` its pixel count. Splits with masks (`with_masks`) also carry each figure's
  visible region (its silhouette minus what later figures cover) as an RLE `segmentation`.
- Everything is a function of (seed, split, image index, image size): the same arguments give the
  same json and the same image bytes.

Files are cached under `$DETECTRON2_DATASETS/synthetic_crowd/<tag>/<split>_<N>/` (`images/*.jpg` +
`annotations.json`), generated on the first `DatasetCatalog.get` and reused after. A split is written
into a temporary folder and renamed into place, so concurrent processes never see half a split.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .coco import load_topdown_coco_json
from .keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, coco_keypoint_arguments
from .register import register_topdown_keypoint_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "SyntheticCrowdSpec",
    "SYNTHETIC_CROWD_SPLITS",
    "render_synthetic_crowd_image",
    "visible_mask_rle",
    "generate_synthetic_crowd_split",
    "ensure_synthetic_crowd_split",
    "load_synthetic_crowd",
    "register_synthetic_crowd",
]

# Bump when the drawing changes, so old caches are not reused.
GENERATOR_VERSION = 2

# COCO's skeleton (1-based), written into the json's category like the official files.
_COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
_NUM_KEYPOINTS = len(COCO_PERSON_KEYPOINT_NAMES)


@dataclass(frozen=True)
class SyntheticCrowdSpec:
    """What one split of the synthetic dataset is made of (all of it enters the cache tag)."""

    split: str = "train"
    num_images: int = 600
    seed: int = 0
    image_size: Tuple[int, int] = (256, 192)  # (width, height)
    min_people: int = 2
    max_people: int = 5
    # Person height (head top to ankles) as a fraction of the image height.
    min_person_height: float = 0.45
    max_person_height: float = 0.9
    # Probability that a figure is placed partly outside the image.
    truncation_prob: float = 0.15
    # Also write each person's visible region as an RLE `segmentation` (for Mask R-CNN). The images
    # and other annotations are the same as without; the split is cached apart.
    with_masks: bool = False

    def __post_init__(self):
        w, h = (int(v) for v in self.image_size)
        if w < 32 or h < 32:
            raise ValueError(f"SyntheticCrowdSpec.image_size must be at least 32x32, got {self.image_size}")
        if self.num_images < 1:
            raise ValueError(f"SyntheticCrowdSpec.num_images must be >= 1, got {self.num_images}")
        if not 1 <= self.min_people <= self.max_people:
            raise ValueError(
                f"SyntheticCrowdSpec needs 1 <= min_people <= max_people, got {self.min_people}, {self.max_people}"
            )
        if not 0 < self.min_person_height <= self.max_person_height:
            raise ValueError(
                "SyntheticCrowdSpec needs 0 < min_person_height <= max_person_height, got "
                f"{self.min_person_height}, {self.max_person_height}"
            )
        object.__setattr__(self, "image_size", (w, h))

    @property
    def tag(self) -> str:
        """Cache folder name for the parameters shared by the splits of one dataset."""
        w, h = self.image_size
        return (
            f"v{GENERATOR_VERSION}_seed{self.seed}_{w}x{h}_p{self.min_people}-{self.max_people}"
            f"_h{self.min_person_height:g}-{self.max_person_height:g}_t{self.truncation_prob:g}"
            + ("_seg" if self.with_masks else "")
        )

    @property
    def split_dirname(self) -> str:
        return f"{self.split}_{self.num_images}"


# The builtin splits used by configs/quickstart and configs/keypoint_rcnn (sizes chosen so
# generation takes seconds); the "_seg" splits are the same images with person masks.
SYNTHETIC_CROWD_SPLITS: Dict[str, SyntheticCrowdSpec] = {
    "synthetic_crowd_train": SyntheticCrowdSpec(split="train", num_images=600),
    "synthetic_crowd_val": SyntheticCrowdSpec(split="val", num_images=50),
    "synthetic_crowd_seg_train": SyntheticCrowdSpec(split="train", num_images=600, with_masks=True),
    "synthetic_crowd_seg_val": SyntheticCrowdSpec(split="val", num_images=50, with_masks=True),
}


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are multiplied by 16
_SCALE = 1 << _SHIFT


def _pt(p) -> Tuple[int, int]:
    return int(round(float(p[0]) * _SCALE)), int(round(float(p[1]) * _SCALE))


class _Canvas:
    """Draws the same shapes into the RGB image and into one figure's silhouette mask."""

    def __init__(self, image: np.ndarray, mask: np.ndarray):
        self.image = image
        self.mask = mask

    def _both(self, fn, color, *args):
        fn(self.image, *args, color=tuple(int(c) for c in color))
        fn(self.mask, *args, color=1)

    def circle(self, c, r: float, color, outline=None, width: float = 1.2):
        if outline is not None:
            self._both(_fill_circle, outline, c, r + width)
        self._both(_fill_circle, color, c, r)

    def capsule(self, p0, p1, r: float, color, outline=None, width: float = 1.2):
        if outline is not None:
            self._both(_fill_capsule, outline, p0, p1, r + width)
        self._both(_fill_capsule, color, p0, p1, r)

    def polygon(self, pts, color, outline=None, width: float = 1.2):
        pts = np.asarray(pts, dtype=np.float64)
        if outline is not None:
            c = pts.mean(axis=0)
            d = pts - c
            n = np.linalg.norm(d, axis=1, keepdims=True)
            self._both(_fill_polygon, outline, c + d * (n + width) / np.maximum(n, 1e-6))
        self._both(_fill_polygon, color, pts)


def _fill_circle(img, c, r, color):
    cv2.circle(img, _pt(c), max(int(round(r * _SCALE)), 1), color, -1, cv2.LINE_8, _SHIFT)


def _fill_polygon(img, pts, color):
    arr = np.array([_pt(p) for p in pts], dtype=np.int32)
    cv2.fillConvexPoly(img, arr, color, cv2.LINE_8, _SHIFT)


def _fill_capsule(img, p0, p1, r, color):
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    n = np.hypot(*d)
    if n > 1e-6:
        perp = np.array([-d[1], d[0]]) / n * r
        _fill_polygon(img, [p0 + perp, p1 + perp, p1 - perp, p0 - perp], color)
    _fill_circle(img, p0, r, color)
    _fill_circle(img, p1, r, color)


def _hsv_color(rng: np.random.Generator, s_range, v_range, hue=None) -> np.ndarray:
    h = rng.uniform(0, 180) if hue is None else hue
    hsv = np.array([[[h, rng.uniform(*s_range) * 255, rng.uniform(*v_range) * 255]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _shade(color: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(color * factor, 0, 255)


_SKIN_TONES = np.array(
    [[255, 220, 190], [240, 190, 150], [210, 160, 120], [170, 120, 80], [120, 80, 50], [90, 60, 40]],
    dtype=np.float64,
)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Muted low-frequency colour field + clutter shapes + stripes; noise is added at the end."""
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    base = rng.uniform(60, 200, size=(1, 1, 3))
    grid = np.clip(base + rng.normal(0, 35, size=(gh, gw, 3)), 0, 255).astype(np.float32)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    for _ in range(int(rng.integers(4, 12))):
        color = tuple(int(c) for c in np.clip(base[0, 0] + rng.normal(0, 45, 3), 0, 255))
        kind = rng.integers(0, 3)
        if kind == 0:
            x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
            x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.5) * h
            cv2.rectangle(img, _pt((x0, y0)), _pt((x1, y1)), color, -1, cv2.LINE_8, _SHIFT)
        elif kind == 1:
            c = (rng.uniform(0, w), rng.uniform(0, h))
            cv2.circle(img, _pt(c), int(rng.uniform(0.03, 0.2) * h * _SCALE), color, -1, cv2.LINE_8, _SHIFT)
        else:
            p0 = (rng.uniform(0, w), rng.uniform(0, h))
            p1 = (rng.uniform(0, w), rng.uniform(0, h))
            cv2.line(img, _pt(p0), _pt(p1), color, int(rng.integers(1, 4)), cv2.LINE_8, _SHIFT)
    return img


def _rot(v: np.ndarray, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _sample_pose(rng: np.random.Generator, height: float):
    """Keypoints (17, 2) of a figure with its neck at the origin, plus the sizes used to draw it.

    Image axes: x right, y down. The figure faces the camera, so its left side is at +x.
    """
    T = height / 3.15  # torso length (neck to mid-hip)
    lean = float(np.clip(rng.normal(0, 0.12), -0.4, 0.4))
    down = _rot(np.array([0.0, 1.0]), lean)  # body axis, pointing to the hips
    left = np.array([down[1], -down[0]])  # unit vector to the figure's left (+x when upright)

    neck = np.zeros(2)
    hip_mid = neck + T * down
    sw, hw = 0.40 * T, 0.24 * T
    l_sh, r_sh = neck + sw * left + 0.06 * T * down, neck - sw * left + 0.06 * T * down
    l_hip, r_hip = hip_mid + hw * left, hip_mid - hw * left

    def limb(root, side, a_range, bend_range, l1, l2):
        a1 = rng.uniform(*a_range)
        a2 = a1 + rng.uniform(*bend_range)
        out = side * left
        d1 = np.cos(a1) * down + np.sin(a1) * out
        d2 = np.cos(a2) * down + np.sin(a2) * out
        mid = root + l1 * d1
        return mid, mid + l2 * d2

    arms, legs = [], []
    for side in (1.0, -1.0):  # left, right
        arms.append(limb(l_sh if side > 0 else r_sh, side, (-0.5, 2.7), (-2.3, 2.3), 0.56 * T, 0.52 * T))
        if rng.random() < 0.12:  # a raised / kicking leg
            a_range, bend = (0.5, 1.5), (-1.4, 0.2)
        else:
            a_range, bend = (-0.25, 0.55), (-0.6, 0.35)
        legs.append(limb(l_hip if side > 0 else r_hip, side, a_range, bend, 0.74 * T, 0.70 * T))

    # Head: tilted a little, turned a little (yaw moves the face sideways).
    R = 0.30 * T
    head_dir = _rot(down, float(np.clip(rng.normal(0, 0.15), -0.45, 0.45)))
    head_left = np.array([head_dir[1], -head_dir[0]])
    head_c = neck - (R + 0.14 * T) * head_dir
    yaw = float(rng.uniform(-0.3, 0.3))

    def on_head(x, y):  # x along the head's left axis, y downwards, in head radii
        return head_c + R * (x * head_left + y * head_dir)

    kpts = np.array([
        on_head(yaw * 0.9, 0.22),  # nose
        on_head(0.40 + yaw * 0.6, -0.18),  # left eye
        on_head(-0.40 + yaw * 0.6, -0.18),  # right eye
        on_head(1.0 + yaw * 0.25, 0.0),  # left ear
        on_head(-1.0 + yaw * 0.25, 0.0),  # right ear
        l_sh, r_sh,
        arms[0][0], arms[1][0], arms[0][1], arms[1][1],
        l_hip, r_hip,
        legs[0][0], legs[1][0], legs[0][1], legs[1][1],
    ])
    sizes = {"T": T, "R": R, "head_c": head_c, "head_dir": head_dir, "head_left": head_left,
             "left": left, "down": down}
    return kpts, sizes


def _draw_figure(canvas: _Canvas, rng: np.random.Generator, kpts: np.ndarray, sizes: dict) -> None:
    """Paints one figure (legs, torso, arms, head) into canvas; kpts must lie inside what is drawn."""
    T, R = sizes["T"], sizes["R"]
    shirt = _hsv_color(rng, (0.55, 1.0), (0.55, 1.0))
    pants = _hsv_color(rng, (0.45, 1.0), (0.35, 0.9))
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    shoe = _hsv_color(rng, (0.0, 0.6), (0.1, 0.35))
    hair = _hsv_color(rng, (0.2, 0.8), (0.05, 0.5))
    glove = _hsv_color(rng, (0.7, 1.0), (0.75, 1.0))  # bright hands mark the wrists
    outline = np.clip(np.minimum(shirt, pants) * 0.25, 0, 255)
    lw = max(1.0, 0.045 * T)
    light, dark = 1.15, 0.72  # person's left limbs lighter, right limbs darker

    def shade(c, side):
        return _shade(c, light if side == 0 else dark)

    # Legs (behind the torso): thigh + shin in trouser colour, a shoe at the ankle.
    for side, (hip, knee, ank) in enumerate(((11, 13, 15), (12, 14, 16))):
        c = shade(pants, side)
        canvas.capsule(kpts[hip], kpts[knee], 0.15 * T, c, outline, lw)
        canvas.capsule(kpts[knee], kpts[ank], 0.12 * T, c, outline, lw)
        canvas.circle(kpts[ank], 0.13 * T, shade(shoe, side), outline, lw)
    # Torso: shoulders to hips, widened a little.
    left, down = sizes["left"], sizes["down"]
    torso = [
        kpts[5] + 0.10 * T * left - 0.05 * T * down,
        kpts[11] + 0.08 * T * left + 0.08 * T * down,
        kpts[12] - 0.08 * T * left + 0.08 * T * down,
        kpts[6] - 0.10 * T * left - 0.05 * T * down,
    ]
    canvas.polygon(torso, shirt, outline, lw)
    # Neck.
    canvas.capsule(0.5 * (kpts[5] + kpts[6]), sizes["head_c"], 0.12 * T, skin, outline, lw)
    # Arms: sleeve + bare forearm + gloved hand.
    for side, (sh, el, wr) in enumerate(((5, 7, 9), (6, 8, 10))):
        canvas.capsule(kpts[sh], kpts[el], 0.12 * T, shade(shirt, side), outline, lw)
        canvas.capsule(kpts[el], kpts[wr], 0.095 * T, shade(skin, side), outline, lw)
        canvas.circle(kpts[wr], 0.13 * T, shade(glove, side), outline, lw)
    # Head: ears, face disc with hair on top, eyes, nose, mouth.
    ear_color = _shade(skin, 0.85)
    canvas.circle(kpts[3], 0.26 * R, ear_color, outline, lw)
    canvas.circle(kpts[4], 0.26 * R, ear_color, outline, lw)
    head_c, head_dir, head_left = sizes["head_c"], sizes["head_dir"], sizes["head_left"]
    canvas.circle(head_c, R, skin, outline, lw)
    hair_pts = [head_c + R * (np.cos(a) * head_left - np.sin(a) * head_dir) for a in np.linspace(0.15, np.pi - 0.15, 9)]
    canvas.polygon(hair_pts, hair)
    for eye in (1, 2):
        canvas.circle(kpts[eye], 0.20 * R, (250, 250, 250), (20, 20, 20), max(1.0, 0.06 * R))
        canvas.circle(kpts[eye], 0.09 * R, (15, 15, 40))
    canvas.circle(kpts[0], 0.14 * R, (200, 40, 40), (90, 20, 20), max(1.0, 0.05 * R))
    mouth = kpts[0] + 0.35 * R * head_dir
    canvas.capsule(mouth - 0.25 * R * head_left, mouth + 0.25 * R * head_left, 0.05 * R, (120, 30, 40))


def _box_of(points: np.ndarray, pad: float):
    lo, hi = points.min(axis=0) - pad, points.max(axis=0) + pad
    return np.concatenate([lo, hi])


def _overlap_ok(box, boxes) -> bool:
    """Allows crowding but not one figure hiding most of another."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        barea = (b[2] - b[0]) * (b[3] - b[1])
        if inter / barea > 0.55 or inter / area > 0.55:
            return False
    return True


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)]))


def render_synthetic_crowd_image(spec: SyntheticCrowdSpec, index: int):
    """Draws image `index` of a split.

    Returns (image uint8 (H, W, 3) RGB, instance map int32 (H, W) with 0 = background and i + 1 =
    figure i in painting order, persons: list of dicts with "keypoints" (17, 3) float64 in pixel-index
    coordinates with COCO visibility, "mask" bool (H, W) of the figure's whole silhouette, and
    "figure" = its index in painting order).
    """
    rng = _image_rng(spec.seed, spec.split, index)
    w, h = spec.image_size
    image = _background(rng, w, h)
    n = int(rng.integers(spec.min_people, spec.max_people + 1))

    # Place figures (back to front), allowing overlap but not near-total occlusion.
    placed, boxes = [], []
    for _ in range(n):
        for _attempt in range(20):
            height = rng.uniform(spec.min_person_height, spec.max_person_height) * h
            kpts, sizes = _sample_pose(rng, height)
            head_top = sizes["head_c"] - sizes["R"] * sizes["head_dir"]
            pts = np.vstack([kpts, head_top[None]])
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            if rng.random() < spec.truncation_prob:  # partly outside the image
                ox = rng.uniform(-0.4 * (hi[0] - lo[0]), w - 0.6 * (hi[0] - lo[0]))
                oy = rng.uniform(-0.35 * (hi[1] - lo[1]), h - 0.65 * (hi[1] - lo[1]))
            else:
                ox = rng.uniform(0, max(w - (hi[0] - lo[0]), 1.0))
                oy = rng.uniform(0, max(h - (hi[1] - lo[1]), 1.0))
            shift = np.array([ox, oy]) - lo
            box = _box_of(pts + shift, 0.15 * sizes["T"])
            if _overlap_ok(box, boxes):
                break
        else:
            continue
        sizes["head_c"] = sizes["head_c"] + shift
        placed.append((kpts + shift, sizes))
        boxes.append(box)

    instance_map = np.zeros((h, w), dtype=np.int32)
    persons = []
    for i, (kpts, sizes) in enumerate(placed):
        mask = np.zeros((h, w), dtype=np.uint8)
        _draw_figure(_Canvas(image, mask), rng, kpts, sizes)
        instance_map[mask > 0] = i + 1
        persons.append({"keypoints": kpts, "mask": mask > 0, "figure": i})

    # Visibility: 0 outside the image, 1 under a later figure, else 2.
    for p in persons:
        kp = np.zeros((_NUM_KEYPOINTS, 3), dtype=np.float64)
        kp[:, :2] = p["keypoints"]
        xi = np.round(kp[:, 0]).astype(np.int64)
        yi = np.round(kp[:, 1]).astype(np.int64)
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        owner = np.zeros(_NUM_KEYPOINTS, dtype=np.int64)
        owner[inside] = instance_map[yi[inside], xi[inside]]
        kp[:, 2] = np.where(inside, np.where(owner == p["figure"] + 1, 2, 1), 0)
        kp[~inside] = 0.0
        p["keypoints"] = kp

    # Camera noise and a slight blur, after the labels (they do not move keypoints).
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    noise = rng.normal(0, 6.0, size=image.shape)
    image = np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    return image, instance_map, persons


def visible_mask_rle(instance_map: np.ndarray, figure: int) -> dict:
    """COCO RLE (json-ready, counts as str) of the pixels where figure `figure` is on top."""
    rle = mask_util.encode(np.asfortranarray((instance_map == figure + 1).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotation(p: dict, image_id: int, ann_id: int) -> Optional[dict]:
    kp = p["keypoints"]
    num_kp = int((kp[:, 2] > 0).sum())
    ys, xs = np.nonzero(p["mask"])
    if num_kp == 0 or len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    x1, y1 = int(xs.max()) + 1, int(ys.max()) + 1
    flat = []
    for x, y, v in kp:
        flat += [round(float(x), 2), round(float(y), 2), int(v)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": int(len(xs)),
        "num_keypoints": num_kp,
        "keypoints": flat,
    }


def generate_synthetic_crowd_split(spec: SyntheticCrowdSpec, out_dir: str) -> str:
    """Writes `out_dir/images/*.jpg` and `out_dir/annotations.json` (COCO format); returns the json path."""
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    w, h = spec.image_size
    images, annotations = [], []
    for index in range(spec.num_images):
        image_id = index + 1
        image, instance_map, persons = render_synthetic_crowd_image(spec, index)
        file_name = f"{image_id:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"could not encode synthetic image {file_name}")
        with open(os.path.join(img_dir, file_name), "wb") as f:
            f.write(buf.tobytes())
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for p in persons:
            ann = _annotation(p, image_id, len(annotations) + 1)
            if ann is not None:
                if spec.with_masks:
                    ann["segmentation"] = visible_mask_rle(instance_map, p["figure"])
                annotations.append(ann)
    spec_info = {**spec.__dict__, "image_size": list(spec.image_size)}
    if not spec.with_masks:  # splits without masks: the json as before masks existed
        del spec_info["with_masks"]
    data = {
        "info": {"description": "hrnext_d2 synthetic crowd", "version": GENERATOR_VERSION, "spec": spec_info},
        "images": images,
        "annotations": annotations,
        "categories": [{
            "id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO_PERSON_KEYPOINT_NAMES), "skeleton": _COCO_SKELETON,
        }],
    }
    json_file = os.path.join(out_dir, "annotations.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    return json_file


def _default_root() -> str:
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "synthetic_crowd")


def synthetic_crowd_split_dir(spec: SyntheticCrowdSpec, root: Optional[str] = None) -> str:
    """Where a split lives: `<root>/<tag>/<split>_<N>` (root: `$DETECTRON2_DATASETS/synthetic_crowd`)."""
    return os.path.join(root or _default_root(), spec.tag, spec.split_dirname)


def ensure_synthetic_crowd_split(spec: SyntheticCrowdSpec, root: Optional[str] = None) -> Tuple[str, str]:
    """Generates the split unless cached; returns (json_file, image_root).

    The split is written to a temporary sibling folder and renamed into place: a reader sees either
    nothing or the whole split, and when two processes race, the second rename fails and its copy
    is discarded.
    """
    final = synthetic_crowd_split_dir(spec, root)
    json_file = os.path.join(final, "annotations.json")
    if not os.path.isfile(json_file):
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{spec.split_dirname}.tmp-", dir=parent)
        try:
            logger.info(f"Generating synthetic crowd split {spec.split!r} ({spec.num_images} images) in {final}")
            generate_synthetic_crowd_split(spec, tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isfile(json_file):
                    raise
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return json_file, os.path.join(final, "images")


def load_synthetic_crowd(spec: SyntheticCrowdSpec, root: Optional[str] = None, dataset_name: Optional[str] = None) -> List[dict]:
    """Dataset dicts in Detectron2's convention (keypoints + 0.5; `segmentation` for splits with
    masks), generating the split if needed."""
    json_file, image_root = ensure_synthetic_crowd_split(spec, root)
    return load_topdown_coco_json(json_file, image_root, dataset_name, load_segmentation=spec.with_masks)


def register_synthetic_crowd(name: str, spec: SyntheticCrowdSpec, root: Optional[str] = None) -> None:
    """Registers a split with `register_topdown_keypoint_dataset` (COCO keypoints, COCO protocol,
    ground-truth test boxes); its loader generates the split on first use."""
    root = root or _default_root()  # fixed now, like Detectron2's builtin datasets
    final = synthetic_crowd_split_dir(spec, root)
    register_topdown_keypoint_dataset(
        name,
        os.path.join(final, "annotations.json"),
        os.path.join(final, "images"),
        loader=lambda: load_synthetic_crowd(spec, root, name),
        **coco_keypoint_arguments(),
    )


def _register_builtin() -> None:
    for name, spec in SYNTHETIC_CROWD_SPLITS.items():
        register_synthetic_crowd(name, spec)


_register_builtin()
