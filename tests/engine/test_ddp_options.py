"""Trainer options around DistributedDataParallel and AMP, in one process: the norm chosen for a
world size, the DDP options and their pre-flight check, AMP resuming without a GradScaler state, the
model-state digest the processes compare."""
import pytest
import torch
from detectron2.engine import SimpleTrainer

from hrnext_d2.engine.amp import ResumableAMPTrainer
from hrnext_d2.engine.consistency import model_state_digest, start_mismatch
from hrnext_d2.engine.ddp import ddp_options, unread_backbone_outputs
from hrnext_d2.engine.trainer import Trainer, norm_for_world_size
from tests.data.topdown_fixtures import tiny_cfg


def test_every_sync_norm_falls_back_on_the_cpu():
    cfg = tiny_cfg()
    for norm in ("BN", "SyncBN", "nnSyncBN"):
        cfg.MODEL.HRNEXT.NORM = norm
        assert norm_for_world_size(cfg, 2).MODEL.HRNEXT.NORM == "CPUSyncBN", norm
    for norm in ("SyncBN", "nnSyncBN", "naiveSyncBN", "CPUSyncBN"):
        cfg.MODEL.HRNEXT.NORM = norm
        assert norm_for_world_size(cfg, 1).MODEL.HRNEXT.NORM == "BN", norm
    for norm in ("naiveSyncBN", "FrozenBN"):  # chosen explicitly: kept
        cfg.MODEL.HRNEXT.NORM = norm
        assert norm_for_world_size(cfg, 2).MODEL.HRNEXT.NORM == norm


def test_ddp_options_name_backbone_outputs_the_head_does_not_read(monkeypatch):
    cfg = tiny_cfg()
    cfg.MODEL.HRNEXT.MULTI_SCALE_OUTPUT = True
    cfg.MODEL.HRNEXT.OUT_FEATURES = ["stride4", "stride8"]
    model = Trainer.build_model(cfg)
    assert unread_backbone_outputs(model) == ["stride8"]
    options = ddp_options(cfg, model)  # one process: no check
    assert options["find_unused_parameters"] is False
    assert options.get("forward_sync_buffers", options.get("broadcast_buffers")) is False
    from detectron2.utils import comm

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match=r"includes \['stride8'\], which the head does not read .*"
                                         r"SOLVER.DDP.FIND_UNUSED_PARAMETERS True"):
        ddp_options(cfg, model)
    cfg.SOLVER.DDP.FIND_UNUSED_PARAMETERS = True
    assert ddp_options(cfg, model)["find_unused_parameters"] is True
    cfg.MODEL.HRNEXT.OUT_FEATURES = ["stride4"]
    cfg.SOLVER.DDP.FIND_UNUSED_PARAMETERS = False
    model = Trainer.build_model(cfg)
    assert unread_backbone_outputs(model) == [] and ddp_options(cfg, model)["find_unused_parameters"] is False


def _amp_trainer():
    model = torch.nn.Linear(2, 2)
    return ResumableAMPTrainer(model, [], torch.optim.SGD(model.parameters(), lr=0.1))


def test_amp_resumes_checkpoints_with_and_without_grad_scaler():
    src = SimpleTrainer(torch.nn.Linear(2, 2), [], None)
    src.optimizer = torch.optim.SGD(src.model.parameters(), lr=0.1)
    src.iter = 7
    plain = src.state_dict()  # float32 training (AMP off, or its CPU fallback): no grad_scaler
    assert "grad_scaler" not in plain
    for state in (plain, {**plain, "grad_scaler": {}}):  # no state / a disabled scaler's empty one
        t = _amp_trainer()
        t.grad_scaler = torch.amp.GradScaler("cpu")  # an enabled scaler on this CPU machine
        t.load_state_dict(state)
        assert t.iter == 7 and t.grad_scaler.get_scale() == 65536.0  # a fresh scale
    t = _amp_trainer()
    saved = {**plain, "grad_scaler": {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                      "growth_interval": 2000, "_growth_tracker": 3}}
    t.grad_scaler = torch.amp.GradScaler("cpu")
    t.load_state_dict(saved)
    assert t.grad_scaler.get_scale() == 1024.0 and t.grad_scaler._get_growth_tracker() == 3


def test_model_state_digest_covers_parameters_and_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    d = model_state_digest(model)
    wrapper = torch.nn.Module()
    wrapper.module = model  # as DistributedDataParallel holds it
    assert model_state_digest(wrapper) == d
    copy = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    copy.load_state_dict(model.state_dict())
    assert model_state_digest(copy) == d
    with torch.no_grad():
        copy[1].num_batches_tracked.add_(1)
    assert model_state_digest(copy) != d
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        copy[0].weight[0, 0, 0, 0] += 1e-7
    assert model_state_digest(copy) != d


def test_start_mismatch_names_each_process():
    loaded = "checkpoint /o/model_final.pth"
    same = [(2, loaded, "a", "f00d" * 16), (2, loaded, "b", "f00d" * 16)]
    assert start_mismatch(same) is None
    iters = [same[0], (0, "no checkpoint in OUTPUT_DIR /p", "b", "beef" * 16)]
    msg = start_mismatch(iters)
    assert "start training at different iterations" in msg
    assert "rank 1 on b: iteration 0 (no checkpoint in OUTPUT_DIR /p), weights sha256 beefbeefbeef" in msg
    weights = [same[0], (2, loaded, "b", "beef" * 16)]
    assert "loaded different weights" in start_mismatch(weights)
