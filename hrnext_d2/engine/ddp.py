"""DistributedDataParallel options from the config, checked against the model before training.

DDP (without ``find_unused_parameters``) fails at the second iteration ("Expected to have finished
reduction in the prior iteration") when a parameter gets no gradient. HRNeXt builds only the fuse
layers its OUT_FEATURES read (see ``HRNeXt``), so the backbone has no such parameters; a top-down
model whose head reads one of several backbone outputs still has them (the fuse layers of the other
outputs). That is found here, before training, with an error that names the features and the two
fixes, instead of the crash; SOLVER.DDP.FIND_UNUSED_PARAMETERS True is the fix that keeps the
outputs (DDP then searches the graph for unused parameters every iteration, which costs time).
"""
import inspect
import logging
from typing import Any, Dict, List

from detectron2.config import CfgNode
from detectron2.utils import comm
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["unread_backbone_outputs", "ddp_options"]

logger = logging.getLogger(__name__)


def unread_backbone_outputs(model: nn.Module) -> List[str]:
    """Backbone outputs a top-down model computes but its head does not read."""
    model = getattr(model, "module", model)
    backbone, in_feature = getattr(model, "backbone", None), getattr(model, "in_feature", None)
    if backbone is None or in_feature is None or not hasattr(backbone, "output_shape"):
        return []
    return sorted(name for name in backbone.output_shape() if name != in_feature)


def ddp_options(cfg: CfgNode, model: nn.Module) -> Dict[str, Any]:
    """Keyword arguments of DistributedDataParallel for this config and model (see the module
    docstring); raises when the model has parameters without gradient and the config does not allow
    them."""
    find_unused = bool(cfg.SOLVER.DDP.FIND_UNUSED_PARAMETERS)
    unread = unread_backbone_outputs(model)
    if unread and comm.get_world_size() > 1 and not find_unused:
        raise ValueError(
            f"MODEL.HRNEXT.OUT_FEATURES {list(cfg.MODEL.HRNEXT.OUT_FEATURES)} includes {unread}, which the "
            f"head does not read (MODEL.TOPDOWN.IN_FEATURE {cfg.MODEL.TOPDOWN.IN_FEATURE!r}): the layers "
            "computing them get no gradient, which DistributedDataParallel refuses. Remove them from "
            "OUT_FEATURES, or set SOLVER.DDP.FIND_UNUSED_PARAMETERS True."
        )
    return {**_no_buffer_sync_in_forward(), "find_unused_parameters": find_unused}


def _no_buffer_sync_in_forward() -> Dict[str, bool]:
    # Buffers are not broadcast from rank 0 before every forward (Detectron2's choice: BatchNorm
    # statistics are synchronised by SyncBN, or per process by design). Recent torch names this
    # `forward_sync_buffers` (and deprecates `broadcast_buffers`, which also skipped the sync at init).
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}
