"""Stochastic depth (per-sample drop of a residual branch), as mmcv's DropPath."""
from typing import Optional

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
        return x.div(keep_prob) * self._draw(x)  # mmcv's arithmetic

    def sample_keep_factor(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The per-sample factor (B, 1, ..., 1): 0 for dropped samples, 1/(1-p) for kept ones (one
        uniform draw per sample, as mmcv), or None when the layer is the identity."""
        if self.drop_prob == 0.0 or not self.training:
            return None
        return self._draw(x).div_(1.0 - self.drop_prob)

    def _draw(self, x: torch.Tensor) -> torch.Tensor:
        """1 (keep) or 0 (drop) per sample, shaped (B, 1, ..., 1)."""
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return (keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}"
