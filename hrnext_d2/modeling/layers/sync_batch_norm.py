"""Synchronised BatchNorm for CPU processes (gloo) with the running statistics of a single process.

torch's ``nn.SyncBatchNorm`` refuses CPU tensors. Detectron2's ``NaiveSyncBatchNorm`` ("naiveSyncBN")
works with gloo, but updates the running variance with the *biased* batch variance and never counts
``num_batches_tracked``: its eval-mode statistics differ from one process training the same global
batch (by n/(n-1), i.e. 4/3 for the dynamic-kernel attention's BatchNorm on four pooled samples).

``CPUSyncBatchNorm`` ("CPUSyncBN") all-reduces per-channel sums, sums of squares and element counts
(accumulated in float64), normalises with the global batch statistics and updates the running
statistics as ``BatchNorm2d`` / ``nn.SyncBatchNorm`` do: unbiased variance over every process's
samples, momentum (or cumulative average when momentum is None), ``num_batches_tracked`` + 1. It runs
on any device; the trainer picks it for several CPU processes (``norm_for_world_size``).
"""
from typing import Callable, Union

import torch
from detectron2.layers import get_norm as d2_get_norm
from detectron2.utils import comm
from fvcore.nn.distributed import differentiable_all_reduce
from torch import nn

from .batch_norm_nhwc import BatchNorm2dNHWC

__all__ = ["CPUSyncBatchNorm", "get_norm"]


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the batch of all processes (see the module docstring)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if comm.get_world_size() == 1 or not self.training:
            return super().forward(input)
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")
        C = input.shape[1]
        count = torch.full((1,), input.numel() // max(C, 1), dtype=torch.float64, device=input.device)
        vec = torch.cat([
            input.sum(dim=(0, 2, 3), dtype=torch.float64),
            (input * input).sum(dim=(0, 2, 3), dtype=torch.float64),
            count,
        ])
        vec = differentiable_all_reduce(vec)
        total = vec[-1].detach()
        if total.item() <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {int(total.item())} "
                f"over all processes (input shape {list(input.shape)})"
            )
        mean = vec[:C] / total
        var = (vec[C : 2 * C] / total - mean * mean).clamp(min=0)  # biased: used to normalise
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.double()
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.double()

        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (total / (total - 1))
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return input * scale.to(input.dtype).view(1, -1, 1, 1) + shift.to(input.dtype).view(1, -1, 1, 1)


def get_norm(norm: Union[str, Callable, None], out_channels: int):
    """Detectron2's ``get_norm``, plus "CPUSyncBN" (``CPUSyncBatchNorm``); "BN" is
    ``BatchNorm2dNHWC`` (nn.BatchNorm2d with a fast backward on channels-last CPU tensors)."""
    if norm == "CPUSyncBN":
        return CPUSyncBatchNorm(out_channels)
    if norm == "BN":
        return BatchNorm2dNHWC(out_channels)
    return d2_get_norm(norm, out_channels)
