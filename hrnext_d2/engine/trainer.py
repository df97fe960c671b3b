"""``Trainer``: Detectron2's ``DefaultTrainer`` for top-down pose estimation and Detectron2 detectors.

What differs from ``DefaultTrainer`` and why:
- data: for TopDownPoseEstimator, an instance-level training stream and a per-image test loader with
  person boxes; for every other meta-architecture (GeneralizedRCNN: Keypoint / Mask R-CNN, ...),
  Detectron2's own loaders (``DatasetMapper`` with keypoints and their flip indices) and evaluation
  by the dataset's keypoint protocol (``build_rcnn_evaluator``: box / mask / keypoint AP);
- optimizer: AdamW with no decay on norms, biases and layer scales (Detectron2 builds SGD only);
- schedule length in epochs (SOLVER.EPOCHS) turned into iterations from the training-set size;
- BatchNorm becomes SyncBN with more than one process ("CPUSyncBN" on CPU: torch's SyncBatchNorm
  refuses CPU tensors), and DDP is built without ``device_ids`` on CPU (Detectron2 passes the local
  rank, which only works for GPUs), so ``--num-gpus N`` on a CPU-only machine trains N processes;
- DDP options from SOLVER.DDP, checked against the model (``ddp.py``); all processes must start
  from the same iteration and weights and end with the same model state (``consistency.py``);
  AMP resumes checkpoints without a GradScaler state (``amp.py``);
- resuming restores the data stream position and the random state, so a resumed run continues
  exactly as an uninterrupted one;
- the best checkpoint by SOLVER.BEST_CHECKPOINT_METRIC is kept (not as a resume point);
- weights load strictly and checkpoints are written atomically (``HRNeXtCheckpointer``); resuming a
  finished run rewrites a missing or unreadable model_final.pth;
- the test sets and their person-box sources are read when the run starts, before training.
"""
import logging
import math
import os
import random
import weakref
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..checkpoint import build_checkpointer
from ..data.build import (
    build_topdown_instance_dicts_from_config,
    build_topdown_test_loader,
    build_topdown_train_loader,
    training_seed,
)
from ..data.test_boxes import check_test_box_sources
from ..evaluation.keypoint_evaluator import TopDownKeypointEvaluator
from ..evaluation.rcnn_evaluation import build_rcnn_evaluator
from ..modeling.meta_arch import is_topdown_architecture
from ..solver import build_optimizer
from .best_checkpointer import BestCheckpointer
from .unreadable_images_hook import UnreadableImagesHook
from .amp import ResumableAMPTrainer
from .consistency import ModelStateAgreementHook, check_same_start
from .ddp import ddp_options

__all__ = ["Trainer", "create_ddp_model", "norm_for_world_size", "apply_epoch_schedule"]

logger = logging.getLogger(__name__)


def norm_for_world_size(cfg: CfgNode, world_size: int) -> CfgNode:
    """MODEL.HRNEXT.NORM for this many processes: "BN" -> "SyncBN" (CUDA) / "CPUSyncBN" (CPU) when
    there are several ("SyncBN" and "nnSyncBN", torch's SyncBatchNorm, -> "CPUSyncBN" on the CPU), and
    any sync BN -> "BN" in a single process."""
    norm = cfg.MODEL.HRNEXT.NORM
    on_cuda = cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available()
    new = norm
    if world_size > 1:
        if norm == "BN" or (norm in ("SyncBN", "nnSyncBN") and not on_cuda):
            new = "SyncBN" if on_cuda else "CPUSyncBN"
    elif norm in ("SyncBN", "naiveSyncBN", "nnSyncBN", "CPUSyncBN"):
        new = "BN"
    if new == norm:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.HRNEXT.NORM = new
    if frozen:
        cfg.freeze()
    logger.info(f"MODEL.HRNEXT.NORM {norm} -> {new} for {world_size} process(es)")
    return cfg


def apply_epoch_schedule(cfg: CfgNode, num_instances: int) -> CfgNode:
    """SOLVER.EPOCHS > 0: MAX_ITER = ceil(EPOCHS x instances / IMS_PER_BATCH); checkpoint and
    evaluation periods given in epochs become iterations the same way."""
    epochs = cfg.SOLVER.EPOCHS
    ckpt_epochs = cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS
    eval_epochs = cfg.TEST.EVAL_PERIOD_EPOCHS
    if epochs <= 0 and ckpt_epochs <= 0 and eval_epochs <= 0:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    bs = cfg.SOLVER.IMS_PER_BATCH

    def to_iters(e: float) -> int:
        return max(1, int(math.ceil(e * num_instances / bs)))

    if epochs > 0:
        cfg.SOLVER.MAX_ITER = to_iters(epochs)
    if ckpt_epochs > 0:
        cfg.SOLVER.CHECKPOINT_PERIOD = to_iters(ckpt_epochs)
    if eval_epochs > 0:
        cfg.TEST.EVAL_PERIOD = to_iters(eval_epochs)
    logger.info(
        f"{num_instances} training instances, batch {bs}: MAX_ITER {cfg.SOLVER.MAX_ITER} "
        f"({epochs} epochs), CHECKPOINT_PERIOD {cfg.SOLVER.CHECKPOINT_PERIOD}, "
        f"TEST.EVAL_PERIOD {cfg.TEST.EVAL_PERIOD}"
    )
    if frozen:
        cfg.freeze()
    return cfg


def _num_training_images(cfg: CfgNode) -> int:
    """Images in DATASETS.TRAIN (the samples of an epoch for a detector), counted only when an epoch
    setting needs them (SOLVER.EPOCHS, SOLVER.CHECKPOINT_PERIOD_EPOCHS, TEST.EVAL_PERIOD_EPOCHS)."""
    if cfg.SOLVER.EPOCHS <= 0 and cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS <= 0 and cfg.TEST.EVAL_PERIOD_EPOCHS <= 0:
        return 0
    return sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Detectron2's ``create_ddp_model`` for any device: ``device_ids`` only for a CUDA model."""
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    if "device_ids" not in kwargs:
        # The current device (set by the launcher): the local rank, or 0 with one GPU per process.
        kwargs["device_ids"] = [torch.cuda.current_device()] if on_cuda else None
    return DistributedDataParallel(model, **kwargs)


def _with_fixed_seed(cfg: CfgNode) -> CfgNode:
    """SEED -1 (random): draw one seed shared by all processes and write it into the config, so the
    data (centre jitter, sampling order, augmentation) is a function of cfg.SEED, which checkpoints
    record for resuming."""
    if cfg.SEED >= 0:
        return cfg
    seed = training_seed(cfg)
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.SEED = seed
    if frozen:
        cfg.freeze()
    logger.info(f"SEED -1: the data pipeline uses seed {seed} (set SEED {seed} to repeat it)")
    return cfg


def _rng_state() -> Dict[str, Any]:
    """Random state as tensors and plain numbers (checkpoints are loaded with weights_only)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer(DefaultTrainer):
    """Top-down pose trainer (see the module docstring for what differs from ``DefaultTrainer``)."""

    def __init__(self, cfg: CfgNode):
        TrainerBase.__init__(self)
        d2_logger = logging.getLogger("detectron2")
        if not d2_logger.isEnabledFor(logging.INFO):  # setup_logger is not called for d2
            setup_logger()
        world_size = comm.get_world_size()
        cfg = self.auto_scale_workers(cfg, world_size)
        cfg = norm_for_world_size(cfg, world_size)
        cfg = _with_fixed_seed(cfg)
        if is_topdown_architecture(cfg):
            instances = build_topdown_instance_dicts_from_config(cfg)
            num_samples = len(instances)
        else:  # Detectron2 detectors train on images with Detectron2's loader
            instances = None
            num_samples = _num_training_images(cfg)
        cfg = apply_epoch_schedule(cfg, num_samples)
        if is_topdown_architecture(cfg):  # a bad test set or detections file stops the run before training
            check_test_box_sources(cfg)

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        if instances is not None:
            data_loader = build_topdown_train_loader(cfg, instances=instances)
        else:
            data_loader = self.build_train_loader(cfg)

        model = create_ddp_model(model, **ddp_options(cfg, model))
        use_amp = cfg.SOLVER.AMP.ENABLED
        if use_amp and not torch.cuda.is_available():
            logger.warning("SOLVER.AMP.ENABLED needs CUDA; training in float32 on this machine")
            use_amp = False
        self._trainer = (ResumableAMPTrainer if use_amp else SimpleTrainer)(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Also reads official mmpose HRNeXt checkpoints given as MODEL.WEIGHTS (converted on the fly).
        self.checkpointer = build_checkpointer(cfg, model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.num_train_instances = num_samples

        self.register_hooks(self.build_hooks())

    def train(self) -> Optional[Dict[str, Any]]:
        """Run training; returns the last evaluation's results (None if none ran), also when
        TEST.EXPECTED_RESULTS is not set (DefaultTrainer returns them only then)."""
        res = super().train()
        return res if res is not None else getattr(self, "_last_eval_results", None)

    # ---- resume ---------------------------------------------------------------------------------
    def resume_or_load(self, resume: bool = True) -> None:
        """``DefaultTrainer.resume_or_load``, then start the data stream at the resumed iteration
        (rebuilt with the checkpoint's data seed when this run drew another one)."""
        self._checkpoint_data_seed = None
        super().resume_or_load(resume=resume)
        check_same_start(self.model, self.start_iter, self.checkpointer, self.cfg.MODEL.WEIGHTS, resume)
        saved_seed = self._checkpoint_data_seed
        if resume and saved_seed is not None and saved_seed != self.cfg.SEED:
            logger.info(f"Resuming with the checkpoint's data seed {saved_seed} (SEED was {self.cfg.SEED})")
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.SEED = saved_seed
            cfg.freeze()
            self.cfg = cfg
            self._trainer.reset_data_loader(lambda: self.build_train_loader(cfg))
        if resume and self.start_iter >= self.max_iter:
            self.checkpointer.restore_final_checkpoint(self.start_iter - 1)
        per_process = self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        sampler = getattr(self.data_loader, "topdown_sampler", None)
        if sampler is not None:
            sampler.set_start_iter(self.start_iter, per_process)

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["rng_state"] = _rng_state()
        ret["world_size"] = comm.get_world_size()
        ret["data_seed"] = int(self.cfg.SEED)
        return ret

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._checkpoint_data_seed = state_dict.get("data_seed")
        rng = state_dict.get("rng_state")
        if rng is None:
            return
        if comm.get_world_size() == 1 and state_dict.get("world_size", 1) == 1:
            _set_rng_state(rng)
        else:
            # Only the main process's state is saved: give each process its own deterministic one.
            base = self.cfg.SEED if self.cfg.SEED >= 0 else 0
            seq = np.random.SeedSequence([base, int(state_dict.get("iteration", 0)), comm.get_rank()])
            seed_all_rng(int(seq.generate_state(1)[0] % (2**31)))

    # ---- hooks ----------------------------------------------------------------------------------
    def build_hooks(self) -> List[Optional[hooks.HookBase]]:
        ret = super().build_hooks()
        metric = self.cfg.SOLVER.BEST_CHECKPOINT_METRIC
        if metric and self.cfg.TEST.EVAL_PERIOD > 0 and comm.is_main_process():
            best = BestCheckpointer(
                self.cfg.TEST.EVAL_PERIOD, self.checkpointer, metric, mode="max"
            )
            idx = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(idx + 1, best)
        if self.cfg.DATALOADER.SKIP_UNREADABLE_IMAGES:
            ret.append(UnreadableImagesHook(period=20))
        if comm.get_world_size() > 1:
            ret.append(ModelStateAgreementHook())
        return ret

    # ---- builders -------------------------------------------------------------------------------
    @staticmethod
    def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
        """Detectron2's linear batch / LR scaling (only when SOLVER.REFERENCE_WORLD_SIZE is set);
        BASE_LR_END is scaled too so the cosine schedule keeps its end ratio."""
        new = DefaultTrainer.auto_scale_workers(cfg, num_workers)
        if new is cfg:
            return cfg
        frozen = new.is_frozen()
        new.defrost()
        new.SOLVER.BASE_LR_END = cfg.SOLVER.BASE_LR_END * new.SOLVER.BASE_LR / cfg.SOLVER.BASE_LR
        if frozen:
            new.freeze()
        return new

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        cfg = norm_for_world_size(cfg, comm.get_world_size())
        model = build_model(cfg)
        n = sum(p.numel() for p in model.parameters())
        logger.info(f"Model {type(model).__name__}: {n:,} parameters")
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        if not is_topdown_architecture(cfg):
            return build_detection_train_loader(cfg)  # DatasetMapper(cfg, True)
        return build_topdown_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        if not is_topdown_architecture(cfg):
            return build_detection_test_loader(cfg, dataset_name)
        return build_topdown_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        """The keypoint protocol of the dataset's metadata (`keypoint_protocol`, set by every
        top-down registration, Detectron2's COCO keypoint builtins included); for detectors,
        ``build_rcnn_evaluator``."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if not is_topdown_architecture(cfg):
            return build_rcnn_evaluator(cfg, dataset_name, output_folder)
        if MetadataCatalog.get(dataset_name).get("keypoint_protocol") is None:
            raise ValueError(
                f"dataset {dataset_name!r} has no 'keypoint_protocol' in its metadata: register it with "
                "hrnext_d2.data.datasets.register_topdown_keypoint_dataset to evaluate keypoints"
            )
        return TopDownKeypointEvaluator(dataset_name, output_dir=output_folder, distributed=True)
