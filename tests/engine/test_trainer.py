"""Trainer: optimizer groups, LR schedule, epoch-based length, scaling, and real training steps."""
import math

import pytest
import torch
from torch import nn


from hrnext_d2.engine import Trainer
from hrnext_d2.engine.trainer import apply_epoch_schedule, norm_for_world_size
from hrnext_d2.solver import build_optimizer
from tests.data.topdown_fixtures import register_fixture_datasets, tiny_cfg


class LayerNorm2d(nn.Module):
    """A channels-first LayerNorm like the ones backbones define themselves."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return x


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.ln = LayerNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.layer_scale_1 = nn.Parameter(torch.ones(4))


def _wd_of(opt, param):
    for g in opt.param_groups:
        if any(p is param for p in g["params"]):
            return g["weight_decay"]
    raise AssertionError("parameter not in the optimizer")


def test_adamw_param_groups_no_decay_on_norms_biases_layer_scales():
    cfg = tiny_cfg()
    m = Block()
    opt = build_optimizer(cfg, m)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["lr"] == cfg.SOLVER.BASE_LR
    assert _wd_of(opt, m.conv.weight) == 0.01 and _wd_of(opt, m.head.weight) == 0.01
    for p in (m.bn.weight, m.bn.bias, m.ln.weight, m.ln.bias, m.head.bias, m.layer_scale_1):
        assert _wd_of(opt, p) == 0.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))

    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    sgd = build_optimizer(cfg, m)
    assert isinstance(sgd, torch.optim.SGD) and type(sgd).__name__ == "SGDWithGradientClip"
    m.head.weight.grad = torch.full_like(m.head.weight, 10.0)
    before = m.head.weight.detach().clone()
    for g in sgd.param_groups:
        g["weight_decay"] = 0.0
    sgd.step()
    # clipped to norm 1e-3 per parameter before the step (lr 0.004)
    assert (m.head.weight.detach() - before).norm().item() == pytest.approx(0.004 * 1e-3, rel=1e-2)
    cfg.SOLVER.OPTIMIZER = "Adam?"
    with pytest.raises(ValueError, match="Adam\\?"):
        build_optimizer(cfg, m)


def test_warmup_cosine_schedule():
    cfg = tiny_cfg()
    cfg.SOLVER.MAX_ITER = 2000
    cfg.SOLVER.WARMUP_ITERS = 500
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=cfg.SOLVER.BASE_LR)
    sched = Trainer.build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    base = cfg.SOLVER.BASE_LR
    assert lrs[0] == pytest.approx(base * 0.001)
    # Detectron2's linear warm-up: from 0.001 x to the cosine's value at the end of the warm-up.
    warm_end = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 500 / 2000))
    assert lrs[250] == pytest.approx(base * (0.001 + (warm_end - 0.001) * 0.5), rel=1e-6)
    assert lrs[1000] == pytest.approx(base * (0.01 + 0.99 * 0.5), rel=1e-6)
    assert lrs[-1] == pytest.approx(base * 0.01, rel=1e-3)
    assert max(lrs) <= base


def test_epochs_to_iterations_and_reference_world_size():
    cfg = tiny_cfg()
    cfg.SOLVER.EPOCHS = 3
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 2
    cfg.TEST.EVAL_PERIOD_EPOCHS = 1
    cfg.SOLVER.IMS_PER_BATCH = 4
    out = apply_epoch_schedule(cfg, 10)
    assert (out.SOLVER.MAX_ITER, out.SOLVER.CHECKPOINT_PERIOD, out.TEST.EVAL_PERIOD) == (8, 5, 3)

    cfg = tiny_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 256
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    scaled = Trainer.auto_scale_workers(cfg, 2)
    assert scaled.SOLVER.IMS_PER_BATCH == 64
    assert scaled.SOLVER.BASE_LR == pytest.approx(0.001)
    assert scaled.SOLVER.BASE_LR_END / scaled.SOLVER.BASE_LR == pytest.approx(0.01)
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 0  # default: no scaling
    assert Trainer.auto_scale_workers(cfg, 2) is cfg


def test_norm_for_world_size():
    cfg = tiny_cfg()
    assert norm_for_world_size(cfg, 1).MODEL.HRNEXT.NORM == "BN"
    assert norm_for_world_size(cfg, 2).MODEL.HRNEXT.NORM == "CPUSyncBN"  # CPU: gloo all-reduce
    cfg.MODEL.HRNEXT.NORM = "SyncBN"
    assert norm_for_world_size(cfg, 1).MODEL.HRNEXT.NORM == "BN"
    cfg.MODEL.HRNEXT.NORM = "FrozenBN"
    assert norm_for_world_size(cfg, 2).MODEL.HRNEXT.NORM == "FrozenBN"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three iterations on the COCO fixture, then the final evaluation."""
    register_fixture_datasets()
    torch.manual_seed(0)
    cfg = tiny_cfg(str(tmp_path_factory.mktemp("train")))
    cfg.SOLVER.MAX_ITER = 3
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def test_training_runs_and_evaluates_on_fixture(trained, capsys):
    hist = trained.storage.history("total_loss").values()
    assert [it for _, it in hist] == [0, 1, 2]
    assert all(math.isfinite(v) and v > 0 for v, _ in hist)
    res = trained._last_eval_results
    assert set(res["keypoints"]) >= {"AP", "AP50", "AP75", "AR"}
    assert 0.0 <= res["keypoints"]["AP"] <= 100.0
    # real model parameters: no decay on the backbone's layer scales and norms
    opt = trained.optimizer
    model = trained.model
    names = dict(model.named_parameters())
    ls = [p for n, p in names.items() if n.rsplit(".", 1)[-1].startswith("layer_scale")]
    assert ls and all(_wd_of(opt, p) == 0.0 for p in ls)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.dim() == 4]
    assert _wd_of(opt, convs[0]) == 0.01


def test_loss_decreases_on_a_repeated_batch(trained):
    model = trained.model
    model.train()
    batch = next(iter(trained.data_loader))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(8):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
