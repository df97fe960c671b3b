"""Two training processes on the CPU (gloo): identical weights on both ranks, and the gathered
evaluation equals a single-process evaluation of the same weights."""
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
    assert r0["world_size"] == 2 and r0["norms"] == ["NaiveSyncBatchNorm"]
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
