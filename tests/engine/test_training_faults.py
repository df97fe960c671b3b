"""Training runs with real faults: a finished run killed while model_final.pth was written, resumed
(and continued) at the right iteration with the best checkpoint kept out of last_checkpoint; and a
corrupt training image skipped, when opted in, with the count logged."""
import logging

import pytest
import torch

from hrnext_d2.engine import Trainer
from tests.data.topdown_fixtures import register_fixture_datasets, tiny_cfg
from tests.fault_injection import captured_logs, copy_coco_fixture, registered_coco_dataset, truncate

# End to end (training runs): deselect with -m "not slow".
pytestmark = pytest.mark.slow


def test_finished_run_resumes_at_the_next_iteration_and_rewrites_a_lost_final(tmp_path):
    register_fixture_datasets()
    out = tmp_path / "out"
    cfg = tiny_cfg(str(out))
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    cfg.TEST.EVAL_PERIOD = 2  # evaluated after training, where the best checkpoint is saved
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert (out / "model_best.pth").is_file()  # saved after training, with the counter at 2: not a resume point

    # Killed while writing model_final.pth (before saves were atomic): an empty file, and
    # last_checkpoint still naming the periodic checkpoint of the last iteration.
    truncate(out / "model_final.pth", 0.0)
    (out / "last_checkpoint").write_text("model_0000001.pth")
    resumed = Trainer(cfg)
    with captured_logs("hrnext_d2.checkpoint", logging.WARNING) as logs:
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    assert logs == [f"{out / 'model_final.pth'} is missing or unreadable: writing it from the resumed state"]
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == final["trainer"]["iteration"] == 1
    assert (out / "last_checkpoint").read_text() == "model_final.pth"

    longer = cfg.clone()
    longer.SOLVER.MAX_ITER = 3
    continued = Trainer(longer)
    continued.resume_or_load(resume=True)
    assert continued.start_iter == 2  # the next iteration: none skipped, none repeated


def test_unreadable_training_images_are_skipped_with_a_count_when_opted_in(tmp_path):
    files = copy_coco_fixture(tmp_path)
    corrupt = files["images"] / "000000197388.jpg"
    truncate(corrupt, 0.3)
    with registered_coco_dataset("reliability_train_corrupt", files["json"], files["images"]) as name:
        cfg = tiny_cfg(str(tmp_path / "out"), train=(name,), test=())
        cfg.SOLVER.MAX_ITER = 20  # one logging period
        cfg.SOLVER.BEST_CHECKPOINT_METRIC = ""
        cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = True
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        with captured_logs("hrnext_d2.engine", logging.WARNING) as logs:
            trainer.train()
    assert trainer.iter == 20
    skipped = trainer.storage.history("data/unreadable_images_skipped").latest()
    assert skipped > 0
    what = f"{int(skipped)} training samples replaced because their image is unreadable (1 files: {corrupt})"
    assert logs == [f"Iteration 20: {what} so far", f"Training done: {what}"]
