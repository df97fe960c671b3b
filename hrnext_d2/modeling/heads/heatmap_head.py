"""Top-down heatmap head (mmpose 0.23 ``TopdownHeatmapSimpleHead``) and its JointsMSE loss.

The module layout (``deconv_layers``, ``final_layer``) mirrors mmpose's so that official
``keypoint_head.*`` checkpoint keys load into this head unchanged. It reads a whole crop's feature
map (not ROI features), so it lives in TOPDOWN_HEAD_REGISTRY, not in Detectron2's ROI keypoint one.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from .build import TOPDOWN_HEAD_REGISTRY

__all__ = ["TopdownHeatmapSimpleHead", "joints_mse_loss"]


def joints_mse_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    target_weight: Optional[torch.Tensor] = None,
    use_target_weight: bool = True,
    loss_weight: float = 1.0,
) -> torch.Tensor:
    """mmpose 0.23 ``JointsMSELoss``: per joint ``MSE(pred * w, target * w)`` (mean over batch and
    pixels), averaged over joints, times ``loss_weight``. No 0.5 factor (mmpose dropped it).

    Args:
        pred, target: (B, K, H, W) heatmaps.
        target_weight: (B, K, 1) or (B, K) per-joint weights (used when ``use_target_weight``).
    """
    if pred.shape != target.shape:
        raise ValueError(f"joints_mse_loss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    b, k = pred.shape[:2]
    diff = (pred - target).reshape(b, k, -1)
    if use_target_weight:
        if target_weight is None:
            raise ValueError("joints_mse_loss: use_target_weight=True needs target_weight")
        diff = diff * target_weight.reshape(b, k, 1).to(diff.dtype)
    # mean over (B, H*W) for each joint, then over joints == mean over everything.
    per_joint = diff.pow(2).mean(dim=(0, 2))
    return per_joint.mean() * loss_weight


def _deconv_padding(kernel: int):
    """(padding, output_padding) so that a stride-2 deconv exactly doubles the size (mmpose)."""
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise ValueError(f"MODEL.TOPDOWN.HEAD.NUM_DECONV_KERNELS: unsupported deconv kernel {kernel} (use 2, 3 or 4)")


@TOPDOWN_HEAD_REGISTRY.register()
class TopdownHeatmapSimpleHead(nn.Module):
    """Optional stride-2 deconvs (ConvTranspose2d without bias + BN + ReLU), then one conv with bias
    to K heatmaps. HRNeXt uses no deconv and a 1x1 final conv on the stride-4 feature.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_keypoints: int,
        num_deconv_layers: int = 0,
        num_deconv_filters: Sequence[int] = (256, 256, 256),
        num_deconv_kernels: Sequence[int] = (4, 4, 4),
        final_conv_kernel: int = 1,
        use_target_weight: bool = True,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        if num_deconv_layers < 0:
            raise ValueError(f"MODEL.TOPDOWN.HEAD.NUM_DECONV_LAYERS must be >= 0, got {num_deconv_layers}")
        if num_deconv_layers > 0 and (
            len(num_deconv_filters) < num_deconv_layers or len(num_deconv_kernels) < num_deconv_layers
        ):
            raise ValueError(
                "MODEL.TOPDOWN.HEAD: NUM_DECONV_FILTERS / NUM_DECONV_KERNELS must have at least "
                f"NUM_DECONV_LAYERS={num_deconv_layers} entries, got {list(num_deconv_filters)} / {list(num_deconv_kernels)}"
            )
        if final_conv_kernel not in (1, 3):
            raise ValueError(f"MODEL.TOPDOWN.HEAD.FINAL_CONV_KERNEL must be 1 or 3, got {final_conv_kernel}")
        self.num_keypoints = num_keypoints
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

        channels = in_channels
        if num_deconv_layers > 0:
            layers: List[nn.Module] = []
            for i in range(num_deconv_layers):
                kernel = int(num_deconv_kernels[i])
                padding, output_padding = _deconv_padding(kernel)
                planes = int(num_deconv_filters[i])
                layers.append(
                    nn.ConvTranspose2d(
                        channels, planes, kernel, stride=2, padding=padding,
                        output_padding=output_padding, bias=False,
                    )
                )
                layers.append(nn.BatchNorm2d(planes))
                layers.append(nn.ReLU(inplace=True))
                channels = planes
            self.deconv_layers = nn.Sequential(*layers)
        else:
            self.deconv_layers = nn.Identity()
        self.final_layer = nn.Conv2d(
            channels, num_keypoints, final_conv_kernel, stride=1, padding=(final_conv_kernel - 1) // 2
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """mmpose init: deconvs and final conv normal(std 0.001), conv bias 0, BN weight 1 / bias 0."""
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.constant_(self.final_layer.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: Union[ShapeSpec, Dict[str, ShapeSpec]]):
        if isinstance(input_shape, dict):
            name = cfg.MODEL.TOPDOWN.IN_FEATURE
            if name not in input_shape:
                raise ValueError(
                    f"MODEL.TOPDOWN.IN_FEATURE={name!r} is not a backbone output; available: {sorted(input_shape)}"
                )
            input_shape = input_shape[name]
        head = cfg.MODEL.TOPDOWN.HEAD
        return {
            "in_channels": input_shape.channels,
            "num_keypoints": cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS,
            "num_deconv_layers": head.NUM_DECONV_LAYERS,
            "num_deconv_filters": list(head.NUM_DECONV_FILTERS),
            "num_deconv_kernels": list(head.NUM_DECONV_KERNELS),
            "final_conv_kernel": head.FINAL_CONV_KERNEL,
            "use_target_weight": head.USE_TARGET_WEIGHT,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) feature -> (B, K, h * 2^num_deconv, w * 2^num_deconv) heatmaps."""
        return self.final_layer(self.deconv_layers(x))

    def losses(
        self, pred: torch.Tensor, target: torch.Tensor, target_weight: Optional[torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """``{"loss_keypoint": JointsMSELoss}`` as mmpose computes it."""
        return {
            "loss_keypoint": joints_mse_loss(
                pred, target, target_weight, self.use_target_weight, self.loss_weight
            )
        }
