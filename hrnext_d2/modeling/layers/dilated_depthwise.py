"""Dilated depthwise convolution through space-to-batch.

oneDNN has no fast kernel for dilated depthwise convolutions on the CPU (the 7x7 dilation-3 conv of
HRNeXt's spatial gate costs ~20% of inference for ~3% of the FLOPs). Splitting the padded input into
its dilation x dilation phases turns it into a plain (undilated) depthwise conv on a bigger batch;
the output is the same sum of the same products.
"""
from typing import Optional

import torch
import torch.nn.functional as F


def dilated_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             dilation: int, padding: int) -> torch.Tensor:
    """== F.conv2d(x, weight, bias, stride=1, padding=padding, dilation=dilation, groups=C) for a
    depthwise `weight` of shape [C, 1, k, k]."""
    d = int(dilation)
    if d == 1:
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])
    B, C, H, W = x.shape
    k = weight.shape[-1]
    Ho, Wo = H + 2 * padding - d * (k - 1), W + 2 * padding - d * (k - 1)
    ho, wo = -(-Ho // d), -(-Wo // d)  # outputs per phase
    hq, wq = ho + k - 1, wo + k - 1  # input rows / cols per phase
    xp = F.pad(x, (padding, wq * d - W - padding, padding, hq * d - H - padding))
    xs = xp.view(B, C, hq, d, wq, d).permute(0, 3, 5, 1, 2, 4).reshape(B * d * d, C, hq, wq)
    y = F.conv2d(xs, weight, bias, 1, 0, 1, C)
    y = y.view(B, d, d, C, ho, wo).permute(0, 3, 4, 1, 5, 2).reshape(B, C, ho * d, wo * d)
    if ho * d != Ho or wo * d != Wo:
        y = y[:, :, :Ho, :Wo]
    return y
