"""Resuming after an interruption continues exactly like an uninterrupted run (CPU, fixed seed)."""
import os

import pytest
import torch

from detectron2.engine import HookBase

from hrnext_d2.engine import Trainer
from tests.data.topdown_fixtures import register_fixture_datasets, tiny_cfg

# End to end (processes, training runs): deselect with -m "not slow".
pytestmark = pytest.mark.slow


class _Crash(RuntimeError):
    pass


class _CrashAfter(HookBase):
    """Stops training after the given iteration, as a killed job would."""

    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise _Crash(f"stopped after iteration {self.iteration}")


def _run(cfg, resume=False, crash_after=None):
    torch.manual_seed(0)  # same initial weights in every run
    trainer = Trainer(cfg)
    if crash_after is not None:
        trainer.register_hooks([_CrashAfter(crash_after)])
    trainer.resume_or_load(resume=resume)
    start = trainer.start_iter
    try:
        trainer.train()
    except _Crash:
        pass
    hist = trainer.storage.history("total_loss").values()
    lrs = trainer.storage.history("lr").values()
    return start, {it: v for v, it in hist}, {it: v for v, it in lrs}, trainer


def test_resume_continues_the_loss_sequence(tmp_path):
    register_fixture_datasets()

    def cfg_for(out):
        cfg = tiny_cfg(str(tmp_path / out))
        cfg.SOLVER.MAX_ITER = 6
        cfg.SOLVER.CHECKPOINT_PERIOD = 3
        cfg.SOLVER.WARMUP_ITERS = 2
        cfg.INPUT.TOPDOWN.ROT_PROB = 1.0  # augmentation in every sample
        cfg.SOLVER.BEST_CHECKPOINT_METRIC = ""
        cfg.DATASETS.TEST = ()  # no evaluation at the end: only the training sequence matters here
        return cfg

    _, full, full_lr, _ = _run(cfg_for("full"))
    assert sorted(full) == list(range(6))

    _, first, _, _ = _run(cfg_for("resumed"), crash_after=3)
    assert sorted(first) == [0, 1, 2, 3]
    assert [first[i] for i in range(4)] == [full[i] for i in range(4)]
    with open(tmp_path / "resumed" / "last_checkpoint") as f:
        assert f.read().strip() == "model_0000002.pth"

    # Restarted without a fixed SEED: the checkpoint's data seed (7) is used for the data stream.
    restart = cfg_for("resumed")
    restart.SEED = -1
    start, second, second_lr, trainer = _run(restart, resume=True)
    assert start == 3 and trainer.iter == 6
    # iterations 3, 4, 5 redone from the checkpoint: same data, weights, optimizer, LR, random state
    assert [second[i] for i in (3, 4, 5)] == [full[i] for i in (3, 4, 5)]
    assert [second_lr[i] for i in (3, 4, 5)] == [full_lr[i] for i in (3, 4, 5)]
    assert trainer.cfg.SEED == 7
    assert os.path.isfile(tmp_path / "resumed" / "model_final.pth")
