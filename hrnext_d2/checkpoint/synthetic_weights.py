"""Deterministic trained-like weights for HRNeXt models, by the fill rule of the reference's golden data.

Why: official checkpoints are not always at hand (tests, benchmarks, export checks), and a random
init (conv std 0.001, BatchNorm identity) exercises neither the BatchNorm folding nor realistic
activation magnitudes. The rule, given an integer seed: one CPU generator consumed in state-dict
order, float64 draws cast to the entry's dtype; running_var U(0.75, 1.25), running_mean 0.1 N,
layer scales U(0.1, 0.2), other 1-D weights 1 + 0.1 N, biases 0.1 N, kernel banks (5-D)
N / sqrt(prod(shape[2:])), other weights N / sqrt(prod(shape[1:])), integer entries 0.
"""
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Tuple, Union

import torch
from torch import nn

__all__ = ["fill_value", "official_state_dict", "fill_like_official"]

_LAYER_SCALES = ("layer_scale_1", "layer_scale_2", "layer_scale_3")


def fill_value(key: str, shape: Tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """One entry by the rule above, as float64 drawn from `g` (the caller casts)."""
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g, dtype=torch.float64) * 0.5 + 0.75
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=g, dtype=torch.float64) * 0.1
    if key.endswith(_LAYER_SCALES):
        return (torch.rand(shape, generator=g, dtype=torch.float64) * 0.5 + 0.5) * 0.2
    if len(shape) == 1:
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        return 1 + 0.1 * r if key.endswith(".weight") else 0.1 * r
    if len(shape) == 5:
        return torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(math.prod(shape[2:]))
    return torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(math.prod(shape[1:]))


def official_state_dict(manifest_path: Union[str, Path], seed: int) -> "OrderedDict[str, torch.Tensor]":
    """An official-format mmpose state dict (`backbone.*`, `keypoint_head.final_layer.*`) from a
    manifest (a json list of [key, shape, dtype] in state-dict order) and a seed."""
    entries = json.loads(Path(manifest_path).read_text())
    g = torch.Generator().manual_seed(int(seed))
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, shape, dtype in entries:
        shape = tuple(shape)
        if dtype.startswith("int") or key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        out[key] = fill_value(key, shape, g).to(getattr(torch, dtype))
    return out


def fill_like_official(module: nn.Module, seed: int) -> nn.Module:
    """Load `module` with weights drawn by the rule from its own state dict (no manifest needed)."""
    g = torch.Generator().manual_seed(int(seed))
    sd = OrderedDict()
    for key, v in module.state_dict().items():
        if not v.is_floating_point():
            sd[key] = torch.zeros_like(v)
        else:
            sd[key] = fill_value(key, tuple(v.shape), g).to(v.dtype)
    module.load_state_dict(sd)
    return module
