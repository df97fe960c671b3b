"""Normalisation layers of HRNeXt and the algebra to fold eval-mode BatchNorm into convolutions."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from .formulation import FormulationMixin


class ChannelsLastLayerNorm(FormulationMixin, nn.Module):
    """LayerNorm over channels of an NCHW tensor, computed in channels-last layout (eps 1e-6).

    The reference permutes to NHWC, normalises the last dim and permutes back; the parameters live in
    `self.norm` so the state-dict keys are `<name>.norm.weight/bias` like the official checkpoints.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_ops:
            y = F.layer_norm(x.permute(0, 2, 3, 1), self.norm.normalized_shape, self.norm.weight,
                             self.norm.bias, self.norm.eps)
            if x.is_contiguous(memory_format=torch.channels_last):
                return y.permute(0, 3, 1, 2)  # already channels-last in memory: no copy at all
            # F.layer_norm made its own contiguous copy of the permuted view; one copy back to NCHW.
            return y.permute(0, 3, 1, 2).contiguous()
        y = self.norm(x.permute(0, 2, 3, 1).contiguous())
        return y.permute(0, 3, 1, 2).contiguous()


def is_foldable_norm(norm: Optional[nn.Module]) -> bool:
    """True for norms that are a per-channel affine map in eval mode (BatchNorm family, FrozenBN)."""
    return isinstance(norm, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d))


def norm_scale_shift(norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with eval-mode norm(x) == x * s[c] + t[c]."""
    var, mean = norm.running_var, norm.running_mean
    s = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        s = s * norm.weight
    t = -mean * s
    if norm.bias is not None:
        t = t + norm.bias
    return s, t


def fold_conv_norm(weight: torch.Tensor, bias: Optional[torch.Tensor], norm: nn.Module
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv followed by eval-mode `norm` as a single conv (out channels on dim 0,
    or dim 1 for a [K, out, ...] kernel bank)."""
    s, t = norm_scale_shift(norm)
    out_dim = 1 if weight.dim() == 5 else 0
    shape = [1] * weight.dim()
    shape[out_dim] = -1
    w = weight * s.view(shape)
    b = t if bias is None else bias * s + t
    return w, b
