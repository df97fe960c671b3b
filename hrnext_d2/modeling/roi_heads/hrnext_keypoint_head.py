"""HRNeXt's design on ROI features: a Keypoint R-CNN head for Detectron2's ROI_KEYPOINT_HEAD_REGISTRY.

Why: HRNeXt estimates pose from person crops of a fixed aspect (256x192) with high-resolution context
blocks; Detectron2's Keypoint R-CNN head pools square 14x14 features from the raw box and runs eight
plain 3x3 convs. This head carries the top-down choices into Keypoint R-CNN:

- pooled features of a configurable (height, width), from the box padded to that aspect and enlarged
  by BOX_PADDING (the top-down crop rule), when MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE is "" (Detectron2
  then hands the head the feature maps; with a pooler type set, the head takes Detectron2's square
  pooled features of the raw boxes instead, so a stock config also works);
- a 1x1 projection, HRNeXt context blocks (`HighResolutionContextBlock`) and HRNeXt's branch-final
  LayerNorm, a stride-2 deconvolution to the heatmaps and Detectron2's bilinear upsampling;
- Detectron2's softmax cross-entropy loss or Gaussian-target MSE (LOSS), for any heatmap shape;
- Detectron2's keypoint inference (`heatmaps_to_keypoints`), so `pred_keypoints` are (x, y, score) in
  image coordinates as from `KRCNNConvDeconvUpsampleHead`.
"""
import logging
from typing import Dict, List, Sequence, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ConvTranspose2d, ShapeSpec, get_norm
from detectron2.modeling.roi_heads import ROI_KEYPOINT_HEAD_REGISTRY, BaseKeypointRCNNHead
from detectron2.structures import Boxes, Instances
from torch import nn

from ..backbone.hrnext import HighResolutionContextBlock
from ..layers import ChannelsLastLayerNorm, is_foldable_norm, set_formulation
from .keypoint_targets import (
    keypoint_cross_entropy_loss,
    keypoint_gaussian_mse_loss,
    keypoint_inference,
    pad_boxes_to_aspect,
)
from .rectangular_pooler import RectangularROIPooler

__all__ = ["HRNeXtKeypointHead", "KEYPOINT_LOSSES"]

logger = logging.getLogger(__name__)

KEYPOINT_LOSSES = ("cross_entropy", "gaussian_mse")


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class HRNeXtKeypointHead(BaseKeypointRCNNHead):
    """ROI features -> K keypoint heatmaps with HRNeXt context blocks (see the module docstring).

    Heatmaps are (4 H, 4 W) for pooled (H, W) features with UP_SCALE 2 (the deconv doubles, the
    bilinear step multiplies by UP_SCALE).
    """

    @configurable
    def __init__(
        self,
        *,
        num_keypoints: int,
        in_channels: int,
        in_features: Sequence[str] = (),
        pooler_scales: Sequence[float] = (),
        pooler_resolution: Sequence[int] = (16, 12),
        pooler_type: str = "ROIAlignV2",
        sampling_ratio: int = 0,
        box_padding: float = 1.25,
        channels: int = 128,
        num_blocks: int = 2,
        mlp_ratio: float = 4.0,
        num_kernels: int = 1,
        norm: str = "BN",
        up_scale: float = 2.0,
        loss: str = "cross_entropy",
        gaussian_sigma: float = 2.0,
        fast_ops: bool = True,
        fuse_inference: bool = True,
        **kwargs,
    ):
        """
        Args:
            in_features / pooler_scales: feature maps the head pools itself and their 1 / stride;
                empty when Detectron2's ROI heads pool (then the input is already a tensor).
            pooler_resolution: (height, width) of the features the head pools; box_padding: the
                enlargement after padding each box to that aspect.
            channels, num_blocks, mlp_ratio, num_kernels, norm: the context blocks.
            up_scale: bilinear upsampling after the stride-2 deconvolution (Detectron2: 2).
            loss: "cross_entropy" (Detectron2's) or "gaussian_mse"; gaussian_sigma in heatmap pixels.
            kwargs: BaseKeypointRCNNHead's (loss_weight, loss_normalizer).
        """
        super().__init__(num_keypoints=num_keypoints, **kwargs)
        if loss not in KEYPOINT_LOSSES:
            raise ValueError(f"MODEL.ROI_KEYPOINT_HEAD.HRNEXT.LOSS must be one of {KEYPOINT_LOSSES}, got {loss!r}")
        if len(pooler_resolution) != 2 or min(pooler_resolution) < 1:
            raise ValueError("MODEL.ROI_KEYPOINT_HEAD.HRNEXT.POOLER_RESOLUTION must be (height, width) "
                             f"of positive integers, got {list(pooler_resolution)}")
        if num_blocks < 0 or channels < 1:
            raise ValueError(f"MODEL.ROI_KEYPOINT_HEAD.HRNEXT: NUM_BLOCKS {num_blocks} must be >= 0 and "
                             f"CHANNELS {channels} >= 1")
        if not norm:
            raise ValueError("MODEL.ROI_KEYPOINT_HEAD.HRNEXT.NORM: context blocks need a norm (e.g. 'BN', 'GN')")
        self.in_features = list(in_features)
        self.pooler_resolution = tuple(int(v) for v in pooler_resolution)
        self.box_padding = float(box_padding)
        self.pooler = None
        if self.in_features:
            self.pooler = RectangularROIPooler(
                output_size=self.pooler_resolution, scales=tuple(pooler_scales),
                sampling_ratio=sampling_ratio, pooler_type=pooler_type,
            )
        self.loss_type = loss
        self.gaussian_sigma = float(gaussian_sigma)
        self.up_scale = float(up_scale)

        self.input_proj = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False), get_norm(norm, channels), nn.GELU()
        )
        self.blocks = nn.Sequential(
            *[HighResolutionContextBlock(channels, mlp_ratio, num_kernels, 0.0, norm) for _ in range(num_blocks)],
            ChannelsLastLayerNorm(channels),
        )
        self.score_lowres = ConvTranspose2d(channels, num_keypoints, 4, stride=2, padding=1)
        self._init_weights()
        foldable = is_foldable_norm(self.input_proj[1])
        set_formulation(self.blocks, fast_ops=fast_ops, fuse_inference=fuse_inference and foldable)

    def _init_weights(self) -> None:
        # Context blocks as HRNeXt initialises them (convs normal(0.001): blocks start near identity
        # through their layer scales); projection and deconv as Detectron2's keypoint head (MSRA fill).
        for m in self.blocks.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for conv in (self.input_proj[0], self.score_lowres):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Union[ShapeSpec, Dict[str, ShapeSpec]]):
        ret = super().from_config(cfg, input_shape)
        h = cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT
        if isinstance(input_shape, dict):  # ROI_KEYPOINT_HEAD.POOLER_TYPE "": this head pools
            channels = {s.channels for s in input_shape.values()}
            if len(channels) != 1:
                raise ValueError(f"HRNeXtKeypointHead: the pooled features {list(input_shape)} have different "
                                 f"channel counts {sorted(channels)}")
            ret.update(
                in_channels=channels.pop(),
                in_features=list(input_shape),
                pooler_scales=[1.0 / s.stride for s in input_shape.values()],
                pooler_resolution=list(h.POOLER_RESOLUTION),
                pooler_type=h.POOLER_TYPE,
                sampling_ratio=cfg.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO,
                box_padding=h.BOX_PADDING,
            )
        else:
            ret.update(in_channels=input_shape.channels,
                       pooler_resolution=[input_shape.height, input_shape.width])
        ret.update(
            channels=h.CHANNELS,
            num_blocks=h.NUM_BLOCKS,
            mlp_ratio=h.MLP_RATIO,
            num_kernels=h.NUM_KERNELS,
            norm=h.NORM,
            up_scale=h.UP_SCALE,
            loss=h.LOSS,
            gaussian_sigma=h.GAUSSIAN_SIGMA,
            fast_ops=cfg.MODEL.HRNEXT.FAST_OPS,
            fuse_inference=cfg.MODEL.HRNEXT.FUSE_INFERENCE,
        )
        return ret

    @property
    def heatmap_size(self):
        """(height, width) of the heatmaps for this head's pooled resolution."""
        return tuple(int(round(2 * v * self.up_scale)) for v in self.pooler_resolution)

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        x = self.score_lowres(self.blocks(self.input_proj(x)))
        if self.up_scale != 1:
            x = F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)
        return x

    def pooled_boxes(self, instances: List[Instances]) -> List[torch.Tensor]:
        """Per image, the XYXY boxes the features are pooled from: proposals (training) or predicted
        boxes (inference), padded to the pooled aspect and enlarged when this head pools."""
        boxes = [(x.proposal_boxes if self.training else x.pred_boxes).tensor for x in instances]
        if self.pooler is None:
            return boxes
        h, w = self.pooler_resolution
        return [pad_boxes_to_aspect(b, w / h, self.box_padding) for b in boxes]

    def forward(self, x: Union[torch.Tensor, Dict[str, torch.Tensor]], instances: List[Instances]):
        """x: the feature maps by name (this head pools) or Detectron2's pooled features."""
        boxes = self.pooled_boxes(instances)
        if isinstance(x, dict):
            if self.pooler is None:
                raise ValueError("HRNeXtKeypointHead was built for pooled features but got feature maps")
            x = self.pooler([x[f] for f in self.in_features], [Boxes(b) for b in boxes])
        heatmaps = self.layers(x)
        if self.training:
            normalizer = None if self.loss_normalizer == "visible" else len(instances) * self.loss_normalizer
            if self.loss_type == "cross_entropy":
                loss = keypoint_cross_entropy_loss(heatmaps, instances, boxes, normalizer)
            else:
                loss = keypoint_gaussian_mse_loss(heatmaps, instances, boxes, normalizer, self.gaussian_sigma)
            return {"loss_keypoint": loss * self.loss_weight}
        keypoint_inference(heatmaps, instances, boxes, "softmax" if self.loss_type == "cross_entropy" else "peak")
        return instances
