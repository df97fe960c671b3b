"""A synthetic crowd video: the synthetic dataset's figures walking across a still background.

Why: tracking and smoothing need frames whose people keep their identity and whose true keypoints are
known in every frame; no download, seconds to make. Figures are drawn with the still generator's
drawing (hrnext_d2/data/datasets/synthetic.py), so a model trained on the synthetic crowd sees the
same kind of people.

Facts the ground truth obeys (as the still generator's):
- Each figure keeps its pose, size and colours; it moves by a constant velocity plus a small vertical
  bob, bounces off the image borders, and figures walking in opposite directions cross each other.
- Figures are painted in a fixed depth order (figure 0 at the back). A keypoint covered by a later
  figure has visibility 1, one outside the image 0 (written as 0, 0, 0), every other one 2.
- Keypoints are pixel indices (COCO); boxes are the tight box of the figure's silhouette in the image.
- Each frame gets fresh camera noise; everything is a function of the spec.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ...utils.video_io import video_fourcc
from .keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES
from .synthetic import _background, _Canvas, _draw_figure, _sample_pose  # the still generator's drawing

__all__ = [
    "SyntheticCrowdVideoSpec",
    "render_synthetic_crowd_video",
    "write_synthetic_crowd_video",
]

_NUM_KEYPOINTS = len(COCO_PERSON_KEYPOINT_NAMES)
# Vertical bob of a walker (a step every half period).
_BOB_HZ = 1.0


@dataclass(frozen=True)
class SyntheticCrowdVideoSpec:
    """What a synthetic crowd video is made of."""

    num_frames: int = 48
    fps: float = 25.0
    seed: int = 0
    image_size: Tuple[int, int] = (256, 192)  # (width, height)
    num_people: int = 3
    # Person height (head top to ankles) as a fraction of the image height.
    min_person_height: float = 0.55
    max_person_height: float = 0.8
    # Walking speed in image widths per second, and the amplitude of the vertical bob (1 Hz) in
    # person heights.
    speed: float = 0.25
    bob: float = 0.02

    def __post_init__(self):
        w, h = (int(v) for v in self.image_size)
        if w < 32 or h < 32:
            raise ValueError(f"SyntheticCrowdVideoSpec.image_size must be at least 32x32, got {self.image_size}")
        if self.num_frames < 1 or self.num_people < 1:
            raise ValueError(
                f"SyntheticCrowdVideoSpec needs num_frames >= 1 and num_people >= 1, got {self.num_frames}, {self.num_people}"
            )
        if not self.fps > 0:
            raise ValueError(f"SyntheticCrowdVideoSpec.fps must be > 0, got {self.fps}")
        object.__setattr__(self, "image_size", (w, h))


@dataclass
class _Walker:
    kpts: np.ndarray  # (17, 2) at the start position
    sizes: dict
    colour_seed: int
    velocity: float  # pixels per frame along x
    bob: float  # pixels
    phase: float
    fps: float
    extent: Tuple[float, float, float, float]  # x0, y0, x1, y1 of the figure at its start position


def _walkers(spec: SyntheticCrowdVideoSpec, rng: np.random.Generator) -> List[_Walker]:
    w, h = spec.image_size
    walkers = []
    for i in range(spec.num_people):
        height = rng.uniform(spec.min_person_height, spec.max_person_height) * h
        kpts, sizes = _sample_pose(rng, height)
        head_top = sizes["head_c"] - sizes["R"] * sizes["head_dir"]
        pts = np.vstack([kpts, head_top[None]])
        pad = 0.15 * sizes["T"]
        lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
        # Start spread over the width, feet near the bottom; alternate directions so that paths cross.
        x0 = (i + 0.5) / spec.num_people * w - 0.5 * (hi[0] - lo[0])
        y0 = h - (hi[1] - lo[1]) - rng.uniform(0.0, 0.1) * h
        shift = np.array([x0, y0]) - lo
        sizes = dict(sizes, head_c=sizes["head_c"] + shift)
        speed = spec.speed * w / spec.fps * rng.uniform(0.7, 1.3)
        walkers.append(
            _Walker(
                kpts=kpts + shift,
                sizes=sizes,
                colour_seed=int(rng.integers(2**31)),
                velocity=speed if i % 2 == 0 else -speed,
                bob=spec.bob * height,
                phase=float(rng.uniform(0, 2 * np.pi)),
                fps=float(spec.fps),
                extent=(lo[0] + shift[0], lo[1] + shift[1], hi[0] + shift[0], hi[1] + shift[1]),
            )
        )
    return walkers


def _offset(walker: _Walker, frame: int, width: int) -> np.ndarray:
    """Displacement of a walker at `frame`: constant speed, reflected at the image borders."""
    x0, _, x1, _ = walker.extent
    lo, hi = -x0, width - x1  # allowed x displacements keeping the figure's box inside
    if hi <= lo:
        dx = 0.0
    else:
        span = hi - lo
        u = (walker.velocity * frame - lo) % (2 * span)  # triangle wave over [lo, hi]
        dx = lo + (u if u <= span else 2 * span - u)
    dy = walker.bob * np.sin(2 * np.pi * _BOB_HZ * frame / walker.fps + walker.phase)
    return np.array([dx, dy])


def render_synthetic_crowd_video(spec: SyntheticCrowdVideoSpec) -> Iterator[Tuple[np.ndarray, List[Dict]]]:
    """Yields (frame uint8 (H, W, 3) RGB, persons) per frame.

    persons: one dict per figure in view with "track_id" (the figure's index, the same in every
    frame), "keypoints" (17, 3) float64 pixel indices with COCO visibility, and "bbox" XYXY (float,
    tight box of the silhouette, exclusive end).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 20240]))
    w, h = spec.image_size
    background = _background(rng, w, h)
    walkers = _walkers(spec, rng)
    for frame in range(spec.num_frames):
        image = background.copy()
        instance_map = np.zeros((h, w), dtype=np.int32)
        placed = []
        for i, walker in enumerate(walkers):
            d = _offset(walker, frame, w)
            kpts = walker.kpts + d
            sizes = dict(walker.sizes, head_c=walker.sizes["head_c"] + d)
            mask = np.zeros((h, w), dtype=np.uint8)
            _draw_figure(_Canvas(image, mask), np.random.default_rng(walker.colour_seed), kpts, sizes)
            instance_map[mask > 0] = i + 1
            placed.append((i, kpts, mask > 0))
        persons = []
        for i, kpts, mask in placed:
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            kp = np.zeros((_NUM_KEYPOINTS, 3), dtype=np.float64)
            kp[:, :2] = kpts
            xi, yi = np.round(kpts[:, 0]).astype(np.int64), np.round(kpts[:, 1]).astype(np.int64)
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            owner = np.zeros(_NUM_KEYPOINTS, dtype=np.int64)
            owner[inside] = instance_map[yi[inside], xi[inside]]
            kp[:, 2] = np.where(inside, np.where(owner == i + 1, 2, 1), 0)
            kp[~inside] = 0.0
            bbox = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
            persons.append({"track_id": i, "keypoints": kp, "bbox": bbox})
        noise_rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 20241, frame]))
        image = cv2.GaussianBlur(image, (3, 3), 0.6)
        image = np.clip(image.astype(np.float64) + noise_rng.normal(0, 6.0, size=image.shape), 0, 255).astype(np.uint8)
        yield image, persons


def write_synthetic_crowd_video(
    spec: SyntheticCrowdVideoSpec, video_path: str, annotations_path: Optional[str] = None
) -> List[List[Dict]]:
    """Writes the video (codec by extension: hrnext_d2/utils/video_io.py) and, when asked, its ground truth
    as COCO keypoints json (one image per frame, image id = frame index, annotations with
    `track_id`). Returns the persons of every frame (as `render_synthetic_crowd_video`)."""
    w, h = spec.image_size
    os.makedirs(os.path.dirname(os.path.abspath(video_path)), exist_ok=True)
    writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*video_fourcc(video_path)), float(spec.fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"could not open {video_path!r} for writing with codec {video_fourcc(video_path)!r}")
    frames: List[List[Dict]] = []
    try:
        for image, persons in render_synthetic_crowd_video(spec):
            writer.write(np.ascontiguousarray(image[:, :, ::-1]))
            frames.append(persons)
    finally:
        writer.release()
    if annotations_path:
        images, annotations = [], []
        for index, persons in enumerate(frames):
            images.append({"id": index, "file_name": f"frame_{index:06d}.jpg", "frame": index, "width": w, "height": h})
            for p in persons:
                x0, y0, x1, y1 = (float(v) for v in p["bbox"])
                annotations.append({
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": 1,
                    "iscrowd": 0,
                    "track_id": int(p["track_id"]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "num_keypoints": int((p["keypoints"][:, 2] > 0).sum()),
                    "keypoints": [round(float(v), 2) for v in p["keypoints"].reshape(-1)],
                })
        data = {
            "info": {"description": "hrnext_d2 synthetic crowd video", "fps": spec.fps},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINT_NAMES)}],
        }
        with open(annotations_path, "w") as f:
            json.dump(data, f)
    return frames
