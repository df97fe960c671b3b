"""What ``TopDownPredictor`` accepts: the image in the predictor contract (BGR uint8 (H, W, 3)),
converted from the layouts and types whose meaning is unambiguous, and validated person boxes.

Image conversions (anything else is an error that says what was given):
- layout: (H, W, 3) in ``image_format`` order ("BGR", as OpenCV reads, or "RGB", as PIL does);
  (H, W, 4) with alpha last (BGRA / RGBA by ``image_format``; alpha dropped); (H, W) and (H, W, 1)
  grey (replicated to three channels);
- type: uint8 as is; bool refused (0/1 or 0/255 is a guess); uint16 scaled from its full range
  0..65535; other integer types when every value is in 0..255; floats with every value in [0, 1] as
  0..1 images (x 255, rounded), floats in [0, 255] with a value above 1 as 0..255 images (rounded),
  anything else (negative, above 255, NaN / inf: e.g. a normalised image) refused.

Boxes (XYXY in the image's pixels) must be finite, have a positive width and height and overlap the
image; others are dropped with a warning that counts them, and an error when none is left. Boxes
partly outside the image are kept (mmpose keeps them; the crop is padded).
"""
import logging
from typing import Optional, Tuple

import numpy as np

__all__ = ["to_bgr_uint8", "validate_person_boxes"]

logger = logging.getLogger(__name__)

CHANNEL_ORDERS = ("BGR", "RGB")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    dtype = image.dtype
    if dtype == np.uint8:
        return image
    if dtype == np.bool_:
        raise ValueError("image of dtype bool: 0/1 or 0/255 is ambiguous; pass uint8 0..255")
    if dtype == np.uint16:
        return np.round(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"image of dtype {dtype} with values in [{lo}, {hi}]: only 0..255 is unambiguous")
        return image.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError(f"image of dtype {dtype} holds NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(image.astype(np.float64) * 255.0).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return np.round(image).astype(np.uint8)
        raise ValueError(
            f"image of dtype {dtype} with values in [{lo:.4g}, {hi:.4g}]: expected 0..1 or 0..255 "
            "(a normalised image? pass the pixels before normalisation)"
        )
    raise ValueError(f"image of dtype {dtype}: expected uint8 (or an integer / float type with a 0..255 or 0..1 range)")


def to_bgr_uint8(image, image_format: str = "BGR") -> np.ndarray:
    """The image as contiguous BGR uint8 (H, W, 3); see the module docstring for what is converted.

    Args:
        image: a numpy array (or anything ``np.asarray`` takes) in one of the layouts above.
        image_format: channel order of a 3- or 4-channel image, "BGR" or "RGB".
    """
    if image_format not in CHANNEL_ORDERS:
        raise ValueError(f"image_format must be one of {CHANNEL_ORDERS}, got {image_format!r}")
    if image is None:
        raise ValueError("image is None (a failed cv2.imread returns None: check the path)")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim != 3 or array.shape[2] not in (3, 4):
        hint = " (channels first? use image.transpose(1, 2, 0))" if array.ndim == 3 and array.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"image of shape {array.shape}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4){hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image of shape {array.shape}")
    array = _to_uint8(array[:, :, :3])
    if image_format == "RGB":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def validate_person_boxes(
    boxes_xyxy, scores: Optional[np.ndarray], image_hw: Tuple[int, int]
) -> Tuple[np.ndarray, np.ndarray]:
    """(boxes float32 (M, 4), scores float32 (M,)) of the usable boxes; see the module docstring.

    Args:
        boxes_xyxy: (N, 4) boxes (a single box may be given as (4,)); N may be 0.
        scores: (N,) box scores, or None for 1.
        image_hw: (height, width) of the image the boxes are in.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    elif boxes.ndim == 1 and boxes.shape[0] == 4:
        boxes = boxes.reshape(1, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy of shape {boxes.shape}: expected (N, 4) boxes x1, y1, x2, y2")
    n = len(boxes)
    if scores is None:
        scores = np.ones(n, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"{n} boxes but {len(scores)} scores")
    if n == 0:
        return boxes.astype(np.float32), scores.astype(np.float32)
    h, w = image_hw
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    with np.errstate(invalid="ignore"):
        sized = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        inside = sized & (boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    if not inside.all():
        counts = (
            f"{int((~finite).sum())} with a non-finite coordinate or score, "
            f"{int((finite & ~sized).sum())} without a positive width and height, "
            f"{int((sized & ~inside).sum())} entirely outside the {w}x{h} image"
        )
        if not inside.any():
            raise ValueError(f"none of the {n} person boxes is usable: {counts}")
        logger.warning(f"Dropped {int((~inside).sum())} of {n} person boxes: {counts}")
    return boxes[inside].astype(np.float32), scores[inside].astype(np.float32)
