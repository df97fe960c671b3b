"""Optimizer parameter groups: identical to Detectron2's own for its norm classes, and extended to
norms it does not know (channels-first LayerNorm)."""
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.layers.batch_norm import LayerNorm
from detectron2.solver.build import get_default_optimizer_params
from torch import nn

from hrnext_d2.solver import get_optimizer_params
from tests.data.topdown_fixtures import tiny_cfg


def _net(norm_cls):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.norm = norm_cls(4)
            self.head = nn.Conv2d(4, 2, 1)
            self.layer_scale_1 = nn.Parameter(torch.ones(4))

    return Net()


def _groups(groups):
    """{parameter id: (weight_decay, lr)} of a list of parameter groups."""
    return {id(p): (g["weight_decay"], g["lr"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("norm_cls", [nn.BatchNorm2d, FrozenBatchNorm2d, NaiveSyncBatchNorm, nn.GroupNorm.__new__])
def test_same_groups_as_detectron2_for_its_norms(norm_cls):
    if norm_cls is nn.GroupNorm.__new__:
        norm_cls = lambda c: nn.GroupNorm(2, c)  # noqa: E731
    cfg = tiny_cfg()
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0  # make the bias group differ in lr too
    model = _net(norm_cls)
    ours = get_optimizer_params(cfg, model)
    d2 = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides={"layer_scale_1": {"weight_decay": cfg.SOLVER.WEIGHT_DECAY_LAYER_SCALE}},
    )
    assert _groups(ours) == _groups(d2)
    assert len(ours) == len(d2)


def test_channels_first_layernorm_gets_norm_decay():
    cfg = tiny_cfg()
    model = _net(LayerNorm)
    groups = _groups(get_optimizer_params(cfg, model))
    assert groups[id(model.norm.weight)][0] == cfg.SOLVER.WEIGHT_DECAY_NORM == 0.0
    assert groups[id(model.conv.weight)][0] == cfg.SOLVER.WEIGHT_DECAY == 0.01
    assert groups[id(model.layer_scale_1)][0] == 0.0
