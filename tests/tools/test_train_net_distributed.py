"""tools/train_net.py with two processes, started as users start them, on this one machine (gloo):
torchrun, and two "machines" on loopback (--num-machines 2 --machine-rank 0/1). Each run must train
one model (the same model state in both processes, one set of checkpoints and metrics, one
evaluation equal to a single-process evaluation of the saved weights), resume on both machines, and
fail fast with a clear message when the machines would resume from different iterations."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer

from hrnext_d2.engine import Trainer
from hrnext_d2.engine.consistency import model_state_digest
from tests.conftest import REPO_ROOT, tool_env
from tests.data.topdown_fixtures import (
    CROWDPOSE_FIXTURE, CROWDPOSE_FIXTURE_DET, crowdpose_reference_layout, register_fixture_datasets, tiny_cfg,
)

# End to end (processes, training runs): deselect with -m "not slow".
pytestmark = pytest.mark.slow

TRAIN_NET = str(REPO_ROOT / "tools" / "train_net.py")
DIGEST = re.compile(r"Model state identical in all (\d+) processes after training \(rank (\d+), sha256 (\w+)\)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config_file(tmp_path, max_iter=2, checkpoint_period=1000):
    """The tiny test config (see tests/data/topdown_fixtures.py) on CrowdPose, written as YAML; two
    crops per process (the attention BatchNorm needs two per step)."""
    cfg = tiny_cfg("", train=("crowdpose_trainval",), test=("crowdpose_test",), num_keypoints=14)
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = checkpoint_period
    cfg.SOLVER.BEST_CHECKPOINT_METRIC = ""
    cfg.MODEL.TOPDOWN.FLIP_TEST = False
    path = tmp_path / f"tiny_{max_iter}.yaml"
    path.write_text(cfg.dump())
    return str(path)


def _env(root):
    return tool_env(DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")


def _check(proc, what):
    out = proc.stdout + proc.stderr if isinstance(proc.stdout, str) else proc
    assert proc.returncode == 0, f"{what} failed:\n{out[-6000:]}"
    return out


def _popen(args, root, log):
    return subprocess.Popen(args, cwd=REPO_ROOT, env=_env(root), stdout=log, stderr=subprocess.STDOUT, text=True)


def _two_machines(config, root, out_dirs, tmp_path, extra=(), timeout=240):
    """Machines 0 and 1 (one process each) on loopback; returns (return codes, outputs, seconds)."""
    url = f"tcp://127.0.0.1:{_free_port()}"
    logs = [open(tmp_path / f"machine{r}_{time.monotonic_ns()}.log", "w+") for r in (0, 1)]
    procs = [
        _popen([sys.executable, TRAIN_NET, "--config-file", config, "--num-gpus", "1", "--num-machines", "2",
                "--machine-rank", str(r), "--dist-url", url, *extra, "OUTPUT_DIR", str(out_dirs[r])], root, logs[r])
        for r in (0, 1)
    ]
    start = time.monotonic()
    try:
        codes = [p.wait(timeout=max(1, timeout - (time.monotonic() - start))) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = []
    for log in logs:
        log.seek(0)
        outs.append(log.read())
        log.close()
    return codes, outs, time.monotonic() - start


def _copypaste(out):
    return [line.split("copypaste: ", 1)[1] for line in out.splitlines() if "copypaste: " in line]


def _predictions(out_dir, dataset):
    """The saved predictions, order-free: sorted by image, then by keypoint positions."""
    with open(os.path.join(out_dir, "inference", dataset, "keypoints_results.json")) as f:
        results = json.load(f)
    return sorted(results, key=lambda r: (r["image_id"], r["category_id"], r["keypoints"][0::3], r["keypoints"][1::3], round(r["score"], 5)))


def _assert_same_predictions(gathered, single):
    """Same people, same keypoint positions; scores equal to float rounding. Each process batches
    its own share of the images (TEST.IMS_PER_BATCH), and a matmul over a different batch may sum
    in a different order: scores then differ in the 7th significant digit (measured 4e-7 relative)."""
    assert len(gathered) == len(single)
    for g, s in zip(gathered, single):
        assert (g["image_id"], g["category_id"]) == (s["image_id"], s["category_id"])
        assert g["keypoints"][0::3] == pytest.approx(s["keypoints"][0::3], abs=1e-3)
        assert g["keypoints"][1::3] == pytest.approx(s["keypoints"][1::3], abs=1e-3)
        assert g["keypoints"][2::3] == pytest.approx(s["keypoints"][2::3], rel=1e-5, abs=1e-9)
        assert g["score"] == pytest.approx(s["score"], rel=1e-5, abs=1e-9)


def _fixture_cfg(out_dir, max_iter=2):
    """The same model and data as the YAML config, on the CrowdPose fixture registered in this
    process (same annotations, images and detections as crowdpose_trainval / crowdpose_test)."""
    register_fixture_datasets()
    cfg = tiny_cfg(str(out_dir), train=(CROWDPOSE_FIXTURE,), test=(CROWDPOSE_FIXTURE_DET,), num_keypoints=14)
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.BEST_CHECKPOINT_METRIC = ""
    cfg.MODEL.TOPDOWN.FLIP_TEST = False
    return cfg


def _assert_single_process_evaluation_equal(out_dir, tmp_path):
    """One process evaluating model_final.pth gives the predictions and metrics the two processes
    gathered, up to float rounding (metrics.json holds the final evaluation at full precision)."""
    cfg = _fixture_cfg(tmp_path / "single")
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(out_dir / "model_final.pth"))
    torch.set_num_threads(1)  # as the processes (OMP_NUM_THREADS=1): the same float summation order
    single = Trainer.test(cfg, model)["keypoints"]
    _assert_same_predictions(_predictions(out_dir, "crowdpose_test"), _predictions(tmp_path / "single", CROWDPOSE_FIXTURE_DET))
    gathered = [json.loads(line) for line in open(out_dir / "metrics.json") if "keypoints/AP" in line][-1]
    assert len(single) == 9
    for name, value in single.items():
        assert gathered[f"keypoints/{name}"] == pytest.approx(value, abs=1e-9, nan_ok=True), name


def _assert_one_training(out_dir, out_text, logs, max_iter):
    """One model trained by two processes: same model state in both (digests from each process's
    log), that state saved once as model_final.pth, metrics written once per iteration."""
    digests = {}
    for text in logs:
        for world, rank, digest in DIGEST.findall(text):
            assert world == "2"
            digests[int(rank)] = digest
    assert sorted(digests) == [0, 1] and digests[0] == digests[1], digests
    final = torch.load(os.path.join(out_dir, "model_final.pth"), map_location="cpu", weights_only=False)
    assert final["trainer"]["world_size"] == 2 and final["iteration"] == max_iter - 1
    assert _digest_of_state(final["model"]) == digests[0]
    iterations = [json.loads(line)["iteration"] for line in open(os.path.join(out_dir, "metrics.json"))
                  if "total_loss" in line]
    assert sorted(iterations) == sorted(set(iterations)), iterations  # no iteration written twice
    assert len(_copypaste(out_text)) == 3  # one evaluation table (task, names, values) printed


def _digest_of_state(state):
    class Holder(torch.nn.Module):
        def state_dict(self, *a, **k):
            return state

    return model_state_digest(Holder())


@pytest.fixture(scope="module")
def checkpoint_at_iteration_1(tmp_path_factory):
    """OUTPUT_DIR of a one-process run of 2 iterations (model_final.pth = iteration 1), trained here."""
    out = tmp_path_factory.mktemp("one_process")
    cfg = _fixture_cfg(out)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATASETS.TEST = ()
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    return out


def test_torchrun_two_processes_train_and_evaluate_once(tmp_path):
    root = crowdpose_reference_layout(tmp_path)
    out_dir = tmp_path / "torchrun"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TRAIN_NET,
         "--config-file", _config_file(tmp_path), "OUTPUT_DIR", str(out_dir)],
        cwd=REPO_ROOT, env=_env(root), capture_output=True, text=True, timeout=300)
    out = _check(proc, "torchrun")
    print(f"torchrun, 2 processes, 2 iterations + evaluation: {time.monotonic() - start:.1f} s")
    logs = [(out_dir / "log.txt").read_text(), (out_dir / "log.txt.rank1").read_text()]
    assert "Rank of current process: 1. World size: 2" in logs[1]
    _assert_one_training(out_dir, out, logs, max_iter=2)
    _assert_single_process_evaluation_equal(out_dir, tmp_path)


def test_two_machines_on_loopback_train_and_evaluate(tmp_path):
    root = crowdpose_reference_layout(tmp_path)
    out_dir = tmp_path / "shared_out"  # both machines see the same OUTPUT_DIR (shared storage)
    codes, outs, secs = _two_machines(_config_file(tmp_path), root, [out_dir, out_dir], tmp_path)
    assert codes == [0, 0], outs[0][-4000:] + outs[1][-4000:]
    print(f"two machines, 2 iterations + evaluation: {secs:.1f} s")
    logs = [(out_dir / "log.txt").read_text(), (out_dir / "log.txt.rank1").read_text()]
    _assert_one_training(out_dir, outs[0], logs, max_iter=2)
    assert not _copypaste(outs[1])  # machine 1 prints no evaluation of its own
    _assert_single_process_evaluation_equal(out_dir, tmp_path)


def test_two_machines_on_loopback_resume(tmp_path, checkpoint_at_iteration_1):
    root = crowdpose_reference_layout(tmp_path)
    out_dir = tmp_path / "shared_out"
    shutil.copytree(checkpoint_at_iteration_1, out_dir)
    codes, outs, secs = _two_machines(_config_file(tmp_path, max_iter=3), root, [out_dir, out_dir], tmp_path,
                                      extra=["--resume"])
    assert codes == [0, 0], outs[0][-4000:] + outs[1][-4000:]
    print(f"two machines, resumed for 1 iteration + evaluation: {secs:.1f} s")
    logs = [(out_dir / "log.txt").read_text(), (out_dir / "log.txt.rank1").read_text()]
    for log in logs:  # both processes start at iteration 2, after the checkpoint's iteration 1
        assert "Starting training from iteration 2" in log
    _assert_one_training(out_dir, outs[0], logs, max_iter=3)
    _assert_single_process_evaluation_equal(out_dir, tmp_path)


def test_machines_resuming_from_different_iterations_fail_fast(tmp_path, checkpoint_at_iteration_1):
    """Separate OUTPUT_DIRs and --resume: machine 0 has a checkpoint, machine 1 none. Both stop with
    an error naming each process's iteration and checkpoint, instead of training apart and hanging."""
    root = crowdpose_reference_layout(tmp_path)
    dir0, dir1 = tmp_path / "machine0", tmp_path / "machine1"
    shutil.copytree(checkpoint_at_iteration_1, dir0)
    codes, outs, secs = _two_machines(_config_file(tmp_path, max_iter=3), root, [dir0, dir1], tmp_path,
                                      extra=["--resume"], timeout=150)
    print(f"mismatched resume failed in {secs:.1f} s")
    assert codes[0] != 0 and codes[1] != 0
    host = socket.gethostname()
    for out in outs:
        assert "The 2 processes would start training at different iterations" in out, out[-3000:]
        assert f"rank 0 on {host}: iteration 2 (checkpoint {dir0}/model_final.pth)" in out
        assert f"rank 1 on {host}: iteration 0 (no checkpoint in OUTPUT_DIR {dir1})" in out
    assert not (dir1 / "model_final.pth").exists()
