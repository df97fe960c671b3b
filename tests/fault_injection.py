"""Real faults for the reliability tests (docs/reliability.md): copies of the fixtures in a temporary
folder with a corrupt JPEG, an EXIF-rotated image or edited annotations; pickles that leave a marker
file when unpickled; and a log capture that works whatever Detectron2's setup_logger did to
propagation."""
import contextlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from hrnext_d2.data.datasets import register_topdown_keypoint_dataset
from hrnext_d2.data.datasets.keypoint_metadata import coco_keypoint_arguments
from tests.conftest import shared_path

EXIF_ORIENTATION = 0x0112


@contextlib.contextmanager
def captured_logs(name: str, level: int = logging.INFO) -> Iterator[List[str]]:
    """Messages logged to logger `name` (and its children) inside the block."""
    messages: List[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(name)
    handler = _Collect(level)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class _MarkerPayload:
    """Unpickling this object creates a file (what any code in a pickle could do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def write_pickle_with_payload(path: Path, marker: Path, as_torch: bool = False, extra: Optional[dict] = None) -> Path:
    """A checkpoint-looking file ({"model": ..., "payload": <creates `marker` when unpickled>}):
    a raw pickle (.pkl), or with `as_torch` a torch.save file."""
    data = dict(extra or {}, payload=_MarkerPayload(str(marker)))
    if as_torch:
        import torch

        torch.save(data, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(data, f)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to `keep` of its size (0: an empty file), as a job killed while writing leaves it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return path


def copy_coco_fixture(tmp_path: Path) -> Dict[str, Path]:
    """../shared/fixtures/coco copied under tmp_path: {"json", "images", "dets"}."""
    src = shared_path("fixtures", "coco")
    images = tmp_path / "images"
    shutil.copytree(src / "images", images)
    ann = tmp_path / "annotations"
    ann.mkdir()
    shutil.copy(src / "annotations" / "test_coco.json", ann / "test_coco.json")
    shutil.copy(src / "annotations" / "test_coco_det_AP_H_56.json", ann / "dets.json")
    return {"json": ann / "test_coco.json", "images": images, "dets": ann / "dets.json"}


def edit_json(path: Path, edit: Callable[[object], object]) -> Path:
    data = json.loads(Path(path).read_text())
    data = edit(data) or data
    Path(path).write_text(json.dumps(data))
    return path


def write_exif_rotated(src: Path, dst: Path, orientation: int = 6) -> None:
    """Save `src`'s pixels as a JPEG whose EXIF orientation tag asks viewers to rotate it."""
    with Image.open(src) as im:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        im.convert("RGB").save(dst, format="JPEG", exif=exif.tobytes(), quality=95)


@contextlib.contextmanager
def registered_coco_dataset(name: str, json_file: Path, image_root: Path, **kwargs) -> Iterator[str]:
    """A COCO-format keypoint dataset registered under `name` for the block."""
    register_topdown_keypoint_dataset(
        name, str(json_file), str(image_root), protocol="coco", **coco_keypoint_arguments(), **kwargs
    )
    try:
        yield name
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
