"""Activation (gradient) checkpointing that updates BatchNorm statistics once per step.

``torch.utils.checkpoint`` runs the forward again in backward to recompute the activations it did
not keep. A BatchNorm in training mode updates its running statistics on every forward, so the
recomputation would update them a second time (``num_batches_tracked`` + 2 per step, and the running
mean and variance moved twice): eval-mode statistics would differ from training without
checkpointing. Here the recomputation runs in a context that restores every BatchNorm buffer of the
module to what the original forward left, so both trainings end with the same statistics.
"""
import contextlib
import functools
from typing import Any, Callable, Iterator, Tuple

import torch
import torch.utils.checkpoint as cp
from torch import nn

__all__ = ["checkpoint_keeping_norm_statistics"]


@contextlib.contextmanager
def _restore_norm_statistics(module: nn.Module) -> Iterator[None]:
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _contexts(module: nn.Module) -> Tuple[Any, Any]:
    # (context of the original forward, context of the recomputation in backward)
    return contextlib.nullcontext(), _restore_norm_statistics(module)


def checkpoint_keeping_norm_statistics(module: nn.Module, function: Callable, *args: Any) -> Any:
    """``torch.utils.checkpoint.checkpoint(function, *args)`` (non-reentrant, random state
    preserved), whose recomputation leaves the BatchNorm statistics of ``module`` unchanged."""
    return cp.checkpoint(function, *args, use_reentrant=False,
                         context_fn=functools.partial(_contexts, module))
