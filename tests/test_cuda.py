"""What only a CUDA machine can check (run by tools/check_gpu.sh; skipped without a GPU):
on-device crops, the model on the GPU against the CPU (float32, autocast), AMP training steps and
resuming, and SyncBatchNorm over two GPUs with the statistics of one."""
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import launch
from detectron2.utils import comm

from hrnext_d2.checkpoint.synthetic_weights import fill_like_official
from hrnext_d2.engine import Trainer
from hrnext_d2.engine.amp import ResumableAMPTrainer
from hrnext_d2.topdown.crops import warp_affine_crops
from tests.conftest import shared_path
from tests.data.topdown_fixtures import register_fixture_datasets, tiny_cfg

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(autouse=True)
def _exact_float32():
    """No TF32 in convolutions and matmuls: GPU float32 comparable with the CPU's."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max()).item()


def test_crops_on_the_gpu_equal_the_cpu_crops():
    import cv2

    image = cv2.imread(str(shared_path("fixtures", "coco", "images", "000000197388.jpg")))
    t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    rng = np.random.default_rng(0)
    mats = np.stack([np.array([[s * np.cos(a), s * np.sin(a), tx], [-s * np.sin(a), s * np.cos(a), ty]])
                     for s, a, tx, ty in zip(rng.uniform(0.3, 1.5, 8), rng.uniform(-1, 1, 8),
                                             rng.uniform(-200, 50, 8), rng.uniform(-200, 50, 8))])
    cpu = warp_affine_crops(t, mats, (192, 256), round_to_uint8=True)
    gpu = warp_affine_crops(t.cuda(), mats, (192, 256), round_to_uint8=True)
    assert gpu.is_cuda
    diff = (gpu.cpu().float() - cpu.float()).abs()
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


def _model(device):
    register_fixture_datasets()
    cfg = tiny_cfg()
    cfg.MODEL.DEVICE = device
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    fill_like_official(model.backbone, seed=3)
    return cfg, model.eval()


def test_model_on_the_gpu_matches_the_cpu_float32_and_autocast():
    _, cpu = _model("cpu")
    _, gpu = _model("cuda")
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(4, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = cpu.forward_crops(x)
        out = gpu.forward_crops(x.cuda())
        assert _rel(out, ref) < 1e-4
        gpu.backbone.set_formulation(fuse_inference=True)  # drops the folded caches
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                low = gpu.forward_crops(x.cuda())  # the first: folds computed under autocast
            assert _rel(low.float(), ref) < 5e-2, dtype
        again = gpu.forward_crops(x.cuda())
    assert torch.equal(again, out)  # the folds cached under autocast are the float32 ones


def _amp_cfg(out_dir, max_iter, amp=True):
    cfg = tiny_cfg(out_dir)
    cfg.MODEL.DEVICE = "cuda"
    cfg.SOLVER.AMP.ENABLED = amp
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    cfg.SOLVER.BEST_CHECKPOINT_METRIC = ""
    cfg.DATASETS.TEST = ()
    return cfg


def test_amp_training_steps_and_resume_without_grad_scaler(tmp_path):
    register_fixture_datasets()
    trainer = Trainer(_amp_cfg(str(tmp_path / "amp"), 3))
    assert isinstance(trainer._trainer, ResumableAMPTrainer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    saved = torch.load(tmp_path / "amp" / "model_final.pth", weights_only=False)
    assert saved["trainer"]["_trainer"]["grad_scaler"]["scale"] > 0

    # a float32 checkpoint (no grad_scaler) resumed with AMP on
    fp32 = Trainer(_amp_cfg(str(tmp_path / "fp32"), 2, amp=False))
    fp32.resume_or_load(resume=False)
    fp32.train()
    resumed = Trainer(_amp_cfg(str(tmp_path / "fp32"), 3))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    assert resumed.iter == 3


def _sync_cfg(out_dir):
    from tests.engine.test_distributed import _statistics_cfg

    cfg = _statistics_cfg(out_dir)
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.HRNEXT.NORM = "SyncBN"
    return cfg


def _sync_worker(out_dir):
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    register_fixture_datasets()
    torch.manual_seed(comm.get_rank())
    trainer = Trainer(_sync_cfg(out_dir))
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module
    assert type(model.backbone.bn1).__name__ == "SyncBatchNorm"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"rank{comm.get_rank()}.pth"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_syncbn_two_gpus_train_like_one(tmp_path):
    """Two GPUs of two crops (NCCL, nn.SyncBatchNorm, gradient checkpointing, multi-scale outputs)
    end with the weights and statistics of one GPU training the four crops."""
    register_fixture_datasets()
    out = str(tmp_path)
    launch(_sync_worker, 2, dist_url="auto", args=(out,))
    r0 = torch.load(os.path.join(out, "rank0.pth"))
    r1 = torch.load(os.path.join(out, "rank1.pth"))
    for k, v in r0.items():
        assert torch.equal(v, r1[k]), k
    torch.manual_seed(0)
    single = Trainer(_sync_cfg(str(tmp_path / "single")))
    single.resume_or_load(resume=False)
    single.train()
    for k, v in single.model.state_dict().items():
        v = v.cpu()
        if v.is_floating_point():
            assert ((r0[k] - v).abs().max() / v.abs().max().clamp(min=1e-3)).item() < 1e-3, k
        else:
            assert torch.equal(r0[k], v), k
    assert {int(v) for k, v in r0.items() if k.endswith("num_batches_tracked")} == {2}


def test_checkpoint_loads_on_the_gpu(tmp_path):
    cfg, cpu = _model("cpu")
    DetectionCheckpointer(cpu, save_dir=str(tmp_path)).save("m")
    _, gpu = _model("cuda")
    DetectionCheckpointer(gpu).load(str(tmp_path / "m.pth"))
    assert all(torch.equal(a.cpu(), b) for a, b in zip(gpu.state_dict().values(), cpu.state_dict().values()))
