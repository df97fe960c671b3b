"""Reading an image and checking it against its annotation: one check for training, test and
tools/check_dataset.py.

EXIF orientation is applied when decoding, as Detectron2's ``read_image`` and mmpose's loader
(``cv2.imread`` through mmcv) both do, so the pixels are the reference's. An annotation whose
width/height disagree with the decoded pixels is refused with the file named: a crop computed from
such an annotation lands on the wrong pixels. When the file carries an EXIF orientation tag that
rotates it by 90 degrees and the annotation has the unrotated size, the message says so.
"""
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image

from detectron2.data import detection_utils as utils
from detectron2.data.detection_utils import SizeMismatchError

__all__ = [
    "UnreadableImageError",
    "ImageSizeMismatchError",
    "read_image_or_fail",
    "exif_orientation",
    "check_image_size",
    "read_annotated_image",
    "ImageProblem",
    "find_image_problems",
]

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height


class UnreadableImageError(RuntimeError):
    """An image file that is missing, truncated or does not decode."""

    def __init__(self, file_name: str, reason: str):
        super().__init__(f"Cannot read image {file_name!r}: {reason}")
        self.file_name = file_name


class ImageSizeMismatchError(SizeMismatchError):
    """Decoded pixels whose size differs from the annotation's width / height."""


def read_image_or_fail(file_name: str, image_format: str) -> np.ndarray:
    """Detectron2's ``read_image`` (EXIF orientation applied), with an error that names the file when
    it is missing or corrupt."""
    try:
        image = utils.read_image(file_name, format=image_format)
    except Exception as e:  # PIL / IO errors do not always name the file
        raise UnreadableImageError(file_name, f"{type(e).__name__}: {e}") from e
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise UnreadableImageError(file_name, "decoded to an empty array")
    return image


def exif_orientation(file_name: str) -> Optional[int]:
    """The file's EXIF orientation tag (1-8), or None when it has none or cannot be read."""
    try:
        with Image.open(file_name) as im:
            value = im.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - only used to explain a size mismatch
        return None
    return int(value) if value is not None else None


def check_image_size(file_name: str, image: np.ndarray, width: Any, height: Any) -> None:
    """The decoded ``image`` (H, W, C) must be ``width`` x ``height`` as annotated."""
    h, w = image.shape[:2]
    if (w, h) == (int(width), int(height)):
        return
    got, annotated = f"{w}x{h}", f"{int(width)}x{int(height)}"
    orientation = exif_orientation(file_name)
    if (h, w) == (int(width), int(height)) and orientation in _EXIF_TRANSPOSED:
        reason = (
            f"its EXIF orientation tag ({orientation}) rotates it to {got} when decoded (as Detectron2 and "
            f"OpenCV read it), but the annotation says {annotated}, the size of the unrotated pixels. Save the "
            "image with the rotation applied and the tag removed, with annotations for the rotated pixels "
            "(or annotate the size and keypoints of the decoded image)"
        )
    elif (h, w) == (int(width), int(height)):
        reason = f"decoded to {got} pixels, the annotation says {annotated} (width and height swapped)"
    else:
        reason = f"decoded to {got} pixels, the annotation says {annotated}"
    raise ImageSizeMismatchError(f"Image {file_name!r}: {reason}. Check the width/height of the annotation file.")


def read_annotated_image(dataset_dict: Dict[str, Any], image_format: str) -> np.ndarray:
    """The image of a dataset (or training-instance) dict, decoded and checked against its
    ``width`` / ``height`` when the dict has them."""
    file_name = dataset_dict["file_name"]
    image = read_image_or_fail(file_name, image_format)
    if "width" in dataset_dict and "height" in dataset_dict:
        check_image_size(file_name, image, dataset_dict["width"], dataset_dict["height"])
    return image


class ImageProblem(NamedTuple):
    """One image that fails ``read_annotated_image``: kind "unreadable" or "size", and the message."""

    file_name: str
    kind: str
    message: str


def _problem(dataset_dict: Dict[str, Any]) -> Optional[ImageProblem]:
    try:
        read_annotated_image(dataset_dict, "BGR")
    except UnreadableImageError as e:
        return ImageProblem(dataset_dict["file_name"], "unreadable", str(e))
    except SizeMismatchError as e:
        return ImageProblem(dataset_dict["file_name"], "size", str(e))
    return None


def find_image_problems(dataset_dicts: Sequence[Dict[str, Any]], num_workers: int = 4) -> List[ImageProblem]:
    """Decode every image of a dataset (each file once) with the training / test check; the
    problems in dataset order. Decoding runs in ``num_workers`` threads (PIL releases the GIL)."""
    unique = list({d["file_name"]: d for d in dataset_dicts}.values())
    if num_workers > 1:
        with ThreadPoolExecutor(num_workers) as pool:
            found = list(pool.map(_problem, unique))
    else:
        found = [_problem(d) for d in unique]
    return [p for p in found if p is not None]
