"""HRNeXt backbone: official layout, outputs, formulations (reference / fast / folded), training
behaviour (checkpointing, drop path, batch-1 attention BN), norms and initialisation."""
import json

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
import torch.nn.functional as F
from torch import nn

from hrnext_d2 import add_hrnext_config
from hrnext_d2.modeling.backbone.hrnext import HighResolutionContextBlock, HRNeXt
from tests.conftest import REPO_ROOT
from tests.golden_weights import fill_like_official, manifest

S_CFG = REPO_ROOT / "configs" / "Base-HRNeXt-S.yaml"
B_CFG = REPO_ROOT / "configs" / "Base-HRNeXt-B.yaml"


def _cfg(path=S_CFG, *opts):
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(opts))
    return cfg


def _build(path=S_CFG, *opts) -> HRNeXt:
    return build_backbone(_cfg(path, *opts))


def _rel(y, ref):
    return ((y.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.fixture(scope="module")
def s_model():
    torch.manual_seed(0)
    return fill_like_official(_build(), seed=3)


def test_registered_and_output_shape():
    assert BACKBONE_REGISTRY.get("build_hrnext_backbone") is not None
    model = _build()
    assert isinstance(model, HRNeXt)
    assert model.output_shape() == {"stride4": ShapeSpec(channels=32, stride=4)}
    with torch.device("meta"):
        b = _build(B_CFG)
    assert b.output_shape() == {"stride4": ShapeSpec(channels=48, stride=4)}


@pytest.mark.parametrize("name,path,head", [("hrnext_s_coco", S_CFG, 32 * 17 + 17),
                                             ("hrnext_b_coco", B_CFG, 48 * 17 + 17)])
def test_state_dict_mirrors_official_layout(name, path, head):
    entries = [e for e in json.loads(manifest(name).read_text()) if e[0].startswith("backbone.")]
    with torch.device("meta"):
        model = _build(path)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k[len("backbone."):], shape) for k, shape, _ in entries]  # names, shapes, order
    n = sum(p.numel() for p in model.parameters()) + head
    assert n == {"hrnext_s_coco": 9_479_249, "hrnext_b_coco": 31_726_913}[name]


def test_multi_scale_output_and_feature_validation():
    feats = ["stride4", "stride8", "stride16", "stride32"]
    model = _build(S_CFG, "MODEL.HRNEXT.MULTI_SCALE_OUTPUT", True, "MODEL.HRNEXT.OUT_FEATURES", feats).eval()
    shapes = model.output_shape()
    assert [(shapes[f].channels, shapes[f].stride) for f in feats] == [(32, 4), (64, 8), (128, 16), (256, 32)]
    assert any(k.startswith("stage4.1.fuse_layers.3.") for k in model.state_dict())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert [tuple(out[f].shape) for f in feats] == [(1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6), (1, 256, 2, 3)]
    with pytest.raises(ValueError, match="MULTI_SCALE_OUTPUT"):
        _build(S_CFG, "MODEL.HRNEXT.OUT_FEATURES", ["stride8"])
    with pytest.raises(ValueError, match="unknown HRNeXt output feature 'res2'"):
        _build(S_CFG, "MODEL.HRNEXT.OUT_FEATURES", ["res2"])


def _run(model, x, fast, fuse, dtype):
    model.to(dtype).eval()
    model.set_formulation(fast_ops=fast, fuse_inference=fuse)
    with torch.no_grad():
        return model(x.to(dtype))["stride4"]


def test_formulations_agree_float64_and_float32_at_odd_size(s_model):
    """Input not a multiple of 32: exercises the second bilinear resize and the space-to-batch crop."""
    x = torch.randn(2, 3, 70, 54, generator=torch.Generator().manual_seed(1))
    ref = _run(s_model, x, False, False, torch.float64)
    assert ref.shape == (2, 32, 18, 14) and ref.abs().max() > 1e-2
    for fast, fuse in ((True, False), (True, True)):
        assert _rel(_run(s_model, x, fast, fuse, torch.float64), ref) <= 1e-10, (fast, fuse)
    assert _rel(_run(s_model, x, True, True, torch.float32), ref) <= 1e-5
    s_model.float()


def test_fused_cache_follows_parameters_and_modes(s_model):
    model = s_model.float().eval()
    model.set_formulation(fast_ops=True, fuse_inference=True)
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y1 = model(x)["stride4"]
    block = model.stage3[1].branches[2][0]
    assert "_fused_cache" in block.__dict__
    assert list(model.state_dict()) == keys  # folded tensors never enter the state dict
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # an optimizer-like in-place update and a changed BN statistic
        block.layer_scale_2.mul_(3.0)
        model.stage2[0].branches[0][1].mlp2.norm1.running_var.add_(0.5)
        y2 = model(x)["stride4"]
    model.set_formulation(fuse_inference=False)
    with torch.no_grad():
        y2_ref = model(x)["stride4"]
    assert _rel(y2, y1) > 1e-3
    assert _rel(y2, y2_ref) <= 1e-5
    model.set_formulation(fuse_inference=True)
    model.load_state_dict(saved)
    with torch.no_grad():
        assert _rel(model(x)["stride4"], y1) <= 1e-6
    model.train()
    assert "_fused_cache" not in block.__dict__
    model.eval()
    # Eval mode with gradients needed: the unfused form runs, so gradients reach the parameters.
    model(x)["stride4"].sum().backward()
    assert block.mlp1.norm2.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_fused_cache_sees_reassigned_parameters_and_replaced_modules(s_model):
    """The cache key is read from the modules' own dicts: a parameter assigned anew, a buffer
    replaced, or a norm module swapped for another invalidates the folded form."""
    model = s_model.float().eval()
    model.set_formulation(fast_ops=True, fuse_inference=True)
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(3))
    block = model.stage2[0].branches[0][0]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    old_norm = block.mlp1.norm2

    def folded_equals_unfolded():
        with torch.no_grad():
            folded = model(x)["stride4"]
            model.set_formulation(fuse_inference=False)
            unfolded = model(x)["stride4"]
            model.set_formulation(fuse_inference=True)
            model(x)  # build the cache again before the next change
        return _rel(folded, unfolded) <= 1e-5

    try:
        with torch.no_grad():
            model(x)
        block.layer_scale_2 = nn.Parameter(block.layer_scale_2.detach() * 4)
        assert folded_equals_unfolded()
        block.mlp1.norm2.running_mean = old_norm.running_mean + 0.3
        assert folded_equals_unfolded()
        new_norm = type(old_norm)(old_norm.num_features).eval()
        with torch.no_grad():
            new_norm.weight.uniform_(0.5, 2.0)
            new_norm.running_var.uniform_(0.5, 2.0)
        block.mlp1.norm2 = new_norm
        assert folded_equals_unfolded()
    finally:
        block.mlp1.norm2 = old_norm
        model.load_state_dict(saved)


def test_gradient_checkpointing_gives_same_training_step():
    torch.manual_seed(0)
    plain = fill_like_official(_build(S_CFG, "MODEL.HRNEXT.DROP_PATH_RATE", 0.0), seed=5).train()
    ckpt = _build(S_CFG, "MODEL.HRNEXT.DROP_PATH_RATE", 0.0, "MODEL.HRNEXT.WITH_CP", True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert all(b.with_cp for b in ckpt.modules() if isinstance(b, HighResolutionContextBlock))
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(6))
    grads, outs = [], []
    for model in (plain, ckpt):
        y = model(x)["stride4"]
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert torch.allclose(outs[1], outs[0], rtol=1e-6, atol=1e-7)
    for n, g in grads[0].items():
        assert torch.allclose(grads[1][n], g, rtol=1e-4, atol=1e-9), n


def test_training_mode_never_uses_folded_form(s_model):
    """In training (batch statistics), fast ops + FUSE_INFERENCE compute the reference function."""
    model = s_model.double().train()
    x = torch.randn(2, 3, 40, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    outs = []
    for fast, fuse in ((False, False), (True, True)):
        model.set_formulation(fast_ops=fast, fuse_inference=fuse)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(11)  # same drop-path draws
        outs.append(model(x)["stride4"].detach())
        model.load_state_dict(state)
    assert _rel(outs[1], outs[0]) <= 1e-10
    model.float().eval()


def test_batch_one_training_raises_clear_error():
    model = _build().train()
    with pytest.raises(ValueError, match="at least 2 samples"):
        model(torch.randn(1, 3, 64, 48))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 48))["stride4"].shape == (1, 32, 16, 12)


@pytest.mark.parametrize("norm", ["naiveSyncBN", "FrozenBN", "SyncBN"])
def test_norm_choices(norm):
    model = _build(S_CFG, "MODEL.HRNEXT.NORM", norm)
    expected = {"naiveSyncBN": "NaiveSyncBatchNorm", "FrozenBN": "FrozenBatchNorm2d", "SyncBN": "SyncBatchNorm"}
    assert type(model.bn1).__name__ == expected[norm]
    assert type(model.layer1[0].dlp.dw3x3.conv.attention.norm).__name__ == expected[norm]
    x = torch.randn(2, 3, 64, 48)
    model.eval()
    with torch.no_grad():
        y = model(x)["stride4"]
        model.set_formulation(fuse_inference=False)
        assert _rel(model(x)["stride4"], y) <= 1e-5
    if norm == "naiveSyncBN":  # single process on the CPU: trains like BN
        model.train()
        model(x)["stride4"].sum().backward()


def test_drop_path_schedule_and_eval_identity():
    model = _build()
    rates = {n: (m.drop_path.drop_prob if hasattr(m.drop_path, "drop_prob") else 0.0)
             for n, m in model.named_modules() if isinstance(m, HighResolutionContextBlock)}
    step = 0.1 / 17  # 18 blocks counted: 2 (stage 1) + 2x2 + 4x2 + 2x2
    assert rates["layer1.0"] == 0.0 and rates["layer1.1"] == pytest.approx(step)
    assert rates["stage2.0.branches.0.0"] == pytest.approx(2 * step)
    assert rates["stage2.0.branches.1.1"] == pytest.approx(3 * step)  # same rate in every branch
    assert rates["stage3.3.branches.2.1"] == pytest.approx(13 * step)
    assert rates["stage4.1.branches.3.1"] == pytest.approx(0.1)
    fill_like_official(model, seed=9).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        y1, y2 = model(x)["stride4"], model(x)["stride4"]
    assert torch.equal(y1, y2)


def test_initialisation():
    torch.manual_seed(0)
    model = _build()
    w = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    assert 0.0009 < w.std().item() < 0.0011 and abs(w.mean().item()) < 1e-4
    assert all(m.bias.abs().max() == 0 for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    bank = model.layer1[0].mlp2.proj1.conv.aggregation.weight  # [4, 256, 64, 1, 1], fan_in 64
    bound = (6.0 / 64) ** 0.5
    assert bank.abs().max() <= bound and bank[0].std() > 0.5 * bound / 3 ** 0.5
    assert torch.all(model.layer1[0].layer_scale_3 == 1e-2)


def test_formulation_switch_is_one_mechanism_and_restores():
    from hrnext_d2.modeling.layers import FormulationMixin, FusedInferenceMixin, formulation

    model = _build(S_CFG, "MODEL.HRNEXT.FAST_OPS", True, "MODEL.HRNEXT.FUSE_INFERENCE", True)
    switchable = [m for m in model.modules() if isinstance(m, FormulationMixin)]
    fused = [m for m in model.modules() if isinstance(m, FusedInferenceMixin)]
    assert len(switchable) > 100 and len(fused) > 50
    # every module that reads `fast_ops` is a FormulationMixin (nothing left to a hasattr walk)
    assert all(isinstance(m, FormulationMixin) for m in model.modules() if "fast_ops" in vars(m))
    model.layer1[0].fast_ops = False  # one module set differently by hand
    with formulation(model, fast_ops=False, fuse_inference=False):
        assert not any(m.fast_ops for m in switchable) and not any(m.fuse_inference for m in fused)
    assert model.layer1[0].fast_ops is False and model.stage2[0].branches[0][0].fast_ops is True
    assert all(m.fuse_inference for m in fused)


def test_fast_training_step_gradients_match_reference_at_batch_8():
    """The fast training path (channels-last, compiled depthwise kernels, batched-matmul 1x1 dynamic
    convs) against the reference formulation: same loss, every gradient within 1e-4 (batch 8)."""
    torch.manual_seed(0)
    ref = fill_like_official(_build(S_CFG, "MODEL.HRNEXT.DROP_PATH_RATE", 0.0), seed=8).train()
    fast = _build(S_CFG, "MODEL.HRNEXT.DROP_PATH_RATE", 0.0).train()
    fast.load_state_dict(ref.state_dict())
    ref.set_formulation(fast_ops=False, fuse_inference=False)
    fast.set_formulation(fast_ops=True)
    x = torch.randn(8, 3, 64, 48, generator=torch.Generator().manual_seed(9))
    target = torch.randn(8, 32, 16, 12, generator=torch.Generator().manual_seed(10))
    losses = []
    for model in (ref, fast):
        loss = F.mse_loss(model(x)["stride4"].float(), target)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    pairs = [(n, pr.grad, pf.grad) for (n, pr), pf in zip(ref.named_parameters(), fast.parameters())]
    scale = max(g.abs().max().item() for _, g, _ in pairs)
    # every entry within 1e-4 of the largest gradient; every tensor whose gradient is not float noise
    # (biases followed by a training-mode BatchNorm have a zero gradient) within 1e-4 of its own scale
    assert max((f - r).abs().max().item() for _, r, f in pairs) < 1e-4 * scale
    for name, r, f in pairs:
        own = r.abs().max().item()
        if own > 1e-2 * scale:
            assert (f - r).abs().max().item() < 1e-4 * own, name
