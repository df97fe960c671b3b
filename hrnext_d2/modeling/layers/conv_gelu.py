"""conv2d followed by the exact GELU, as one oneDNN convolution with a GELU post-op on the CPU.

Why: GELU is the largest elementwise cost of HRNeXt at inference; fused into the convolution that
produces its input, it costs no separate pass over memory. oneDNN's erf GELU agrees with
torch.nn.functional.gelu to ~1e-6. Used only for float32 CPU inference in eager mode (no gradient,
no tracing or export); everywhere else it is F.gelu(F.conv2d(...)).
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = ["conv2d_gelu"]

IntPair = Union[int, Sequence[int]]

_POINTWISE = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None


def _pair(v: IntPair):
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


def _fusable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if _POINTWISE is None or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"))


def conv2d_gelu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """F.gelu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))."""
    if _fusable(x, weight):
        return _POINTWISE(x, weight, bias, _pair(padding), _pair(stride), _pair(dilation), groups, "gelu", [], "none")
    return F.gelu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))
