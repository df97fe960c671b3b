"""Export forms of the HRNeXt ops: the same functions with static weights and a batch size that stays
symbolic, for `torch.jit.trace` and `torch.onnx.export`.

The eager formulations fold the batch into the groups of one convolution (the dynamic convolutions),
so the group count depends on the batch and an exported graph either bakes the batch in or fails
("convolution for kernel of unknown shape"). A dynamic kernel is sum_k a[b, k] * W_k with per-sample
weights, so by linearity conv(x, sum_k a_k W_k) = sum_k a_k conv(x, W_k):
- a grouped (e.g. depthwise) dynamic conv runs as ONE static grouped conv with K outputs per output
  channel (weights = the bank itself), then the attention-weighted sum over the K outputs;
- a 1x1 dynamic conv runs as a batched matmul with the per-sample kernels;
- the dilated depthwise conv of the spatial gate runs as one plain dilated conv (the eager
  space-to-batch form computes sizes with floor divisions that ONNX evaluates as truncations).
All have constant weights and only batch-preserving reshapes. Among the depthwise forms measured on
onnxruntime (HRNeXt-S, batch 8, 2 threads: this one; K separate depthwise convs + weighted sum; the
input tiled K times + one depthwise conv; the weighted sum as multiply + reduce; nine shifted
multiply-adds with the per-sample kernel) this one was the fastest. They are graph forms, not eager
speed-ups: eager PyTorch on the CPU prefers the batch-in-groups conv, so a TorchScript trace runs
slower than the eager model.

The ops dispatch here while `export_forms_active()`: inside a trace / ONNX export, unless a
`use_export_forms(enabled)` block forces them on (eagerly, for tests) or off (a FLOP count by trace).
`pinned_folded_forms(model)` materialises every folded BatchNorm / layer-scale tensor once, before
the trace, so the exported graph holds them as constants instead of the folding arithmetic.
"""
import contextlib
from typing import Any, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .fused import FusedInferenceMixin

__all__ = [
    "export_forms_active",
    "use_export_forms",
    "dynamic_conv_export",
    "dilated_depthwise_export",
    "pinned_folded_forms",
]

_OVERRIDE: List[Optional[bool]] = [None]  # None: decided by the tracing state

IntPair = Union[int, Tuple[int, int]]


def export_forms_active() -> bool:
    """True while tracing / exporting (TorchScript trace, ONNX export, torch.export), unless a
    `use_export_forms(...)` block says otherwise."""
    if _OVERRIDE[0] is not None:
        return _OVERRIDE[0]
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


@contextlib.contextmanager
def use_export_forms(enabled: bool = True) -> Iterator[None]:
    """Export forms on (also eagerly: how the tests compare them with the reference) or off (also in a
    trace: e.g. fvcore's FLOP count, which must see the eager formulations) for a `with` block."""
    saved = _OVERRIDE[0]
    _OVERRIDE[0] = bool(enabled)
    try:
        yield
    finally:
        _OVERRIDE[0] = saved


def dynamic_conv_export(
    x: torch.Tensor,
    attention: torch.Tensor,
    bank: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """conv of sample b of `x` (B, C, H, W) with sum_k attention[b, k] * bank[k], + bias ((out,) or
    (B, out)); `bank` is [K, out, C/groups, kh, kw]. Static weights, symbolic batch."""
    num_kernels, out_channels, in_per_group, kh, kw = bank.shape
    if kh == 1 and kw == 1 and groups == 1 and _single(stride) == 1 and _single(padding) == 0:
        # 1x1: (B, out, C) per-sample kernels times (B, C, H*W).
        kernels = torch.mm(attention, bank.reshape(num_kernels, -1)).reshape(-1, out_channels, in_per_group)
        y = torch.matmul(kernels, x.flatten(2))
        if bias is not None:
            y = y + bias.reshape(-1, out_channels, 1)
        return y.reshape(-1, out_channels, x.shape[2], x.shape[3])
    # Grouped: the bank as one conv with K outputs per output channel, ordered (group, k, channel)
    # so that each group's K * out/groups outputs stay inside that group.
    per_group = out_channels // groups
    weight = bank.reshape(num_kernels, groups, per_group, in_per_group, kh, kw).transpose(0, 1)
    weight = weight.reshape(groups * num_kernels * per_group, in_per_group, kh, kw)
    y = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    h, w = y.shape[-2:]
    y = y.reshape(-1, groups, num_kernels, per_group * h * w)
    y = torch.matmul(attention.reshape(-1, 1, 1, num_kernels), y)  # the weighted sum over K
    y = y.reshape(-1, out_channels, h, w)
    if bias is not None:
        y = y + bias.reshape(-1, out_channels, 1, 1)
    return y


def dilated_depthwise_export(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             dilation: int, padding: int) -> torch.Tensor:
    """The dilated depthwise conv as one plain conv: the eager space-to-batch form computes its phase
    sizes with floor divisions of sizes, which a trace records and ONNX evaluates differently."""
    return F.conv2d(x, weight, bias, 1, padding, dilation, int(weight.shape[0]))


def _single(v: IntPair) -> int:
    """The value of an int or of a pair of equal ints (-1 for unequal pairs)."""
    if isinstance(v, (tuple, list)):
        return int(v[0]) if len(set(v)) == 1 else -1
    return int(v)


def _detached(value: Any) -> Any:
    """A deep copy of a folded form with every tensor detached (trace constants must not need grad)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


@contextlib.contextmanager
def pinned_folded_forms(model: nn.Module) -> Iterator[int]:
    """Compute every active folded form of `model` now and serve exactly those tensors (detached
    copies, so a trace records them as constants) until the block ends; yields how many modules were
    pinned. Inside, the model must not change (it is being exported)."""
    # Which modules fold is decided as the traced forward will decide it (eval, grad mode, ...).
    active = [m for m in model.modules() if isinstance(m, FusedInferenceMixin) and m.fused_active()]
    with torch.no_grad():
        pinned: List[Tuple[nn.Module, Any]] = [(m, _detached(m._compute_fused())) for m in active]
    try:
        for m, value in pinned:
            m.__dict__["fused_params"] = _Constant(value)
        yield len(pinned)
    finally:
        for m, _ in pinned:
            m.__dict__.pop("fused_params", None)


class _Constant:
    """A callable returning one fixed value (stands in for a module's `fused_params`)."""

    def __init__(self, value: Any):
        self.value = value

    def __call__(self) -> Any:
        return self.value
