"""Official-format HRNeXt state dicts built from the golden manifests (see golden/hrnext/README.md).

The manifests list the reference model's `state_dict()` keys, shapes and dtypes in order; the README's
fill rule turns a manifest plus an integer seed into deterministic weights. Tests use this to stand in
for official checkpoints, which are not available offline.
"""
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Union

import torch

from tests.conftest import shared_path

_LAYER_SCALES = ("layer_scale_1", "layer_scale_2", "layer_scale_3")


def _fill(key: str, shape, g: torch.Generator) -> torch.Tensor:
    """One entry by the README's rule (float64 draws from `g`, cast to float32 by the caller)."""
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
    """The official mmpose state dict (keys `backbone.*`, `keypoint_head.final_layer.*`) for `seed`."""
    entries = json.loads(Path(manifest_path).read_text())
    g = torch.Generator().manual_seed(int(seed))
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, shape, dtype in entries:
        shape = tuple(shape)
        if dtype.startswith("int") or key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        out[key] = _fill(key, shape, g).to(getattr(torch, dtype))
    return out


def manifest(name: str) -> Path:
    """Path of golden/hrnext/manifest_<name>.json (skips when absent); name e.g. 'hrnext_s_coco'."""
    return shared_path("golden", "hrnext", f"manifest_{name}.json")


def golden(name: str) -> Dict[str, torch.Tensor]:
    """golden/hrnext/<name>.pt loaded with weights_only (skips when absent); name e.g.
    'golden_hrnext_s_coco_seed0'."""
    p = shared_path("golden", "hrnext", name if name.endswith(".pt") else f"{name}.pt")
    return torch.load(p, weights_only=True)


def fill_like_official(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Load `module` with weights drawn by the same fill rule from its own state dict (no manifest
    needed): non-trivial BN statistics, layer scales and kernels for formulation comparisons."""
    g = torch.Generator().manual_seed(int(seed))
    sd = OrderedDict()
    for key, v in module.state_dict().items():
        if not v.is_floating_point():
            sd[key] = torch.zeros_like(v)
        else:
            sd[key] = _fill(key, tuple(v.shape), g).to(v.dtype)
    module.load_state_dict(sd)
    return module
