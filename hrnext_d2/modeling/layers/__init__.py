"""Building blocks of HRNeXt: dynamic convolution, space-to-batch dilated depthwise convolution,
drop path, channels-last LayerNorm, the folded inference forms, BatchNorm synchronised across CPU
processes, activation checkpointing that keeps BatchNorm statistics, and the compiled CPU kernels."""
from .activation_checkpoint import checkpoint_keeping_norm_statistics
from .conv_gelu import conv2d_gelu
from .depthwise_nhwc import cpu_kernels_available, cpu_kernels_usable, depthwise_conv2d, pointwise_depthwise_gelu, pointwise_residual_
from .dilated_depthwise import dilated_depthwise_conv2d
from .drop_path import DropPath
from .dynamic_conv import DConv, DynamicKernelAggregation, KernelAggregation, KernelAttention
from .formulation import FormulationMixin, formulation, set_formulation
from .fused import FusedInferenceMixin, clear_all_fused_caches
from .norm import ChannelsLastLayerNorm, fold_conv_norm, is_foldable_norm, norm_scale_shift
from .sync_batch_norm import CPUSyncBatchNorm, get_norm

__all__ = [
    "conv2d_gelu",
    "cpu_kernels_available",
    "cpu_kernels_usable",
    "depthwise_conv2d",
    "pointwise_depthwise_gelu",
    "pointwise_residual_",
    "checkpoint_keeping_norm_statistics",
    "CPUSyncBatchNorm",
    "get_norm",
    "dilated_depthwise_conv2d",
    "DropPath",
    "DConv",
    "DynamicKernelAggregation",
    "KernelAggregation",
    "KernelAttention",
    "FormulationMixin",
    "formulation",
    "set_formulation",
    "FusedInferenceMixin",
    "clear_all_fused_caches",
    "ChannelsLastLayerNorm",
    "fold_conv_norm",
    "is_foldable_norm",
    "norm_scale_shift",
]
