"""Building blocks of HRNeXt: dynamic convolution, space-to-batch dilated depthwise convolution,
drop path, channels-last LayerNorm, the folded inference forms, BatchNorm synchronised across CPU
processes and activation checkpointing that keeps BatchNorm statistics."""
from .activation_checkpoint import checkpoint_keeping_norm_statistics
from .dilated_depthwise import dilated_depthwise_conv2d
from .drop_path import DropPath
from .dynamic_conv import DConv, DynamicKernelAggregation, KernelAggregation, KernelAttention
from .formulation import FormulationMixin, formulation, set_formulation
from .fused import FusedInferenceMixin, clear_all_fused_caches
from .norm import ChannelsLastLayerNorm, fold_conv_norm, is_foldable_norm, norm_scale_shift
from .sync_batch_norm import CPUSyncBatchNorm, get_norm

__all__ = [
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
