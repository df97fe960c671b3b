"""Checks that the processes of one training agree, where DistributedDataParallel assumes it.

DDP broadcasts the weights once, when it wraps the model; afterwards every process must start from
the same iteration and apply the same updates. Two ways that silently fails:
- resuming with a separate OUTPUT_DIR per machine (no shared storage): only the main process saves
  checkpoints, so one machine resumes at iteration N and another starts at 0 on other weights, and
  the collectives of their different schedules then hang; likewise MODEL.WEIGHTS naming different
  files on different machines (the weights are loaded after DDP's broadcast);
- a model state not covered by the gradient all-reduce (e.g. BatchNorm statistics that are not
  synchronised) diverging between processes.
``check_same_start`` (after loading) turns the first into an error that names each process's
iteration and checkpoint (or the digest of the weights it loaded); ``ModelStateAgreementHook``
compares a digest of the model state of every process after training and logs it.
"""
import hashlib
import logging
import os
from typing import List, Optional, Tuple

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

__all__ = ["check_same_start", "start_mismatch", "model_state_digest", "check_same_model_state",
           "ModelStateAgreementHook"]

logger = logging.getLogger(__name__)


def _describe_start(checkpointer, weights: str, resume: bool) -> str:
    if resume and checkpointer.has_checkpoint():
        return f"checkpoint {checkpointer.get_checkpoint_file()}"
    where = f"no checkpoint in OUTPUT_DIR {os.path.abspath(checkpointer.save_dir)}" if resume else "--resume not given"
    return f"{where}; MODEL.WEIGHTS {weights!r}" if weights else where


def start_mismatch(everyone: List[Tuple[int, str, str, str]]) -> Optional[str]:
    """The error message when the processes' (start iteration, what was loaded, host, model digest)
    differ in iteration or weights, else None."""
    rows = "\n".join(f"  rank {r} on {host}: iteration {it} ({src}), weights sha256 {digest[:12]}"
                      for r, (it, src, host, digest) in enumerate(everyone))
    if len({e[0] for e in everyone}) > 1:
        return (f"The {len(everyone)} processes would start training at different iterations:\n{rows}\n"
                "Every machine must resume from the same checkpoint: use one OUTPUT_DIR on storage all "
                "machines share, or copy OUTPUT_DIR (last_checkpoint and the checkpoint it names) from the "
                "main machine to the others before --resume.")
    if len({e[3] for e in everyone}) > 1:
        return (f"The {len(everyone)} processes loaded different weights:\n{rows}\n"
                "Every machine must load the same file: give MODEL.WEIGHTS a path with the same content on "
                "all machines (and the same OUTPUT_DIR checkpoints with --resume).")
    return None


def check_same_start(model: nn.Module, start_iter: int, checkpointer, weights: str, resume: bool) -> None:
    """Raise on every process when the processes would start from different iterations or weights
    (call it on all of them, after loading)."""
    if comm.get_world_size() == 1:
        return
    mine = (int(start_iter), _describe_start(checkpointer, weights, resume), os.uname().nodename,
            model_state_digest(model))
    problem = start_mismatch(comm.all_gather(mine))
    if problem:
        raise RuntimeError(problem)


def model_state_digest(model: nn.Module) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes and bytes); DDP wrappers unwrapped."""
    model = getattr(model, "module", model)
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_same_model_state(model: nn.Module) -> str:
    """The model state digest, after checking it is the same in every process (else raise)."""
    digest = model_state_digest(model)
    if comm.get_world_size() == 1:
        return digest
    digests = comm.all_gather(digest)
    if len(set(digests)) != 1:
        rows = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
        raise RuntimeError(f"The processes ended training with different model states ({rows})")
    return digest


class ModelStateAgreementHook(HookBase):
    """After a completed training: check that every process holds the same model state and log its
    digest (each process in its own log)."""

    def after_train(self):
        # After an exception (iter < max_iter) other processes may be gone: no collective then.
        if self.trainer.iter < self.trainer.max_iter:
            return
        digest = check_same_model_state(self.trainer.model)
        logger.info(f"Model state identical in all {comm.get_world_size()} processes after training "
                    f"(rank {comm.get_rank()}, sha256 {digest})")
