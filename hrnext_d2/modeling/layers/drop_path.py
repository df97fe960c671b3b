"""Stochastic depth (per-sample drop of a residual branch), as mmcv's DropPath."""
import torch
from torch import nn


class DropPath(nn.Module):
    """Zeroes the whole residual branch of a sample with probability `drop_prob` in training and
    rescales the kept ones by 1/(1-p); identity in eval mode or when p == 0."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = (keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep_prob) * random_tensor

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}"
