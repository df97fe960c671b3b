"""Top-down data loaders: instance-level training stream and per-image test loader.

Training samples are persons, not images (mmpose's top-down datasets): every non-crowd person with
labelled keypoints and a valid box is one sample, its box turned into center/scale once (with
mmpose 0.23's one-time centre jitter). The infinite shuffled stream is Detectron2's
``TrainingSampler`` stream; each draw also carries its stream position, which seeds that sample's
augmentation, and the stream can start at any iteration, so a resumed run sees exactly the data an
uninterrupted run would have seen.
"""
import itertools
import logging
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch.utils.data as torchdata

from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import InferenceSampler, TrainingSampler
from detectron2.utils import comm

from ..topdown import geometry
from .image_checks import UnreadableImageError
from .instances import select_pose_annotations
from .mapper import TopDownDatasetMapper
from .unreadable_images import SKIPPED_IMAGES_KEY, CountingLoader, UnreadableImageCounter

__all__ = [
    "build_topdown_instance_dicts",
    "build_topdown_instance_dicts_from_config",
    "TopDownInstanceDataset",
    "TopDownTrainingSampler",
    "build_topdown_train_loader",
    "build_topdown_test_loader",
    "training_seed",
]

logger = logging.getLogger(__name__)


def training_seed(cfg) -> int:
    """cfg.SEED when set (>= 0), else one random seed shared by all processes."""
    return int(cfg.SEED) if cfg.SEED >= 0 else int(comm.shared_random_seed())


def _has_keypoints_outside(person: Dict[str, Any], width: float, height: float) -> bool:
    """A labelled joint (mmpose pixel-index coordinates) outside the image's pixels [-0.5, size - 0.5]."""
    labelled = person["joints_visible"][:, 0] > 0
    x, y = person["joints"][labelled, 0], person["joints"][labelled, 1]
    return bool(((x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5)).any())


def build_topdown_instance_dicts(
    dataset_names: Union[str, Sequence[str]],
    *,
    num_keypoints: int,
    image_size: Sequence[int],
    padding: float = 1.25,
    center_jitter_prob: float = 0.0,
    seed: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """One dict per training person: ``file_name, image_id, height, width, bbox (clean XYWH), center,
    scale (float32 (2,)), joints, joints_visible (float32 (K, 3), mmpose coordinates), area``.

    The centre jitter of mmpose 0.23's ``_xywh2cs`` (probability ``center_jitter_prob``) is drawn
    here, once, from a generator seeded with ``seed``.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    instances: List[Dict[str, Any]] = []
    for name in dataset_names:
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise ValueError(f"Dataset {name!r} is empty")
        dropped: Counter = Counter()
        outside = 0
        n_before = len(instances)
        for d in dicts:
            persons, drop = select_pose_annotations(d, num_keypoints)
            dropped.update(drop)
            outside += sum(_has_keypoints_outside(p, d["width"], d["height"]) for p in persons)
            for p in persons:
                instances.append(
                    {
                        "file_name": d["file_name"],
                        "image_id": d.get("image_id"),
                        "height": d["height"],
                        "width": d["width"],
                        "dataset_name": name,
                        **p,
                    }
                )
        kept = len(instances) - n_before
        reasons = ", ".join(f"{v} {k}" for k, v in sorted(dropped.items())) or "none"
        flagged = (
            f"; {outside} of the kept persons have labelled keypoints outside the image (kept, as mmpose does)"
            if outside
            else ""
        )
        logger.info(
            f"Top-down training instances from {name}: {kept} persons in {len(dicts)} images; "
            f"dropped {sum(dropped.values())} annotations ({reasons}){flagged}"
        )
    if not instances:
        raise ValueError(f"No training instances (persons with keypoints) in {list(dataset_names)}")

    boxes = np.array([inst["bbox"] for inst in instances], dtype=np.float64)
    rng = np.random.default_rng(seed) if center_jitter_prob > 0 else None
    centers, scales = geometry.box_xywh_to_center_scale(
        boxes,
        image_size=tuple(image_size),
        padding=padding,
        jitter_rng=rng,
        jitter_prob=center_jitter_prob,
    )
    for inst, c, s in zip(instances, centers, scales):
        inst["center"] = np.asarray(c, dtype=np.float32)
        inst["scale"] = np.asarray(s, dtype=np.float32)
    return instances


class TopDownInstanceDataset(torchdata.Dataset):
    """Map-style dataset of person instances, mapped on access.

    The key is an index, or ``(index, aug_seed)`` as produced by ``TopDownTrainingSampler``; the
    seed is handed to the mapper so a sample's augmentation depends only on its stream position.
    With ``skip_unreadable``, a sample whose image cannot be read is replaced by the next instance
    (index + 1, ...) whose image reads, with the same seed; the skipped files are listed on the
    sample under ``SKIPPED_IMAGES_KEY`` (see ``hrnext_d2.data.unreadable_images``).
    """

    def __init__(self, instances: List[Dict[str, Any]], mapper: TopDownDatasetMapper, skip_unreadable: bool = False):
        self._instances = DatasetFromList(instances, copy=True, serialize=True)
        self._mapper = mapper
        self._skip_unreadable = bool(skip_unreadable)
        self._unreadable: set = set()  # files found unreadable by this process

    def __len__(self) -> int:
        return len(self._instances)

    def _instance(self, index: int, aug_seed: Optional[Sequence[int]]) -> Dict[str, Any]:
        d = self._instances[index]
        if aug_seed is not None:
            d["aug_seed"] = list(aug_seed)
        return d

    def __getitem__(self, key: Union[int, Tuple[int, Sequence[int]]]) -> Dict[str, Any]:
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        if not self._skip_unreadable:
            return self._mapper(self._instance(index, aug_seed))
        skipped: List[str] = []
        for step in range(len(self)):
            d = self._instance((index + step) % len(self), aug_seed)
            if d["file_name"] in self._unreadable:
                skipped.append(d["file_name"])
                continue
            try:
                out = self._mapper(d)
            except UnreadableImageError as e:
                logger.warning(f"{e}; skipped (DATALOADER.SKIP_UNREADABLE_IMAGES), the next instance is used")
                self._unreadable.add(d["file_name"])
                skipped.append(d["file_name"])
                continue
            if skipped:
                out[SKIPPED_IMAGES_KEY] = skipped
            return out
        raise UnreadableImageError(self._instances[index]["file_name"], "no image of the training set can be read")


class TopDownTrainingSampler(TrainingSampler):
    """Detectron2's infinite shuffled stream, yielding ``(index, (seed, stream position))``.

    ``set_start_iter(it, batch_size_per_process)`` starts every process's share of the stream
    where an uninterrupted run would be after ``it`` iterations (used on resume).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._start = 0  # draws per process to skip

    def set_start_iter(self, start_iter: int, batch_size_per_process: int) -> None:
        self._start = int(start_iter) * int(batch_size_per_process)

    def __iter__(self) -> Iterator[Tuple[int, Tuple[int, int]]]:
        first = self._rank + self._start * self._world_size
        stream = itertools.islice(enumerate(self._infinite_indices()), first, None, self._world_size)
        for position, index in stream:
            yield index, (self._seed, position)


def build_topdown_instance_dicts_from_config(cfg) -> List[Dict[str, Any]]:
    """The training instances of ``cfg.DATASETS.TRAIN`` with the config's crop and jitter settings."""
    return build_topdown_instance_dicts(
        cfg.DATASETS.TRAIN,
        num_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS,
        image_size=cfg.INPUT.TOPDOWN.IMAGE_SIZE,
        padding=cfg.MODEL.TOPDOWN.BOX_PADDING,
        center_jitter_prob=cfg.INPUT.TOPDOWN.CENTER_JITTER_PROB,
        seed=training_seed(cfg),
    )


def build_topdown_train_loader(
    cfg, *, instances: Optional[List[Dict[str, Any]]] = None, mapper: Optional[TopDownDatasetMapper] = None
) -> torchdata.DataLoader:
    """Instance-level training loader: lists of ``IMS_PER_BATCH / world size`` mapped samples.

    The returned loader exposes its sampler as ``loader.topdown_sampler`` (for resuming); with
    DATALOADER.SKIP_UNREADABLE_IMAGES it also counts skipped images in ``loader.unreadable_counter``.
    """
    seed = training_seed(cfg)
    if instances is None:
        instances = build_topdown_instance_dicts_from_config(cfg)
    if mapper is None:
        mapper = TopDownDatasetMapper(cfg, True)
    skip = cfg.DATALOADER.SKIP_UNREADABLE_IMAGES
    dataset = TopDownInstanceDataset(instances, mapper, skip_unreadable=skip)
    sampler = TopDownTrainingSampler(len(dataset), shuffle=True, seed=seed)
    loader = build_detection_train_loader(
        dataset,
        mapper=None,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        # The loader's own generator: creating its iterator must not draw from torch's global
        # random state (a resumed run creates it at a different time than an uninterrupted one).
        seed=seed,
    )
    if skip:
        loader = CountingLoader(loader, UnreadableImageCounter())
    loader.topdown_sampler = sampler
    loader.topdown_num_instances = len(dataset)
    return loader


def build_topdown_test_loader(
    cfg, dataset_name: str, mapper: Optional[TopDownDatasetMapper] = None
) -> torchdata.DataLoader:
    """Test loader of TEST.IMS_PER_BATCH images per batch; each image carries ``instances`` with
    ``pred_boxes`` + ``scores``."""
    dicts = DatasetCatalog.get(dataset_name)
    if mapper is None:
        mapper = TopDownDatasetMapper(cfg, False, dataset_name=dataset_name, dataset_dicts=dicts)
    if cfg.TEST.IMS_PER_BATCH < 1:
        raise ValueError(f"TEST.IMS_PER_BATCH must be >= 1, got {cfg.TEST.IMS_PER_BATCH}")
    return build_detection_test_loader(
        dicts,
        mapper=mapper,
        sampler=InferenceSampler(len(dicts)),
        batch_size=int(cfg.TEST.IMS_PER_BATCH),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
