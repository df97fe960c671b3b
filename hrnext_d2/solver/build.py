"""Optimizer from config: Detectron2's parameter groups, plus AdamW and the layer-scale exclusion.

Detectron2's own ``build_optimizer`` builds SGD only. The paper trains with AdamW (betas
SOLVER.BETAS, decoupled weight decay) and no decay on norms, biases and layer scales.
"""
from typing import Any, Dict, List, Set

import torch

from detectron2.config import CfgNode
from detectron2.solver.build import (
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
    reduce_param_groups,
)

__all__ = ["get_optimizer_params", "build_optimizer"]

LAYER_SCALE_PREFIX = "layer_scale"


def _is_norm_module(module: torch.nn.Module) -> bool:
    # Detectron2 recognises torch's norm classes; channels-first LayerNorms and other custom norms
    # (detectron2.layers.LayerNorm, FrozenBatchNorm2d, ...) are recognised by their class name.
    return "norm" in type(module).__name__.lower()


def get_optimizer_params(cfg: CfgNode, model: torch.nn.Module) -> List[Dict[str, Any]]:
    """Parameter groups: SOLVER.WEIGHT_DECAY for weights; WEIGHT_DECAY_NORM for every norm's
    parameters; WEIGHT_DECAY_BIAS (and BIAS_LR_FACTOR) for biases; WEIGHT_DECAY_LAYER_SCALE for
    parameters named ``layer_scale*``.

    For torch's norm classes this is exactly ``get_default_optimizer_params(..., overrides=...)``
    (tested for BN, FrozenBN, naiveSyncBN); the extra pass exists for norms Detectron2's list does
    not know, such as ``detectron2.layers.batch_norm.LayerNorm`` (channels-first, used by ViTDet), whose weights would decay."""
    layer_scale_names = {
        name.rsplit(".", 1)[-1]
        for name, _ in model.named_parameters()
        if name.rsplit(".", 1)[-1].startswith(LAYER_SCALE_PREFIX)
    }
    overrides = {n: {"weight_decay": cfg.SOLVER.WEIGHT_DECAY_LAYER_SCALE} for n in layer_scale_names}
    groups = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides=overrides,
    )
    # Norm parameters of classes Detectron2 does not list.
    extra_norm: Set[torch.nn.Parameter] = set()
    for module in model.modules():
        if _is_norm_module(module):
            extra_norm.update(p for p in module.parameters(recurse=False) if p.requires_grad)
    per_param: List[Dict[str, Any]] = []
    for g in groups:
        hyper = {k: v for k, v in g.items() if k != "params"}
        for p in g["params"]:
            h = dict(hyper)
            if p in extra_norm:
                h["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_NORM
            per_param.append({"params": [p], **h})
    return reduce_param_groups(per_param)


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (SOLVER.OPTIMIZER "AdamW") or SGD ("SGD"), with SOLVER.CLIP_GRADIENTS if enabled."""
    params = get_optimizer_params(cfg, model)
    name = cfg.SOLVER.OPTIMIZER
    if name.lower() == "adamw":
        betas = tuple(float(b) for b in cfg.SOLVER.BETAS)
        if len(betas) != 2:
            raise ValueError(f"SOLVER.BETAS must have two values, got {cfg.SOLVER.BETAS}")
        optimizer = torch.optim.AdamW(
            params, lr=cfg.SOLVER.BASE_LR, betas=betas, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )
    elif name.lower() == "sgd":
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            foreach=True,
        )
    else:
        raise ValueError(f"Unknown SOLVER.OPTIMIZER {name!r}: use 'AdamW' or 'SGD'")
    return maybe_add_gradient_clipping(cfg, optimizer)
