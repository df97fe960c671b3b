"""HRNeXt under Detectron2's FPN, for Keypoint R-CNN, Mask R-CNN, Faster R-CNN and RetinaNet.

HRNeXt's four branches (strides 4, 8, 16, 32) are the FPN's bottom-up features. MODEL.FPN.IN_FEATURES
may name them natively ("stride4" .. "stride32") or as Detectron2's ResNet configs do ("res2" ..
"res5", the same strides), so a Detectron2 R-CNN config works after changing MODEL.BACKBONE.NAME
alone. Every MODEL.FPN key (IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE) is used as by Detectron2's
ResNet-FPN builders. Branches other than stride 4 are fused in HRNeXt's last module only with
multi-scale output, which the builders switch on when the FPN reads those branches (the fuse layers
it adds start fresh when an official top-down checkpoint is loaded; see
`hrnext_d2.checkpoint.adapt_topdown_state_dict`). MODEL.BACKBONE.FREEZE_AT is not applied: HRNeXt
trains every stage, as the reference does.
"""
import logging
from typing import List, Sequence

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from .hrnext import HRNeXt

__all__ = ["hrnext_feature_names", "build_hrnext_bottom_up", "build_hrnext_fpn_backbone",
           "build_retinanet_hrnext_fpn_backbone"]

logger = logging.getLogger(__name__)

# Detectron2's ResNet stage names -> the HRNeXt branch of the same stride.
RESNET_STAGE_TO_BRANCH = {"res2": "stride4", "res3": "stride8", "res4": "stride16", "res5": "stride32"}


def hrnext_feature_names(names: Sequence[str], key: str = "MODEL.FPN.IN_FEATURES") -> List[str]:
    """HRNeXt's own output names for `names` given natively or as ResNet stages ("res2" -> "stride4")."""
    native = set(RESNET_STAGE_TO_BRANCH.values())
    if not names:
        raise ValueError(f"{key} is empty: name the HRNeXt branches the FPN reads, e.g. "
                         '["res2", "res3", "res4", "res5"] (= ["stride4", "stride8", "stride16", "stride32"])')
    out = []
    for name in names:
        mapped = RESNET_STAGE_TO_BRANCH.get(name, name)
        if mapped not in native:
            raise ValueError(
                f"{key}: unknown HRNeXt feature {name!r}; use {sorted(native)} or their ResNet-stage "
                f"names {sorted(RESNET_STAGE_TO_BRANCH)}"
            )
        out.append(mapped)
    return out


def build_hrnext_bottom_up(cfg, input_shape: ShapeSpec, features: Sequence[str]) -> HRNeXt:
    """HRNeXt from cfg.MODEL.HRNEXT that outputs `features` (native names); multi-scale output is
    switched on when any of them is not the stride-4 branch (MODEL.HRNEXT.OUT_FEATURES is not read)."""
    kwargs = HRNeXt.from_config(cfg, input_shape)
    needs_multi_scale = any(f != "stride4" for f in features)
    if needs_multi_scale and not kwargs["multi_scale_output"]:
        logger.info("HRNeXt-FPN: the FPN reads %s, so every branch is fused in the last module "
                    "(MODEL.HRNEXT.MULTI_SCALE_OUTPUT taken as True)", list(features))
    kwargs["multi_scale_output"] = kwargs["multi_scale_output"] or needs_multi_scale
    kwargs["out_features"] = list(features)
    return HRNeXt(**kwargs)


@BACKBONE_REGISTRY.register()
def build_hrnext_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """HRNeXt + FPN with LastLevelMaxPool: p2-p6 for the default four inputs (as
    `build_resnet_fpn_backbone`)."""
    in_features = hrnext_feature_names(cfg.MODEL.FPN.IN_FEATURES)
    bottom_up = build_hrnext_bottom_up(cfg, input_shape, in_features)
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_retinanet_hrnext_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """HRNeXt + FPN with LastLevelP6P7 on the stride-32 branch: p3-p7 for RetinaNet's inputs
    ["res3", "res4", "res5"] (as `build_retinanet_resnet_fpn_backbone`)."""
    in_features = hrnext_feature_names(cfg.MODEL.FPN.IN_FEATURES)
    bottom_up = build_hrnext_bottom_up(cfg, input_shape, in_features)
    if "stride32" not in in_features:
        raise ValueError(f"MODEL.FPN.IN_FEATURES={list(cfg.MODEL.FPN.IN_FEATURES)}: the RetinaNet FPN "
                         "builds p6/p7 from the stride-32 branch ('res5' / 'stride32'); include it")
    in_channels_p6p7 = bottom_up.output_shape()["stride32"].channels
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(in_channels_p6p7, cfg.MODEL.FPN.OUT_CHANNELS, in_feature="stride32"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
