"""Two training processes on the CPU (gloo): identical weights on both ranks, and the gathered
evaluation equals a single-process evaluation of the same weights; with multi-scale outputs and
gradient checkpointing, two processes of two crops end with the weights and BatchNorm statistics of
one process training the same four crops."""
import json
import os

import pytest
import torch

from detectron2.engine import launch
from detectron2.utils import comm

from hrnext_d2.engine import Trainer
from tests.data.topdown_fixtures import register_fixture_datasets, tiny_cfg

# End to end (processes, training runs): deselect with -m "not slow".
pytestmark = pytest.mark.slow


def _cfg(out_dir):
    cfg = tiny_cfg(out_dir)
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.IMS_PER_BATCH = 4  # 2 crops per process: the attention BatchNorm needs >= 2
    cfg.SOLVER.BEST_CHECKPOINT_METRIC = ""
    return cfg


def _worker(out_dir):
    torch.set_num_threads(1)
    register_fixture_datasets()
    torch.manual_seed(comm.get_rank())  # different initial weights: DDP must broadcast rank 0's
    trainer = Trainer(_cfg(out_dir))
    trainer.resume_or_load(resume=False)
    trainer.train()  # ends with the (gathered) evaluation
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    norms = sorted({type(m).__name__ for m in model.modules() if "BatchNorm" in type(m).__name__})
    torch.save(
        {"state_dict": model.state_dict(), "norms": norms, "world_size": comm.get_world_size()},
        os.path.join(out_dir, f"rank{comm.get_rank()}.pth"),
    )
    if comm.is_main_process():
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(trainer._last_eval_results, f)


def test_two_cpu_processes(tmp_path):
    register_fixture_datasets()
    out = str(tmp_path)
    launch(_worker, 2, dist_url="auto", args=(out,))
    r0 = torch.load(os.path.join(out, "rank0.pth"), weights_only=False)
    r1 = torch.load(os.path.join(out, "rank1.pth"), weights_only=False)
    assert r0["world_size"] == 2 and r0["norms"] == ["CPUSyncBatchNorm"]
    assert r0["state_dict"].keys() == r1["state_dict"].keys()
    for k, v in r0["state_dict"].items():
        assert torch.equal(v, r1["state_dict"][k]), k
    with open(os.path.join(out, "results.json")) as f:
        gathered = json.load(f)

    # Same weights, one process (plain BN in eval mode computes the same thing).
    cfg = _cfg(str(tmp_path / "single"))
    model = Trainer.build_model(cfg)
    model.load_state_dict(r0["state_dict"])
    single = Trainer.test(cfg, model)
    assert set(gathered["keypoints"]) == set(single["keypoints"])
    for k, v in single["keypoints"].items():
        assert gathered["keypoints"][k] == pytest.approx(v, abs=1e-9), k


def _statistics_cfg(out_dir):
    """Multi-scale outputs (stride8 computed, not read by the head: its fuse layer has no gradient),
    gradient checkpointing, 2 steps of 4 crops. SGD (linear in the gradient) keeps the float rounding
    of two processes vs one at rounding level; no drop path (its draws are per process)."""
    cfg = tiny_cfg(out_dir)
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BEST_CHECKPOINT_METRIC = ""
    cfg.DATASETS.TEST = ()
    cfg.MODEL.HRNEXT.DROP_PATH_RATE = 0.0
    cfg.MODEL.HRNEXT.MULTI_SCALE_OUTPUT = True
    cfg.MODEL.HRNEXT.OUT_FEATURES = ["stride4", "stride8"]
    cfg.MODEL.HRNEXT.WITH_CP = True
    cfg.SOLVER.DDP.FIND_UNUSED_PARAMETERS = True
    return cfg


def _statistics_worker(out_dir):
    torch.set_num_threads(1)
    register_fixture_datasets()
    torch.manual_seed(comm.get_rank())  # rank 0 has the single-process run's initial weights
    trainer = Trainer(_statistics_cfg(out_dir))
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module
    torch.save(model.state_dict(), os.path.join(out_dir, f"rank{comm.get_rank()}.pth"))


def _is_statistic(key):
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_multiscale_checkpointed_two_processes_train_like_one(tmp_path):
    register_fixture_datasets()
    out = str(tmp_path)
    launch(_statistics_worker, 2, dist_url="auto", args=(out,))
    r0 = torch.load(os.path.join(out, "rank0.pth"))
    r1 = torch.load(os.path.join(out, "rank1.pth"))
    for k, v in r0.items():
        assert torch.equal(v, r1[k]), k

    torch.manual_seed(0)
    single = Trainer(_statistics_cfg(str(tmp_path / "single")))
    single.resume_or_load(resume=False)
    single.train()
    ref = single.model.state_dict()
    assert ref.keys() == r0.keys()
    assert any(k.startswith("backbone.stage4.0.fuse_layers.1.") for k in ref)  # stride8 is fused
    counts = {int(v) for k, v in r0.items() if k.endswith("num_batches_tracked")}
    assert counts == {2}  # one update per step: no second one in the recomputation, none missing
    worst = {}
    for k, v in ref.items():
        if v.is_floating_point():
            err = ((r0[k] - v).abs().max() / v.abs().max().clamp(min=1e-3)).item()
            worst[k] = err
        else:
            assert torch.equal(r0[k], v), k
    stats = {k: e for k, e in worst.items() if _is_statistic(k)}
    print(f"largest relative differences to one process: statistics {max(stats.values()):.2e}, "
          f"all {max(worst.values()):.2e}")
    assert len(stats) > 100 and max(stats.values()) < 1e-4, max(stats.items(), key=lambda kv: kv[1])
    assert max(worst.values()) < 1e-4, max(worst.items(), key=lambda kv: kv[1])
