"""Training-mode BatchNorm2d whose backward runs the compiled NHWC kernel on channels-last CPU tensors.

Why: HRNeXt has a BatchNorm after almost every conv (770 per training step of HRNeXt-S), and on
channels-last CPU tensors PyTorch's BatchNorm backward is several times slower than its forward; with
the model channels-last end to end on the CPU it was the largest single cost of a training step. The
forward is PyTorch's own (`torch.native_batch_norm`, which also updates the running statistics); the
backward gathers sum(gy) and sum(gy * xhat) per channel in double precision and forms the input
gradient in a second pass. Everywhere else (CUDA, float64, NCHW, eval mode) it is nn.BatchNorm2d.
"""
import torch
from torch import nn

from .depthwise_nhwc import _load, cpu_kernels_usable

__all__ = ["BatchNorm2dNHWC"]


class _BatchNormNHWC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        x = x.contiguous(memory_format=torch.channels_last)
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, mean, invstd = ctx.saved_tensors
        B, C, H, W = x.shape
        rows = B * H * W
        parts = max(1, min(rows, 4 * torch.get_num_threads()))
        gy = gy.contiguous(memory_format=torch.channels_last)
        gx = torch.empty_like(x, memory_format=torch.channels_last) if ctx.needs_input_grad[0] else None
        sums = torch.empty(2 * C * (parts + 2), dtype=torch.float64)
        w = None if weight is None else weight.detach().contiguous()
        _load().hrnext_bn_backward_nhwc(
            gy.data_ptr(), x.data_ptr(), mean.data_ptr(), invstd.data_ptr(), None if w is None else w.data_ptr(),
            None if gx is None else gx.data_ptr(), sums.data_ptr(), rows, C, parts,
        )
        gb = sums[:C].to(gy.dtype) if ctx.needs_input_grad[2] else None
        gw = sums[C : 2 * C].to(gy.dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, gb, None, None, None, None


class BatchNorm2dNHWC(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters, buffers and state-dict keys) with the NHWC backward kernel in
    training on channels-last float32 CPU tensors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and self.affine and torch.is_grad_enabled()
                and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                and not x.is_contiguous() and cpu_kernels_usable(x)):
            return super().forward(x)
        # nn.BatchNorm2d's own bookkeeping of the running statistics
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return _BatchNormNHWC.apply(x, self.weight, self.bias, self.running_mean, self.running_var, momentum, self.eps)
