"""HRNeXtCheckpointer with real faulty files: weights of another architecture or another dataset's
head, pickles with a payload, empty / truncated / missing files, wrong-shaped official checkpoints,
a save that fails half-way, and a resume whose last checkpoint is unreadable."""
import logging
import os
from collections import OrderedDict

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from hrnext_d2.checkpoint import (
    CheckpointLoadError,
    HRNeXtCheckpointer,
    MMPoseCheckpointError,
    build_checkpointer,
    check_weights_for_evaluation,
)
from tests.fault_injection import captured_logs, truncate, write_pickle_with_payload
from tests.data.topdown_fixtures import CROWDPOSE_FIXTURE, register_fixture_datasets
from tests.golden_weights import manifest, official_state_dict
from tests.modeling.test_top_down import topdown_cfg

LOGGER = "hrnext_d2.checkpoint"


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory):
    """A Detectron2 checkpoint of the small COCO top-down model (17 keypoints)."""
    torch.manual_seed(0)
    model = build_model(topdown_cfg())
    path = tmp_path_factory.mktemp("weights") / "small_coco.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path), model.state_dict()


def test_weights_of_another_architecture_are_an_error_naming_file_and_keys(small_model_file):
    path, _ = small_model_file
    cfg = topdown_cfg()
    cfg.MODEL.HRNEXT.STAGE3.NUM_MODULES = 2  # another variant: one more stage-3 module
    cfg.MODEL.HRNEXT.STAGE4.NUM_CHANNELS = [48, 96, 192, 384]  # and other widths
    model = build_model(cfg)
    with pytest.raises(CheckpointLoadError) as e:
        build_checkpointer(cfg, model).load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: does not fit the model (TopDownPoseEstimator)")
    assert "missing from the file" in msg and "backbone.stage3.1." in msg
    assert "other shape (573)" in msg and "backbone.stage4.0.branches.0.0.layer_scale_1 file (32,) vs model (48,)" in msg
    assert "MODEL.WEIGHTS_PARTIAL_LOAD" in msg


def test_another_datasets_head_loads_only_with_the_partial_opt_in(small_model_file):
    path, saved = small_model_file
    cfg = topdown_cfg("configs/crowdpose/hrnext_small_crowdpose_256x192.yaml")  # 14 keypoints
    register_fixture_datasets()
    cfg.DATASETS.TEST = (CROWDPOSE_FIXTURE,)  # its keypoint metadata
    torch.manual_seed(1)
    model = build_model(cfg)
    head_init = model.keypoint_head.final_layer.weight.detach().clone()
    with pytest.raises(CheckpointLoadError, match=r"keypoint_head\.final_layer\.weight file \(17, 32, 1, 1\) vs model \(14, 32, 1, 1\)"):
        build_checkpointer(cfg, model).load(path)

    cfg.MODEL.WEIGHTS_PARTIAL_LOAD = ["keypoint_head."]
    with captured_logs(LOGGER, logging.WARNING) as logs:
        build_checkpointer(cfg, model).load(path)
    assert any("partial load" in m and "2 of another shape" in m for m in logs), logs
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(value, saved[key]), key
    assert torch.equal(model.keypoint_head.final_layer.weight, head_init)


@pytest.mark.parametrize("as_torch,name", [(False, "weights.pkl"), (True, "weights.pth")])
def test_pickles_are_refused_without_running_their_code(tmp_path, as_torch, name):
    model = nn.Linear(2, 2)
    marker = tmp_path / "code_ran"
    path = write_pickle_with_payload(tmp_path / name, marker, as_torch=as_torch, extra={"model": model.state_dict(), "__author__": "someone"})
    with pytest.raises(CheckpointLoadError, match="MODEL.WEIGHTS_ALLOW_PICKLE") as e:
        HRNeXtCheckpointer(model).load(str(path))
    assert str(path) in str(e.value)
    assert not marker.exists()
    # The explicit opt-in reads it (and so runs its code).
    HRNeXtCheckpointer(model, allow_pickle=True).load(str(path))
    assert marker.exists()


def test_empty_truncated_and_missing_files_are_named(tmp_path, small_model_file):
    path, _ = small_model_file
    model = build_model(topdown_cfg())
    empty = tmp_path / "model_final.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointLoadError, match=r"model_final\.pth: empty file \(0 bytes\)"):
        HRNeXtCheckpointer(model).load(str(empty))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(open(path, "rb").read())
    truncate(cut, 0.6)
    with pytest.raises(CheckpointLoadError, match=r"cut\.pth: cannot be read as a checkpoint .*truncated, corrupt"):
        HRNeXtCheckpointer(model).load(str(cut))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*absent\.pth"):
        HRNeXtCheckpointer(model).load(str(tmp_path / "absent.pth"))


@pytest.fixture(scope="module")
def official_s_coco():
    return official_state_dict(manifest("hrnext_s_coco"), 0)


@pytest.mark.parametrize(
    "key,shape",
    [
        ("backbone.layer1.0.layer_scale_1", (7,)),
        ("backbone.conv1.weight", (7, 3, 3, 3)),
        ("backbone.layer1.0.mlp2.norm1.weight", (0,)),
        ("backbone.stage3.0.branches.2.0.layer_scale_1", ()),
        ("backbone.stage2.0.branches.0.0.dlp.dw3x3.conv.aggregation.weight", ()),
        ("keypoint_head.final_layer.weight", (17, 48, 1, 1)),
    ],
)
def test_wrong_shaped_official_checkpoint_is_an_error_naming_file_and_key(tmp_path, official_s_coco, key, shape):
    sd = OrderedDict(official_s_coco)
    sd[key] = torch.zeros(shape)
    path = tmp_path / "official.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    with pytest.raises(MMPoseCheckpointError) as e:  # raised while reading, before the model matters
        HRNeXtCheckpointer(nn.Linear(1, 1)).load(str(path))
    assert str(path) in str(e.value) and key in str(e.value), str(e.value)


def test_eval_only_needs_weights(tmp_path):
    cfg = topdown_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    with pytest.raises(ValueError, match="empty MODEL.WEIGHTS would evaluate a randomly initialised model"):
        check_weights_for_evaluation(cfg, resume=False)
    with pytest.raises(ValueError, match="empty MODEL.WEIGHTS"):
        check_weights_for_evaluation(cfg, resume=True)  # nothing to resume from either
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    check_weights_for_evaluation(cfg, resume=True)
    cfg.MODEL.WEIGHTS = "w.pth"
    check_weights_for_evaluation(cfg, resume=False)


class _Counter:
    """A checkpointable with an iteration, like the trainer."""

    def __init__(self):
        self.iteration = 0

    def state_dict(self):
        return {"iteration": self.iteration}

    def load_state_dict(self, d):
        self.iteration = d["iteration"]


def test_a_failed_save_leaves_the_previous_file_and_last_checkpoint(tmp_path):
    model = nn.Linear(3, 3)
    ckpt = HRNeXtCheckpointer(model, str(tmp_path))
    ckpt.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()
    ckpt.save("model_0000003", iteration=3)
    with torch.no_grad():
        model.weight.add_(1.0)
    # A value torch.save cannot pickle: the write fails half-way, as a killed job's would.
    with pytest.raises(Exception, match="pickle|lambda"):
        ckpt.save("model_final", iteration=5, unpicklable=lambda: None)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000003.pth", "model_final.pth"]


def test_resume_skips_an_unreadable_last_checkpoint(tmp_path):
    model, counter = nn.Linear(3, 3), _Counter()
    ckpt = HRNeXtCheckpointer(model, str(tmp_path), trainer=counter)
    for it in (1, 3, 5):
        counter.iteration = it
        with torch.no_grad():
            model.weight.fill_(float(it))
        ckpt.save(f"model_{it:07d}", iteration=it)
        os.utime(tmp_path / f"model_{it:07d}.pth", (it, it))  # mtime order = iteration order
    truncate(tmp_path / "model_0000005.pth", 0.5)  # the last one, cut by a kill
    (tmp_path / "model_best.pth").write_bytes((tmp_path / "model_0000001.pth").read_bytes())  # not a resume point

    fresh, fresh_counter = nn.Linear(3, 3), _Counter()
    with captured_logs(LOGGER, logging.WARNING) as logs:
        HRNeXtCheckpointer(fresh, str(tmp_path), trainer=fresh_counter).resume_or_load("", resume=True)
    assert fresh_counter.iteration == 3 and torch.all(fresh.weight == 3.0)
    assert any(f"Resuming from {tmp_path / 'model_0000003.pth'}: skipped unreadable" in m and "model_0000005.pth" in m
               for m in logs), logs

    truncate(tmp_path / "model_0000003.pth", 0.0)
    truncate(tmp_path / "model_0000001.pth", 0.3)
    with pytest.raises(CheckpointLoadError, match="--resume: no intact checkpoint in") as e:
        HRNeXtCheckpointer(nn.Linear(3, 3), str(tmp_path), trainer=_Counter()).resume_or_load("", resume=True)
    for it in (1, 3, 5):
        assert f"model_{it:07d}.pth (" in str(e.value)
    assert "model_best" not in str(e.value)
