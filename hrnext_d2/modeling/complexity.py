"""Parameters and FLOPs of the top-down pose model (HRNeXt backbone + heatmap head) with fvcore.

fvcore counts one multiply-add as one FLOP and skips elementwise ops (GELU, sigmoid, mul, add); those
are reported as not counted. The count uses the reference formulation of every op by default (the
dynamic convolutions trace as grouped convolutions with the batch folded into the groups, so the
per-sample kernels are counted like ordinary convolutions; the kernel mixing is a matmul), which is
what the reference figures in golden/hrnext/README.md measured. The fast formulation can be counted as
well (`formulation="fast"`): its batched matmuls (bmm / baddbmm) are counted per sample as well, its
spatial means like the reference's pooling. Its total is within 0.1% of the reference's: it skips the
bilinear resizes at scale 1 (no-ops, 7.6 M for HRNeXt-S at 256x192) and adds small matmuls that give
the pooled means of dynamic 1x1 convs by linearity (6.3 M).
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from detectron2.modeling import build_backbone, build_model
from fvcore.nn import FlopCountAnalysis, parameter_count
from fvcore.nn.jit_handles import get_shape
from torch import nn

from .layers import formulation as formulation_context
from .layers.export_forms import use_export_forms

__all__ = ["ComplexityReport", "build_pose_model_for_counting", "count_complexity", "summarize_config",
           "PAPER_COUNTER_NOTE"]

PAPER_COUNTER_NOTE = (
    "The paper's 2.5G (S, 256x192) / 10.8G (B, 384x288) come from its own counter (units of 2^30, "
    "leaf modules only: 2.52 Gi / 10.83 Gi); fvcore counts every conv/matmul/norm/pool/resize op, "
    "giving 2.732 G / 11.713 G for the same networks.")


def _baddbmm_flop_jit(inputs, outputs) -> int:
    """baddbmm(input, b1 (n, c, t), b2 (n, t, d)): n*c*t*d multiply-adds (the added input is free)."""
    n, c, t = get_shape(inputs[1])
    d = get_shape(inputs[2])[-1]
    return n * c * t * d


def _mean_flop_jit(inputs, outputs) -> int:
    """mean over dims: one add per input element, as fvcore counts adaptive_avg_pool2d (the fast
    path pools with a mean over H, W)."""
    n = 1
    for d in get_shape(inputs[0]):
        n *= d
    return n


EXTRA_HANDLES = {"aten::baddbmm": _baddbmm_flop_jit, "aten::mean": _mean_flop_jit}


@dataclass
class ComplexityReport:
    parameters: int
    flops: int
    image_hw: Tuple[int, int]
    model_name: str
    formulation: str
    by_operator: Dict[str, int] = field(default_factory=dict)
    uncounted_ops: Dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        h, w = self.image_hw
        lines = [
            f"model: {self.model_name} at {h}x{w} (H x W), {self.formulation} formulation",
            f"parameters: {self.parameters:,}",
            f"FLOPs: {self.flops / 1e9:.2f} GFLOPs ({self.flops:,}; fvcore, one multiply-add = one FLOP, batch 1)",
        ]
        parts = ", ".join(f"{k} {v / 1e9:.3f} G" for k, v in sorted(self.by_operator.items(), key=lambda kv: -kv[1]))
        lines.append(f"  by operator: {parts}")
        if self.uncounted_ops:
            ops = ", ".join(f"{k} ({v} calls)" for k, v in sorted(self.uncounted_ops.items(), key=lambda kv: -kv[1]))
            lines.append(f"not counted (elementwise / shape ops, as in the reference figures): {ops}")
        lines.append(f"note: {PAPER_COUNTER_NOTE}")
        return "\n".join(lines)


class _HeatmapModel(nn.Module):
    """crops -> heatmaps: backbone feature `in_feature` then the head's final conv (fallback when the
    meta-architecture is not available)."""

    def __init__(self, backbone: nn.Module, in_feature: str, num_keypoints: int, kernel: int):
        super().__init__()
        self.backbone = backbone
        self.in_feature = in_feature
        c = backbone.output_shape()[in_feature].channels
        self.keypoint_head = nn.Module()
        self.keypoint_head.final_layer = nn.Conv2d(c, num_keypoints, kernel, padding=(kernel - 1) // 2)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.keypoint_head.final_layer(self.backbone(crops)[self.in_feature])


class _CropsForward(nn.Module):
    """Wraps a TopDownPoseEstimator so that tracing runs `forward_crops` (crops -> heatmaps)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model.forward_crops(crops)


def build_pose_model_for_counting(cfg) -> Tuple[nn.Module, nn.Module, str]:
    """(module mapping crops -> heatmaps, the pose model whose backbone + head are counted, its name).

    Uses the registered meta-architecture (`build_model`) when it provides `forward_crops`; otherwise
    the backbone + a final conv with MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS outputs.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.CONFIG_FILE = ""
    k = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
    try:
        model = build_model(cfg)
        if hasattr(model, "forward_crops") and hasattr(model, "keypoint_head"):
            return _CropsForward(model), model, f"{type(model).__name__} (HRNeXt + heatmap head, K={k})"
    except KeyError:  # meta-architecture not registered
        pass
    model = _HeatmapModel(build_backbone(cfg), cfg.MODEL.TOPDOWN.IN_FEATURE, k,
                          cfg.MODEL.TOPDOWN.HEAD.FINAL_CONV_KERNEL)
    return model, model, f"HRNeXt + 1x1 heatmap conv (K={k})"


def count_complexity(runner: nn.Module, counted: nn.Module, image_hw: Tuple[int, int],
                     formulation: str = "reference", model_name: str = "") -> ComplexityReport:
    """Parameters of `counted.backbone` + `counted.keypoint_head` and fvcore FLOPs of `runner` on one
    (1, 3, H, W) crop, in eval mode, with the backbone's ops in the given formulation and no folding."""
    if formulation not in ("reference", "fast"):
        raise ValueError(f"formulation must be 'reference' or 'fast', got {formulation!r}")
    params = sum(parameter_count(m)[""] for m in (counted.backbone, counted.keypoint_head))
    was_training = runner.training
    runner.eval()
    h, w = (int(v) for v in image_hw)
    try:
        # fvcore traces the model: keep the eager formulations (not the export forms a trace selects).
        with formulation_context(counted.backbone, fast_ops=formulation == "fast", fuse_inference=False), \
                use_export_forms(False):
            fa = FlopCountAnalysis(runner, (torch.zeros(1, 3, h, w),)).set_op_handle(**EXTRA_HANDLES)
            fa.unsupported_ops_warnings(False)
            fa.uncalled_modules_warnings(False)
            with torch.no_grad():
                total = fa.total()
            by_op = dict(fa.by_operator())
            uncounted = dict(Counter(fa.unsupported_ops()))
    finally:
        runner.train(was_training)
    return ComplexityReport(params, int(total), (h, w), model_name or type(runner).__name__, formulation,
                            by_op, uncounted)


def summarize_config(cfg, image_hw: Optional[Tuple[int, int]] = None, formulation: str = "reference"
                     ) -> ComplexityReport:
    """Complexity of the pose model of `cfg`; `image_hw` defaults to INPUT.TOPDOWN.IMAGE_SIZE (w, h)."""
    if image_hw is None:
        w, h = cfg.INPUT.TOPDOWN.IMAGE_SIZE
        image_hw = (h, w)
    runner, counted, name = build_pose_model_for_counting(cfg)
    return count_complexity(runner, counted, image_hw, formulation, name)
