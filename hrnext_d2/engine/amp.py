"""Detectron2's AMPTrainer, resuming from checkpoints with or without a GradScaler state.

A checkpoint written without AMP on CUDA (AMP off, or the float32 fallback on a CPU machine) has no
``grad_scaler`` entry, or an empty one from a disabled scaler; Detectron2's AMPTrainer fails to
resume it. Here the scaler then starts afresh (as at the start of training), which costs at most a
few skipped steps while the scale calibrates.
"""
import logging
from typing import Any, Dict

from detectron2.engine import AMPTrainer, SimpleTrainer

__all__ = ["ResumableAMPTrainer"]

logger = logging.getLogger(__name__)


class ResumableAMPTrainer(AMPTrainer):
    """AMPTrainer whose ``load_state_dict`` accepts a missing or empty ``grad_scaler``."""

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        SimpleTrainer.load_state_dict(self, state_dict)
        scaler = state_dict.get("grad_scaler")
        if scaler:
            self.grad_scaler.load_state_dict(scaler)
        else:
            logger.info("The checkpoint has no GradScaler state (saved without AMP on CUDA): "
                        "the loss scale starts afresh")
