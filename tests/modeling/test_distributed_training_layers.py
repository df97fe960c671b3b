"""Layers that distributed (and mixed-precision) training relies on, in one process:
- gradient checkpointing leaves BatchNorm statistics as training without it does;
- with MULTI_SCALE_OUTPUT only the fuse layers of OUT_FEATURES exist, so every parameter gets a
  gradient (DistributedDataParallel's requirement), and the official layout is unchanged without it;
- folded inference caches computed under autocast are the float32 folds;
- "CPUSyncBN" trains like BatchNorm2d in one process and folds like it."""
import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from torch import nn

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint.mmpose_converter import _hrnext_expected_shapes, infer_hrnext_architecture
from hrnext_d2.modeling.backbone.hrnext import HighResolutionContextBlock
from hrnext_d2.modeling.layers import CPUSyncBatchNorm, checkpoint_keeping_norm_statistics, get_norm
from tests.conftest import REPO_ROOT
from tests.golden_weights import fill_like_official

S_CFG = REPO_ROOT / "configs" / "Base-HRNeXt-S.yaml"
FEATURES = ["stride4", "stride8", "stride16", "stride32"]


def _tiny(*opts):
    """HRNeXt-S widths, one module per stage, one block per branch."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(S_CFG))
    for stage in ("STAGE1", "STAGE2", "STAGE3", "STAGE4"):
        st = getattr(cfg.MODEL.HRNEXT, stage)
        st.NUM_MODULES = 1
        st.NUM_BLOCKS = [1] * st.NUM_BRANCHES
    cfg.MODEL.HRNEXT.DROP_PATH_RATE = 0.0
    cfg.merge_from_list(list(opts))
    return build_backbone(cfg)


def _norm_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_checkpointing_updates_norm_statistics_once_per_step():
    torch.manual_seed(0)
    plain = fill_like_official(_tiny(), seed=5).train()
    ckpt = _tiny("MODEL.HRNEXT.WITH_CP", True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert sum(b.with_cp for b in ckpt.modules() if isinstance(b, HighResolutionContextBlock)) == 10
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (plain, ckpt)]
    g = torch.Generator().manual_seed(6)
    for _ in range(2):  # the second step runs on the weights and statistics of the first
        x = torch.randn(2, 3, 32, 32, generator=g)
        for model, opt in zip((plain, ckpt), opts):
            opt.zero_grad()
            model(x)["stride4"].square().mean().backward()
            opt.step()
    stats_plain, stats_ckpt = _norm_buffers(plain), _norm_buffers(ckpt)
    counts = {k: int(v) for k, v in stats_ckpt.items() if k.endswith("num_batches_tracked")}
    assert len(counts) > 50 and set(counts.values()) == {2}, counts  # one update per step, not two
    for k, v in stats_plain.items():
        assert torch.allclose(stats_ckpt[k], v, rtol=1e-5, atol=1e-7), k
    # and so the eval-mode outputs agree
    plain.eval(), ckpt.eval()
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        assert torch.allclose(ckpt(x)["stride4"], plain(x)["stride4"], rtol=1e-4, atol=1e-6)


def test_checkpoint_recomputation_restores_every_batchnorm_variant():
    """Momentum and cumulative (momentum None) BatchNorm: one update per step under checkpointing."""
    for momentum in (0.1, None):
        torch.manual_seed(1)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=momentum), nn.GELU(),
                            nn.Conv2d(4, 4, 1), CPUSyncBatchNorm(4, momentum=momentum))
        ref = copy.deepcopy(net)
        x = torch.randn(3, 3, 8, 8, requires_grad=True)
        checkpoint_keeping_norm_statistics(net, net, x).sum().backward()
        ref(x).sum().backward()
        for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
            assert torch.equal(a, b), (momentum, k)
        assert int(net[1].num_batches_tracked) == 1


@pytest.mark.parametrize("features", [["stride4"], ["stride4", "stride16"], ["stride8", "stride32"], FEATURES])
def test_multi_scale_output_builds_only_the_fuse_layers_it_outputs(features):
    torch.manual_seed(0)
    model = _tiny("MODEL.HRNEXT.MULTI_SCALE_OUTPUT", True, "MODEL.HRNEXT.OUT_FEATURES", features).train()
    last = model.stage4[-1]
    built = [i for i, layer in enumerate(last.fuse_layers) if layer is not None]
    assert built == sorted(FEATURES.index(f) for f in features)
    keys = list(model.state_dict())
    assert {int(k.split(".")[3]) for k in keys if k.startswith("stage4.0.fuse_layers.")} == set(built)
    out = model(torch.randn(2, 3, 64, 48))
    assert sorted(out) == sorted(features)
    sum(y.square().mean() for y in out.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []  # DistributedDataParallel trains it without find_unused_parameters
    # the converter reads the same architecture back from the state dict
    arch = infer_hrnext_architecture(model.state_dict())
    assert arch["out_features"] == [FEATURES[i] for i in built]
    assert list(_hrnext_expected_shapes(arch)) == keys


def test_single_scale_layout_is_the_official_one():
    """MULTI_SCALE_OUTPUT False: only branch 0 is fused (the official pose model's keys) and the
    outputs equal the multi-scale model's stride4 output with the same weights."""
    torch.manual_seed(0)
    single = fill_like_official(_tiny(), seed=2).eval()
    multi = _tiny("MODEL.HRNEXT.MULTI_SCALE_OUTPUT", True, "MODEL.HRNEXT.OUT_FEATURES", FEATURES).eval()
    fuse_keys = {k.split(".")[3] for k in single.state_dict() if k.startswith("stage4.0.fuse_layers.")}
    assert fuse_keys == {"0"}
    missing, unexpected = multi.load_state_dict(single.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("stage4.0.fuse_layers.") for k in missing)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(multi(x)["stride4"], single(x)["stride4"])


def test_folded_caches_built_under_autocast_are_the_float32_folds():
    torch.manual_seed(0)
    model = fill_like_official(_tiny(), seed=4).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)["stride4"]  # the first eval forward computes (and caches) the folds
        cached = model(x)["stride4"]
        model.set_formulation(fuse_inference=True)  # drops every cache
        fresh = model(x)["stride4"]
    assert torch.equal(cached, fresh)
    assert low.dtype == torch.bfloat16 and (low.float() - fresh).abs().max() < 0.1 * fresh.abs().max()


def test_cpu_sync_batch_norm_is_batch_norm_in_one_process():
    torch.manual_seed(0)
    assert isinstance(get_norm("CPUSyncBN", 8), CPUSyncBatchNorm)
    assert type(get_norm("BN", 8)) is not CPUSyncBatchNorm
    sync, bn = CPUSyncBatchNorm(8), nn.BatchNorm2d(8)
    x = torch.randn(4, 8, 5, 5) * 3 + 1
    assert torch.equal(sync(x), bn(x))
    assert torch.equal(sync.running_var, bn.running_var) and int(sync.num_batches_tracked) == 1
    model = _tiny("MODEL.HRNEXT.NORM", "CPUSyncBN")
    assert type(model.bn1) is CPUSyncBatchNorm
    assert type(model.layer1[0].dlp.dw3x3.conv.attention.norm) is CPUSyncBatchNorm
