"""Golden HRNeXt data of ../shared/golden/hrnext (manifests and reference outputs), with skips when
absent. Weights come from the package's fill rule (`hrnext_d2.checkpoint.synthetic_weights`), which
the golden README defines."""
from pathlib import Path
from typing import Dict

import torch

from hrnext_d2.checkpoint.synthetic_weights import fill_like_official, official_state_dict  # noqa: F401
from tests.conftest import shared_path


def manifest(name: str) -> Path:
    """Path of golden/hrnext/manifest_<name>.json (skips when absent); name e.g. 'hrnext_s_coco'."""
    return shared_path("golden", "hrnext", f"manifest_{name}.json")


def golden(name: str) -> Dict[str, torch.Tensor]:
    """golden/hrnext/<name>.pt loaded with weights_only (skips when absent); name e.g.
    'golden_hrnext_s_coco_seed0'."""
    p = shared_path("golden", "hrnext", name if name.endswith(".pt") else f"{name}.pt")
    return torch.load(p, weights_only=True)
