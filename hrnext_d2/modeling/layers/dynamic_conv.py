"""Dynamic convolution of HRNeXt: per-sample kernels mixed from a bank of K kernels.

Names mirror the official modules (`DConv.conv` = `DynamicKernelAggregation` with `attention` and
`aggregation`, or a plain nn.Conv2d when K == 1), so official checkpoints load by name.

Two formulations of the same function:
- reference: the batch folded into the groups of one grouped convolution (as the official code);
- fast (`fast_ops`): a 1x1 dynamic conv as a batched matmul on the per-sample kernels, a depthwise
  one as a depthwise conv with per-sample kernels (`depthwise_nhwc.depthwise_conv2d`).
and a folded inference form (`DConv.fold` / `DConv.apply_folded`) in which the BatchNorm after the
conv, an optional multiplier (layer scale) and an optional per-channel affine map on the input (a
BatchNorm before a 1x1 conv) are folded into the kernel bank and the attention branch.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

from .depthwise_nhwc import depthwise_conv2d
from .export_forms import dynamic_conv_export, export_forms_active
from .formulation import FormulationMixin
from .norm import norm_scale_shift
from .sync_batch_norm import get_norm


class KernelAttention(FormulationMixin, nn.Module):
    """K sigmoid weights per sample: global average pool, 1x1 conv (C -> C/4, or -> K for RGB input),
    norm, GELU, 1x1 conv with bias (-> K). Fast form: the pool's gradient is a broadcast view, not a
    full-size tensor (`spatial_mean`)."""

    def __init__(self, channels: int, num_kernels: int, norm: str = "BN", reduction: int = 4):
        super().__init__()
        mid = channels // reduction if channels != 3 else num_kernels
        self.conv1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.norm = get_norm(norm, mid)
        self.conv2 = nn.Conv2d(mid, num_kernels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1 and isinstance(self.norm, nn.modules.batchnorm._BatchNorm) \
                and comm.get_world_size() == 1:
            raise ValueError(
                "HRNeXt dynamic-kernel attention applies BatchNorm to pooled (B, C, 1, 1) features, so "
                "training needs at least 2 samples per process (got batch size 1). Use a larger batch, "
                "synchronised BN across processes, or eval mode."
            )
        a = spatial_mean(x)[:, :, None, None] if self.fast_ops else F.adaptive_avg_pool2d(x, 1)
        a = F.gelu(self.norm(self.conv1(a)))
        a = self.conv2(a).view(x.shape[0], -1)
        return torch.sigmoid(a)

    def fold(self, in_affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Eval-mode linear maps of the attention: pooled (B, C) -> (B, K); `in_affine` = (a, c) when the
        input is x * a + c of the tensor actually passed."""
        w1 = self.conv1.weight.flatten(1)
        b1 = torch.zeros(w1.shape[0], dtype=w1.dtype, device=w1.device)
        if in_affine is not None:
            a, c = in_affine
            b1 = w1 @ c
            w1 = w1 * a
        s, t = norm_scale_shift(self.norm)
        return {"w1": w1 * s[:, None], "b1": b1 * s + t, "w2": self.conv2.weight.flatten(1),
                "b2": self.conv2.bias}

    @staticmethod
    def apply_folded(x: torch.Tensor, f: Dict[str, torch.Tensor], pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Folded attention of x; `pooled`: x's spatial mean (B, C) when the caller has it already."""
        if pooled is None:
            pooled = spatial_mean(x)
        h = F.gelu(torch.addmm(f["b1"], pooled, f["w1"].t()))
        return torch.sigmoid(torch.addmm(f["b2"], h, f["w2"].t()))


class KernelAggregation(FormulationMixin, nn.Module):
    """The kernel bank `weight` [K, out, in/groups, k, k] (no bias, as every HRNeXt dynamic conv) and
    the convolution with the attention-weighted kernel of each sample."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, num_kernels: int = 4):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups, self.num_kernels = dilation, groups, num_kernels
        self.weight = nn.Parameter(
            torch.empty(num_kernels, out_channels, in_channels // groups, kernel_size, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming-uniform per kernel of the bank (the reference's init; gain sqrt(2), fan_in).
        for i in range(self.num_kernels):
            nn.init.kaiming_uniform_(self.weight.data[i])

    @property
    def is_pointwise(self) -> bool:
        return self.kernel_size == 1 and self.groups == 1 and self.stride == 1 and self.padding == 0

    def forward(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        return self.convolve(x, attention, self.weight, None, self.fast_ops)

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels

    def convolve(self, x: torch.Tensor, attention: torch.Tensor, bank: torch.Tensor,
                 bias: Optional[torch.Tensor], fast: bool, gelu: bool = False) -> torch.Tensor:
        """Convolve sample b of `x` with sum_k attention[b, k] * bank[k] (+ bias: (out,) or (B, out)).

        fast: a 1x1 conv is a batched matmul (in the memory format of `x`); a depthwise conv runs
        the per-sample kernels directly (`depthwise_conv2d`). Otherwise (the reference) one grouped
        convolution with the batch folded into the groups. `gelu`: the exact GELU of the result
        (fused into the depthwise kernel at inference).
        """
        if export_forms_active():  # static weights, symbolic batch (layers/export_forms.py)
            y = dynamic_conv_export(x, attention, bank, bias, self.stride, self.padding, self.dilation,
                                    self.groups)
            return F.gelu(y) if gelu else y
        if fast and self.is_depthwise:
            B = x.shape[0]
            kernels = self.sample_kernels(attention, bank).view(B, self.out_channels, self.kernel_size, self.kernel_size)
            if bias is not None:
                bias = bias.expand(B, self.out_channels)
            return depthwise_conv2d(x, kernels, bias, self.stride, self.padding, self.dilation, gelu=gelu)
        y = self._convolve(x, attention, bank, bias, fast)
        return F.gelu(y) if gelu else y

    def sample_kernels(self, attention: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        """Per-sample kernels sum_k attention[b, k] * bank[k], flattened: (B, out * in/groups * k * k)."""
        return torch.mm(attention, bank.reshape(self.num_kernels, -1))

    def _convolve(self, x: torch.Tensor, attention: torch.Tensor, bank: torch.Tensor,
                  bias: Optional[torch.Tensor], fast: bool) -> torch.Tensor:
        B, C, H, W = x.shape
        kernels = self.sample_kernels(attention, bank)
        if fast and self.is_pointwise:
            kernels = kernels.view(B, self.out_channels, self.in_channels)
            if bias is not None:
                bias = bias.reshape(-1, self.out_channels)
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                xf = x.permute(0, 2, 3, 1).reshape(B, H * W, C)  # a view: (B, HW, C)
                kt = kernels.transpose(1, 2)
                y = torch.bmm(xf, kt) if bias is None else torch.baddbmm(bias.unsqueeze(1), xf, kt)
                return y.view(B, H, W, self.out_channels).permute(0, 3, 1, 2)
            xf = x.reshape(B, C, H * W)
            y = torch.bmm(kernels, xf) if bias is None else torch.baddbmm(bias.unsqueeze(2), kernels, xf)
            return y.view(B, self.out_channels, H, W)
        kernels = kernels.view(B * self.out_channels, self.in_channels // self.groups,
                               self.kernel_size, self.kernel_size)
        if bias is not None:
            bias = bias.expand(B, self.out_channels).reshape(-1)
        y = F.conv2d(x.reshape(1, B * C, H, W), kernels, bias, self.stride, self.padding,
                     self.dilation, self.groups * B)
        return y.view(B, self.out_channels, y.shape[-2], y.shape[-1])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"num_kernels={self.num_kernels}")


class DynamicKernelAggregation(nn.Module):
    """Dynamic convolution = kernel attention on the input + the aggregated per-sample convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, num_kernels: int = 4,
                 norm: str = "BN"):
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels {in_channels} is not divisible by groups {groups}")
        self.attention = KernelAttention(in_channels, num_kernels=num_kernels, norm=norm)
        self.aggregation = KernelAggregation(in_channels, out_channels, kernel_size, stride, padding,
                                             dilation, groups, num_kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregation(x, self.attention(x))


class DConv(nn.Module):
    """A convolution whose kernel is dynamic (K > 1 kernels) or static (K == 1: plain nn.Conv2d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, num_kernels: int = 1, norm: str = "BN"):
        super().__init__()
        self.num_kernels = int(num_kernels)
        if self.num_kernels > 1:
            self.conv = DynamicKernelAggregation(in_channels, out_channels, kernel_size, stride, padding,
                                                 1, groups, self.num_kernels, norm)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, 1, groups,
                                  bias=False)

    @property
    def is_dynamic(self) -> bool:
        return self.num_kernels > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def fold(self, out_norm: nn.Module, out_mult: Optional[torch.Tensor] = None,
             in_affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Folded tensors of `out_mult * out_norm(conv(x * a + c))` with `in_affine` = (a, c) (1x1 only)."""
        s, t = norm_scale_shift(out_norm)
        if out_mult is not None:
            s, t = s * out_mult, t * out_mult
        if self.is_dynamic:
            agg = self.conv.aggregation
            bank = agg.weight
            f = {"attention": self.conv.attention.fold(in_affine)}
            if in_affine is not None:
                if not agg.is_pointwise:
                    raise ValueError("an input affine map folds only into a 1x1 convolution")
                a, c = in_affine
                f["bias_bank"] = torch.einsum("koi,i->ko", bank.flatten(2), c) * s
                bank = bank * a.view(1, 1, -1, 1, 1)
            f["bank"] = bank * s.view(1, -1, 1, 1, 1)
            f["bias"] = t
            return f
        w = self.conv.weight
        b = t
        if in_affine is not None:
            if w.shape[-1] != 1 or self.conv.padding != (0, 0):
                raise ValueError("an input affine map folds only into a 1x1 convolution")
            a, c = in_affine
            b = t + s * (w.flatten(1) @ c)
            w = w * a.view(1, -1, 1, 1)
        return {"weight": w * s.view(-1, 1, 1, 1), "bias": b}

    def apply_folded(self, x: torch.Tensor, f: Dict[str, torch.Tensor], fast: bool = True,
                     gelu: bool = False, pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The folded conv of x (+ GELU when `gelu`); `pooled`: the spatial mean of x when the caller
        has it (the attention's pooling is then skipped)."""
        if self.is_dynamic:
            agg = self.conv.aggregation
            att = KernelAttention.apply_folded(x, f["attention"], pooled)
            bias = f["bias"]
            if "bias_bank" in f:
                bias = torch.addmm(bias, att, f["bias_bank"])
            return agg.convolve(x, att, f["bank"], bias, fast, gelu=gelu)
        c = self.conv
        if fast and c.groups == x.shape[1] and c.groups == c.out_channels and c.stride == (1, 1):
            return depthwise_conv2d(x, f["weight"], f["bias"], 1, c.padding, c.dilation, gelu=gelu)
        y = F.conv2d(x, f["weight"], f["bias"], c.stride, c.padding, c.dilation, c.groups)
        return F.gelu(y) if gelu else y

    def folded_pointwise_parts(self, x: torch.Tensor, f: Dict[str, torch.Tensor]
                               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A folded dynamic 1x1 conv of x as parts, without convolving: the per-sample kernels
        (B, out, in), the per-sample bias (B, out), and the spatial mean of the output (B, out) =
        kernel @ mean(x) + bias (linearity), for the attention of a following dynamic conv."""
        agg = self.conv.aggregation
        if not (self.is_dynamic and agg.is_pointwise):
            raise ValueError("folded_pointwise_parts is for dynamic 1x1 convs")
        B = x.shape[0]
        pooled_x = spatial_mean(x)
        att = KernelAttention.apply_folded(x, f["attention"], pooled_x)
        bias = f["bias"].expand(B, agg.out_channels)
        if "bias_bank" in f:
            bias = torch.addmm(f["bias"], att, f["bias_bank"])
        kernels = agg.sample_kernels(att, f["bank"]).view(B, agg.out_channels, agg.in_channels)
        pooled = torch.baddbmm(bias.unsqueeze(2), kernels, pooled_x.unsqueeze(2)).squeeze(2)
        return kernels, bias, pooled

    def folded_sample_kernels(self, pooled: torch.Tensor, f: Dict[str, torch.Tensor]
                              ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A folded dynamic conv's per-sample kernels (B, out, in/groups, k, k) and bias (B, out),
        given the spatial mean of its input (B, in), for the CPU kernels that convolve themselves."""
        agg = self.conv.aggregation
        if not self.is_dynamic:
            raise ValueError("folded_sample_kernels is for dynamic convs")
        B = pooled.shape[0]
        att = KernelAttention.apply_folded(None, f["attention"], pooled)
        kernels = agg.sample_kernels(att, f["bank"]).view(B, *agg.weight.shape[1:])
        bias = f["bias"]
        if "bias_bank" in f:
            bias = torch.addmm(bias, att, f["bias_bank"])
        return kernels, bias.expand(B, agg.out_channels)


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over H, W of (B, C, H, W) -> (B, C). Reads a channels-last tensor row by row; its
    gradient is the (B, C) gradient / HW broadcast as a view (no full-size tensor written)."""
    if torch.is_grad_enabled() and x.requires_grad and not (torch.jit.is_tracing() or torch.jit.is_scripting()):
        return _SpatialMean.apply(x)
    return _SpatialMean.forward(None, x)


class _SpatialMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        if ctx is not None:
            ctx.shape = x.shape
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1]).mean(1)
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx, g):
        B, C, H, W = ctx.shape
        return (g / (H * W)).view(B, C, 1, 1).expand(B, C, H, W)
