"""HRNeXt (High-Resolution Context Network) as a Detectron2 backbone.

Module and parameter names mirror the official mmpose implementation, so an official state dict
(minus its `backbone.` prefix) loads by identity of names. Every op has two formulations of the same
function: the reference one (`fast_ops=False`, as the official code) and a faster one (`fast_ops=True`:
space-to-batch dilated depthwise conv, dynamic 1x1 convs as batched matmuls, fewer copies). In eval
mode with `fuse_inference=True`, BatchNorm and layer scales are folded into the convolutions (computed
lazily, cached outside the state dict; see `hrnext_d2/modeling/layers/fused.py`).
"""
import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..layers import (
    ChannelsLastLayerNorm,
    DConv,
    DropPath,
    FormulationMixin,
    FusedInferenceMixin,
    conv2d_gelu,
    cpu_kernels_usable,
    depthwise_conv2d,
    checkpoint_keeping_norm_statistics,
    dilated_depthwise_conv2d,
    fold_conv_norm,
    get_norm,
    is_foldable_norm,
    norm_scale_shift,
    pointwise_depthwise_gelu,
    pointwise_residual_,
    set_formulation,
)
from ..layers.export_forms import dilated_depthwise_export, export_forms_active

__all__ = ["HRNeXt", "build_hrnext_backbone", "HighResolutionContextBlock", "HighResolutionContextModule"]

logger = logging.getLogger(__name__)

# The CPU kernel for a dynamic FFN's last 1x1 conv + residual beats the batched matmul while a
# sample's kernel (in x out floats) stays small: 128x32 and 256x64 measured faster, 512x128 slower.
_PW_RESIDUAL_MAX_WEIGHTS = 256 * 64
# The fused proj1 + depthwise + GELU kernel for a static FFN: faster than oneDNN's 1x1 conv + the
# depthwise kernel at 2 threads while the 1x1 kernel stays in L2 (128x512 floats: 5.5 -> 2.9 ms at
# batch 8, 16x12); with 256x1024 it is not.
_FUSED_STATIC_FFN_MAX_WEIGHTS = 128 * 512


def _fused_ffn_usable(m: "DynamicFFN", x: torch.Tensor) -> bool:
    """Can the dynamic FFN's first half run as one CPU kernel (`pointwise_depthwise_gelu`) here?"""
    hidden = m.dw.conv.aggregation.out_channels if m.dw.is_dynamic else m.dw.conv.out_channels
    if hidden % 32 or m.proj1.is_dynamic != m.dw.is_dynamic or not cpu_kernels_usable(x):
        return False
    return m.proj1.is_dynamic or x.shape[1] * hidden <= _FUSED_STATIC_FFN_MAX_WEIGHTS


class DynamicLocalPerception(nn.Module):
    """DLP: GELU(BN(dynamic 3x3 depthwise conv(x)))."""

    def __init__(self, dim: int, num_kernels: int, norm: str):
        super().__init__()
        self.dw3x3 = DConv(dim, dim, 3, 1, 1, groups=dim, num_kernels=num_kernels, norm=norm)
        self.norm = get_norm(norm, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.dw3x3(x)))


class GlobalSpatialAttention(FormulationMixin, nn.Module):
    """Spatial gate: x * BN(1x1(BN(7x7 dw dilation 3(BN(5x5 dw(x))))))."""

    def __init__(self, dim: int, norm: str):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim, bias=False)
        self.norm1 = get_norm(norm, dim)
        self.dwd = nn.Conv2d(dim, dim, 7, 1, 9, dilation=3, groups=dim, bias=False)
        self.norm2 = get_norm(norm, dim)
        self.pw = nn.Conv2d(dim, dim, 1, bias=False)
        self.norm3 = get_norm(norm, dim)

    def dilated(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if export_forms_active():  # no size arithmetic in the graph (layers/export_forms.py)
            return dilated_depthwise_export(x, weight, bias, 3, 9)
        if self.fast_ops:
            if cpu_kernels_usable(x):
                return depthwise_conv2d(x, weight, bias, 1, 9, 3)
            return dilated_depthwise_conv2d(x, weight, bias, 3, 9)
        return F.conv2d(x, weight, bias, 1, 9, 3, x.shape[1])

    def depthwise5x5(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The 5x5 depthwise conv; in the fast path through `depthwise_conv2d` (the CPU kernels where
        usable: PyTorch's own channels-last depthwise backward here is its slow reference conv)."""
        if self.fast_ops:
            return depthwise_conv2d(x, weight, bias, 1, 2)
        return F.conv2d(x, weight, bias, 1, 2, 1, x.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.norm1(self.depthwise5x5(x, self.dw.weight, None))
        a = self.norm2(self.dilated(a, self.dwd.weight, None))
        a = self.norm3(self.pw(a))
        return x * a


class GlobalFFN(nn.Module):
    """GFFN: u + BN(1x1(gate(GELU(BN(1x1(u)))))), the residual inside."""

    def __init__(self, dim: int, norm: str):
        super().__init__()
        self.proj1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.norm1 = get_norm(norm, dim)
        self.spatial_gate = GlobalSpatialAttention(dim, norm)
        self.proj2 = nn.Conv2d(dim, dim, 1, bias=False)
        self.norm2 = get_norm(norm, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.norm1(self.proj1(x)))
        y = self.spatial_gate(y)
        return self.norm2(self.proj2(y)) + x


class DynamicFFN(nn.Module):
    """DFFN: BN(D1x1(GELU(BN(D3x3dw(BN(D1x1(x)))))), hidden width dim * mlp_ratio."""

    def __init__(self, dim: int, hidden: int, num_kernels: int, norm: str):
        super().__init__()
        self.proj1 = DConv(dim, hidden, 1, num_kernels=num_kernels, norm=norm)
        self.norm1 = get_norm(norm, hidden)
        self.dw = DConv(hidden, hidden, 3, 1, 1, groups=hidden, num_kernels=num_kernels, norm=norm)
        self.norm2 = get_norm(norm, hidden)
        self.proj2 = DConv(hidden, dim, 1, num_kernels=num_kernels, norm=norm)
        self.norm3 = get_norm(norm, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.proj1(x))
        x = F.gelu(self.norm2(self.dw(x)))
        return self.norm3(self.proj2(x))


class HighResolutionContextBlock(FormulationMixin, FusedInferenceMixin, nn.Module):
    """Context block: x += DropPath(s1 * DLP(x)); x += DropPath(s2 * GFFN(BN(x)));
    x += DropPath(s3 * DFFN(BN(x)))."""

    def __init__(self, dim: int, mlp_ratio: float = 4, num_kernels: int = 1, drop_path: float = 0.0,
                 norm: str = "BN", with_cp: bool = False, layer_scale_init: float = 1e-2):
        super().__init__()
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale_3 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.dlp = DynamicLocalPerception(dim, num_kernels, norm)
        self.norm1 = get_norm(norm, dim)
        self.mlp1 = GlobalFFN(dim, norm)
        self.norm2 = get_norm(norm, dim)
        self.mlp2 = DynamicFFN(dim, int(dim * mlp_ratio), num_kernels, norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_active():
            return self._forward_fused(x)
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint_keeping_norm_statistics(self, self._forward, x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._residual(x, self.dlp(x), self.layer_scale_1)
        x = self._residual(x, self.mlp1(self.norm1(x)), self.layer_scale_2)
        x = self._residual(x, self.mlp2(self.norm2(x)), self.layer_scale_3)
        return x

    def _residual(self, x: torch.Tensor, y: torch.Tensor, layer_scale: torch.Tensor) -> torch.Tensor:
        """x + DropPath(layer_scale * y). Fast form: one addcmul with the (B, C) product of the
        layer scale and the drop-path factor (the same random draw), not three passes over y."""
        if not self.fast_ops:
            return x + self.drop_path(layer_scale.view(-1, 1, 1) * y)
        scale = layer_scale.view(1, -1, 1, 1)
        if isinstance(self.drop_path, DropPath):
            keep = self.drop_path.sample_keep_factor(x)
            if keep is not None:
                scale = scale * keep
        return torch.addcmul(x, y, scale)

    def _compute_fused(self) -> Dict[str, object]:
        f: Dict[str, object] = {"dlp": self.dlp.dw3x3.fold(self.dlp.norm)}
        f["ls1"] = self.layer_scale_1.view(1, -1, 1, 1).clone()
        # GFFN on u = norm1(x) = x * a1 + c1, residual u inside, scaled by layer_scale_2.
        g, sg = self.mlp1, self.mlp1.spatial_gate
        a1, c1 = norm_scale_shift(self.norm1)
        s, t = norm_scale_shift(g.norm1)
        w = g.proj1.weight.flatten(1)
        f["proj1"] = ((w * a1[None, :] * s[:, None])[:, :, None, None], s * (w @ c1) + t)
        f["dw"] = fold_conv_norm(sg.dw.weight, None, sg.norm1)
        f["dwd"] = fold_conv_norm(sg.dwd.weight, None, sg.norm2)
        f["pw"] = fold_conv_norm(sg.pw.weight, None, sg.norm3)
        ls2 = self.layer_scale_2
        s, t = norm_scale_shift(g.norm2)
        f["proj2"] = (g.proj2.weight * (ls2 * s).view(-1, 1, 1, 1), ls2 * (t + c1))
        f["alpha"] = (1 + ls2 * a1).view(1, -1, 1, 1)
        # DFFN on norm2(x) (folded into proj1 and its attention), output scaled by layer_scale_3.
        m = self.mlp2
        f["m_proj1"] = m.proj1.fold(m.norm1, None, norm_scale_shift(self.norm2))
        f["m_dw"] = m.dw.fold(m.norm2)
        f["m_proj2"] = m.proj2.fold(m.norm3, self.layer_scale_3)
        return f

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fused_params()
        fast = self.fast_ops
        C = x.shape[1]
        x = torch.addcmul(x, f["ls1"], self.dlp.dw3x3.apply_folded(x, f["dlp"], fast, gelu=True))
        h = conv2d_gelu(x, *f["proj1"])
        a = F.conv2d(h, *f["dw"], 1, 2, 1, C)
        a = self.mlp1.spatial_gate.dilated(a, *f["dwd"])
        a = F.conv2d(a, *f["pw"])
        x = torch.addcmul(F.conv2d(a.mul_(h), *f["proj2"]), x, f["alpha"])
        m = self.mlp2
        if fast and _fused_ffn_usable(m, x):
            # proj1, the depthwise conv and GELU in one CPU kernel: the 4x-wide output of proj1 is
            # never written; the depthwise attention's pooling comes from proj1's input (linearity),
            # proj2's from the kernel's own sums of its output.
            if m.proj1.is_dynamic:
                kernels, bias, pooled = m.proj1.folded_pointwise_parts(x, f["m_proj1"])
                dw_kernels, dw_bias = m.dw.folded_sample_kernels(pooled, f["m_dw"])
                dw_kernels = dw_kernels.flatten(1, 2)
            else:
                kernels, bias = f["m_proj1"]["weight"].flatten(1), f["m_proj1"]["bias"]
                dw_kernels, dw_bias = f["m_dw"]["weight"].flatten(0, 1), f["m_dw"]["bias"]
            h, pooled = pointwise_depthwise_gelu(x, kernels, bias, dw_kernels, dw_bias)
            if m.proj2.is_dynamic and x.shape[1] % 32 == 0 and x.shape[1] * h.shape[1] <= _PW_RESIDUAL_MAX_WEIGHTS \
                    and x.is_contiguous(memory_format=torch.channels_last):
                # proj2 and the residual in one pass over h; x is this forward's own tensor
                kernels, bias = m.proj2.folded_sample_kernels(pooled, f["m_proj2"])
                return pointwise_residual_(x, h, kernels.flatten(2), bias)
            return m.proj2.apply_folded(h, f["m_proj2"], fast, pooled=pooled).add_(x)
        h = m.proj1.apply_folded(x, f["m_proj1"], fast)
        h = m.dw.apply_folded(h, f["m_dw"], fast, gelu=True)
        return m.proj2.apply_folded(h, f["m_proj2"], fast).add_(x)


class ConvNormAct(FusedInferenceMixin, nn.Sequential):
    """(conv, norm, GELU) as an nn.Sequential (official key layout `<name>.0`, `<name>.1`)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module):
        super().__init__(conv, norm, nn.GELU())

    def _compute_fused(self):
        return fold_conv_norm(self[0].weight, self[0].bias, self[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_active():
            c = self[0]
            return conv2d_gelu(x, *self.fused_params(), c.stride, c.padding, c.dilation, c.groups)
        return F.gelu(self[1](self[0](x)))


class UpsampleFuse(FormulationMixin, FusedInferenceMixin, nn.Sequential):
    """Fuse step from a coarser branch: 1x1 conv + norm + bilinear upsampling by 2^(j-i), then (in
    forward) a second bilinear resize to the target branch's exact size, as the reference."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, norm: str):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            get_norm(norm, out_channels),
            nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False),
        )

    def _compute_fused(self):
        return fold_conv_norm(self[0].weight, None, self[1])

    def forward(self, x: torch.Tensor, size: Optional[Sequence[int]] = None) -> torch.Tensor:
        if self.fused_active():
            y = F.conv2d(x, *self.fused_params())
        else:
            y = self[1](self[0](x))
        y = self[2](y)
        if size is not None and (not self.fast_ops or tuple(y.shape[-2:]) != tuple(size)):
            # A no-op at equal sizes (bilinear resampling at scale 1 returns its input exactly).
            y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
        return y


class DownsampleStep(FusedInferenceMixin, nn.Sequential):
    """One stride-2 fuse step: 3x3 depthwise conv stride 2 + norm + 1x1 conv + norm (+ GELU)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, act: bool):
        layers = [
            nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False),
            get_norm(norm, in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            get_norm(norm, out_channels),
        ]
        if act:
            layers.append(nn.GELU())
        super().__init__(*layers)
        self.act = act

    def _compute_fused(self):
        return fold_conv_norm(self[0].weight, None, self[1]), fold_conv_norm(self[2].weight, None, self[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_active():
            (w1, b1), (w2, b2) = self.fused_params()
            y = F.conv2d(x, w1, b1, 2, 1, 1, x.shape[1])
            return conv2d_gelu(y, w2, b2) if self.act else F.conv2d(y, w2, b2)
        else:
            y = self[3](self[2](self[1](self[0](x))))
        return F.gelu(y) if self.act else y


class HighResolutionContextModule(nn.Module):
    """Parallel branches (context blocks + LayerNorm each), then multi-resolution fusion + GELU."""

    def __init__(self, channels: Sequence[int], num_blocks: Sequence[int], mlp_ratios: Sequence[float],
                 num_kernels: Sequence[int], drop_paths: Sequence[float], multiscale_output: bool,
                 norm: str, with_cp: bool, fused_outputs: Optional[Sequence[int]] = None):
        """`fused_outputs`: the branches to fuse into (default: all with `multiscale_output`, else 0);
        the fuse layers of the others are not built (their slots are None, keys keep their index)."""
        super().__init__()
        n = len(channels)
        branches = []
        for i in range(n):
            if num_blocks[i] > len(drop_paths):
                raise ValueError(f"branch {i} has {num_blocks[i]} blocks but the module's drop-path "
                                 f"schedule has {len(drop_paths)} rates (num_blocks[0] per module)")
            blocks: List[nn.Module] = [
                HighResolutionContextBlock(channels[i], mlp_ratios[i], num_kernels[i], drop_paths[b],
                                           norm, with_cp)
                for b in range(num_blocks[i])
            ]
            blocks.append(ChannelsLastLayerNorm(channels[i]))
            branches.append(nn.Sequential(*blocks))
        self.branches = nn.ModuleList(branches)
        self.num_branches = n
        if n == 1:
            self.fuse_layers = None
            return
        outputs = set(range(n) if multiscale_output else [0]) if fused_outputs is None else set(fused_outputs)
        fuse_layers: List[Optional[nn.Module]] = []
        for i in range(max(outputs) + 1):
            if i not in outputs:
                fuse_layers.append(None)
                continue
            layer: List[Optional[nn.Module]] = []
            for j in range(n):
                if j > i:
                    layer.append(UpsampleFuse(channels[j], channels[i], 2 ** (j - i), norm))
                elif j == i:
                    layer.append(None)
                else:
                    steps = [
                        DownsampleStep(channels[j], channels[i] if k == i - j - 1 else channels[j], norm,
                                       act=k != i - j - 1)
                        for k in range(i - j)
                    ]
                    layer.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(layer))
        self.fuse_layers = nn.ModuleList(fuse_layers)

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, layers in enumerate(self.fuse_layers):
            if layers is None:  # a branch no output reads (see `fused_outputs`)
                out.append(None)
                continue
            y = xs[0] if i == 0 else layers[0](xs[0])
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + layers[j](xs[j], xs[i].shape[-2:])
                else:
                    y = y + layers[j](xs[j])
            out.append(F.gelu(y))
        return out


_STAGE_KEYS = ("num_modules", "num_branches", "num_blocks", "num_channels", "mlp_ratios", "num_kernels")


class HRNeXt(FormulationMixin, FusedInferenceMixin, Backbone):
    """HRNeXt backbone: stem (stride 4), stage 1 (`layer1`), stages 2-4 of multi-branch modules.

    Outputs features named "stride4", "stride8", "stride16", "stride32" (branch i has stride 4*2^i);
    all but "stride4" need `multi_scale_output=True` (then the last module also fuses into the branches
    of `out_features`, which adds parameters that official pose checkpoints do not have).
    """

    @configurable
    def __init__(
        self,
        *,
        stages: Sequence[Dict],
        stem_width: int = 64,
        in_channels: int = 3,
        drop_path_rate: float = 0.1,
        norm: str = "BN",
        with_cp: bool = False,
        multi_scale_output: bool = False,
        out_features: Sequence[str] = ("stride4",),
        fast_ops: bool = True,
        fuse_inference: bool = True,
    ):
        super().__init__()
        if len(stages) != 4:
            raise ValueError(f"HRNeXt needs 4 stage configs, got {len(stages)}")
        for k, st in enumerate(stages, 1):
            missing = [key for key in _STAGE_KEYS if key not in st]
            if missing:
                raise ValueError(f"stage {k} config misses {missing}")
            for key in ("num_blocks", "num_channels", "mlp_ratios", "num_kernels"):
                if len(st[key]) != st["num_branches"]:
                    raise ValueError(f"stage {k}: {key} has {len(st[key])} entries for "
                                     f"{st['num_branches']} branches")
        s1 = stages[0]
        if s1["num_branches"] != 1 or s1["num_modules"] != 1:
            raise ValueError("stage 1 must have one branch and one module")
        if s1["num_channels"][0] != stem_width:
            raise ValueError(f"STEM_WIDTH {stem_width} must equal stage-1 width {s1['num_channels'][0]}")
        self.stage_cfgs = [dict(st) for st in stages]

        depths = [st["num_blocks"][0] * st["num_modules"] for st in stages]
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]

        c = stem_width
        self.conv1 = nn.Conv2d(in_channels, c, 3, 2, 1, bias=False)
        self.bn1 = get_norm(norm, c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = get_norm(norm, c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = get_norm(norm, c)
        self.conv4 = nn.Conv2d(c, c, 3, 2, 1, groups=c, bias=False)
        self.bn4 = get_norm(norm, c)

        blocks: List[nn.Module] = [
            HighResolutionContextBlock(c, s1["mlp_ratios"][0], s1["num_kernels"][0], dpr[b], norm, with_cp)
            for b in range(s1["num_blocks"][0])
        ]
        blocks.append(ChannelsLastLayerNorm(c))
        self.layer1 = nn.Sequential(*blocks)

        # The last module fuses only into the branches of OUT_FEATURES: a fuse layer no output reads
        # would get no gradient, which DistributedDataParallel refuses.
        last_fused = [i for i in range(stages[3]["num_branches"]) if f"stride{4 * 2 ** i}" in out_features] or [0]
        pre = [c]
        start = depths[0]
        for k in (2, 3, 4):
            st = stages[k - 1]
            cur = list(st["num_channels"])
            self.add_module(f"transition{k - 1}", self._make_transition(pre, cur, norm))
            modules = []
            for m in range(st["num_modules"]):
                nb0 = st["num_blocks"][0]
                rates = dpr[start + nb0 * m: start + nb0 * (m + 1)]
                last = k == 4 and m == st["num_modules"] - 1
                modules.append(HighResolutionContextModule(
                    cur, st["num_blocks"], st["mlp_ratios"], st["num_kernels"], rates,
                    multiscale_output=multi_scale_output or not last, norm=norm, with_cp=with_cp,
                    fused_outputs=last_fused if last and multi_scale_output else None))
            self.add_module(f"stage{k}", nn.Sequential(*modules))
            start += depths[k - 1]
            pre = cur

        self.multi_scale_output = multi_scale_output
        names = [f"stride{4 * 2 ** i}" for i in range(len(pre))]
        out_features = list(out_features)
        for name in out_features:
            if name not in names:
                raise ValueError(f"unknown HRNeXt output feature {name!r}; choose from {names}")
            if name != "stride4" and not multi_scale_output:
                raise ValueError(f"output feature {name!r} needs MODEL.HRNEXT.MULTI_SCALE_OUTPUT True "
                                 "(the official pose model fuses into stride 4 only)")
        self._out_features = out_features
        self._out_feature_channels = {n: ch for n, ch in zip(names, pre)}
        self._out_feature_strides = {n: 4 * 2 ** i for i, n in enumerate(names)}
        self._branch_index = {n: i for i, n in enumerate(names)}

        self.init_weights()
        foldable = is_foldable_norm(self.bn1)
        if fuse_inference and not foldable:
            logger.warning("HRNeXt: norm %r cannot be folded into convolutions; FUSE_INFERENCE off", norm)
        self.set_formulation(fast_ops=fast_ops, fuse_inference=fuse_inference and foldable)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        h = cfg.MODEL.HRNEXT
        stages = []
        for name in ("STAGE1", "STAGE2", "STAGE3", "STAGE4"):
            st = getattr(h, name)
            stages.append({
                "num_modules": st.NUM_MODULES, "num_branches": st.NUM_BRANCHES,
                "num_blocks": list(st.NUM_BLOCKS), "num_channels": list(st.NUM_CHANNELS),
                "mlp_ratios": list(st.MLP_RATIOS), "num_kernels": list(st.NUM_KERNELS),
            })
        return {
            "stages": stages,
            "stem_width": h.STEM_WIDTH,
            "in_channels": input_shape.channels if input_shape is not None and input_shape.channels else 3,
            "drop_path_rate": h.DROP_PATH_RATE,
            "norm": h.NORM,
            "with_cp": h.WITH_CP,
            "multi_scale_output": h.MULTI_SCALE_OUTPUT,
            "out_features": list(h.OUT_FEATURES),
            "fast_ops": h.FAST_OPS,
            "fuse_inference": h.FUSE_INFERENCE,
        }

    @staticmethod
    def _make_transition(pre: Sequence[int], cur: Sequence[int], norm: str) -> nn.ModuleList:
        layers: List[Optional[nn.Module]] = []
        for i, ch in enumerate(cur):
            if i < len(pre):
                layers.append(None if ch == pre[i] else
                              ConvNormAct(nn.Conv2d(pre[i], ch, 3, 1, 1, bias=False), get_norm(norm, ch)))
            else:
                steps = []
                for j in range(i + 1 - len(pre)):
                    out = ch if j == i - len(pre) else pre[-1]
                    steps.append(ConvNormAct(nn.Conv2d(pre[-1], out, 3, 2, 1, bias=False), get_norm(norm, out)))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def init_weights(self) -> None:
        """Initialisation without a checkpoint (the reference's): every nn.Conv2d normal(std 0.001) and
        zero bias, norms weight 1 / bias 0; dynamic kernel banks keep their Kaiming-uniform init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_formulation(self, fast_ops: Optional[bool] = None, fuse_inference: Optional[bool] = None) -> None:
        """Switch every submodule between the reference ops and the fast ones (`fast_ops`) and
        enable/disable folded inference; the function computed stays the same."""
        set_formulation(self, fast_ops, fuse_inference)

    # Folded stem: only the stem's tensors key its cache.
    def _fold_source_modules(self):
        return (self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3, self.conv4, self.bn4)

    def _compute_fused(self):
        return [fold_conv_norm(getattr(self, f"conv{i}").weight, None, getattr(self, f"bn{i}"))
                for i in range(1, 5)]

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        convs = (self.conv1, self.conv2, self.conv3, self.conv4)
        if self.fused_active():
            for conv, (w, b) in zip(convs, self.fused_params()):
                x = conv2d_gelu(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
            return x
        for conv, bn in zip(convs, (self.bn1, self.bn2, self.bn3, self.bn4)):
            x = F.gelu(bn(conv(x)))
        return x

    @staticmethod
    def _run_stage(stage: nn.Sequential, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        for module in stage:
            xs = module(xs)
        return xs

    @staticmethod
    def _transit(transition: nn.ModuleList, ys: List[torch.Tensor]) -> List[torch.Tensor]:
        xs = []
        for i, t in enumerate(transition):
            if i < len(ys):
                xs.append(ys[i] if t is None else t(ys[i]))
            else:
                xs.append(t(ys[-1]))
        return xs

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"HRNeXt takes (N, C, H, W) input, got shape {tuple(x.shape)}")
        if self.fast_ops and cpu_kernels_usable(x):
            # Channels-last end to end on the CPU: oneDNN's fast depthwise / 1x1 convs, the compiled
            # dynamic and dilated depthwise kernels, and LayerNorms over channels without copies.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self._stem(x)
        ys = [self.layer1(x)]
        ys = self._run_stage(self.stage2, self._transit(self.transition1, ys))
        ys = self._run_stage(self.stage3, self._transit(self.transition2, ys))
        ys = self._run_stage(self.stage4, self._transit(self.transition3, ys))
        return {name: ys[self._branch_index[name]] for name in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_hrnext_backbone(cfg, input_shape: ShapeSpec) -> HRNeXt:
    """HRNeXt from cfg.MODEL.HRNEXT (see hrnext_d2/config.py)."""
    return HRNeXt(cfg, input_shape)
