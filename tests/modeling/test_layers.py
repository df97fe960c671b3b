"""HRNeXt layers: each fast or folded formulation against the plain reference op."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrnext_d2.modeling.layers import (
    ChannelsLastLayerNorm,
    DConv,
    DropPath,
    dilated_depthwise_conv2d,
    fold_conv_norm,
)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _randomize_norm(bn: nn.BatchNorm2d, g):
    with torch.no_grad():
        n = bn.num_features
        bn.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
        bn.bias.copy_(0.2 * torch.randn(n, generator=g))
        bn.running_mean.copy_(0.3 * torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)


@pytest.mark.parametrize("shape,k,d,pad", [((2, 4, 16, 12), 7, 3, 9), ((1, 3, 17, 13), 7, 3, 9),
                                           ((2, 5, 5, 7), 7, 3, 9), ((2, 3, 11, 9), 3, 2, 2),
                                           ((1, 2, 10, 10), 5, 3, 3)])
def test_space_to_batch_dilated_depthwise_matches_conv2d(shape, k, d, pad):
    g = _g(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=g)
    w = torch.randn(shape[1], 1, k, k, dtype=torch.float64, generator=g)
    b = torch.randn(shape[1], dtype=torch.float64, generator=g)
    for bias in (None, b):
        ref = F.conv2d(x, w, bias, 1, pad, d, shape[1])
        y = dilated_depthwise_conv2d(x, w, bias, d, pad)
        assert y.shape == ref.shape
        assert (y - ref).abs().max() <= 1e-12 * ref.abs().max()
    y32 = dilated_depthwise_conv2d(x.float(), w.float(), None, d, pad)
    assert torch.allclose(y32.double(), F.conv2d(x, w, None, 1, pad, d, shape[1]), rtol=1e-5, atol=1e-5)


def _dconv(cin, cout, k, groups, kernels, seed):
    torch.manual_seed(seed)
    m = DConv(cin, cout, k, 1, k // 2, groups=groups, num_kernels=kernels).double()
    g = _g(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=g) / max(1, p[0].numel()) ** 0.5)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            _randomize_norm(bn, g)
    return m


@pytest.mark.parametrize("cin,cout,k,groups,kernels", [(8, 12, 1, 1, 4), (12, 12, 3, 12, 2), (8, 6, 1, 1, 1),
                                                       (6, 6, 3, 6, 1)])
def test_dconv_fast_and_folded_forms(cin, cout, k, groups, kernels):
    m = _dconv(cin, cout, k, groups, kernels, seed=cin + cout + k)
    x = torch.randn(3, cin, 9, 7, dtype=torch.float64, generator=_g(1))
    m.eval()
    agg = m.conv.aggregation if m.is_dynamic else None
    if agg is not None:
        agg.fast_ops = False
        ref = m(x)
        agg.fast_ops = True
        assert (m(x) - ref).abs().max() <= 1e-12 * ref.abs().max()
        # per-sample kernels: sample 0 alone gives the same result
        assert torch.allclose(m(x[:1]), ref[:1], rtol=1e-12, atol=1e-14)
    else:
        ref = m(x)
    # Fold out-norm, a layer-scale multiplier and (1x1 only) an input affine map.
    out_norm = nn.BatchNorm2d(cout).double().eval()
    _randomize_norm(out_norm, _g(2))
    mult = torch.rand(cout, dtype=torch.float64, generator=_g(3))
    a = 1 + 0.3 * torch.randn(cin, dtype=torch.float64, generator=_g(4))
    c = 0.3 * torch.randn(cin, dtype=torch.float64, generator=_g(5))
    affine = (a, c) if k == 1 else None
    xin = x * a.view(1, -1, 1, 1) + c.view(1, -1, 1, 1) if affine else x
    expected = out_norm(m(xin)) * mult.view(1, -1, 1, 1)
    with torch.no_grad():
        f = m.fold(out_norm, mult, affine)
        for fast in (False, True):
            y = m.apply_folded(x, f, fast)
            assert (y - expected).abs().max() <= 1e-11 * expected.abs().max()


def test_dynamic_attention_batch_one_training_error():
    m = _dconv(8, 8, 1, 1, 4, seed=0).train()
    with pytest.raises(ValueError, match="at least 2 samples per process"):
        m(torch.randn(1, 8, 5, 5, dtype=torch.float64))
    assert m(torch.randn(2, 8, 5, 5, dtype=torch.float64)).shape == (2, 8, 5, 5)


def test_kernel_bank_kaiming_uniform_per_kernel():
    torch.manual_seed(0)
    m = DConv(64, 256, 1, num_kernels=4)
    bank = m.conv.aggregation.weight
    assert bank.shape == (4, 256, 64, 1, 1)
    bound = (6 / 64) ** 0.5  # kaiming_uniform_ (a=0): gain sqrt(2), fan_in 64
    for i in range(4):
        assert bank[i].abs().max() <= bound and bank[i].abs().max() > 0.95 * bound
    assert m.conv.attention.conv1.weight.shape == (16, 64, 1, 1) and m.conv.attention.conv2.bias is not None


def test_fold_conv_norm_matches_conv_then_bn():
    g = _g(7)
    conv = nn.Conv2d(5, 6, 3, padding=1, bias=True).double()
    bn = nn.BatchNorm2d(6).double().eval()
    _randomize_norm(bn, g)
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64, generator=g)
    w, b = fold_conv_norm(conv.weight, conv.bias, bn)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), bn(conv(x)), rtol=1e-12, atol=1e-13)


def test_channels_last_layer_norm_formulations():
    ln = ChannelsLastLayerNorm(6).double()
    with torch.no_grad():
        ln.norm.weight.copy_(torch.randn(6, dtype=torch.float64, generator=_g(8)))
        ln.norm.bias.copy_(torch.randn(6, dtype=torch.float64, generator=_g(9)))
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, generator=_g(10))
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * ln.norm.weight.view(1, -1, 1, 1) + ln.norm.bias.view(1, -1, 1, 1)
    for fast in (False, True):
        ln.fast_ops = fast
        y = ln(x)
        assert y.is_contiguous() and torch.allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert list(ln.state_dict()) == ["norm.weight", "norm.bias"]


def test_drop_path():
    x = torch.ones(400, 3, 2, 2)
    dp = DropPath(0.25)
    dp.eval()
    assert dp(x) is x
    dp.train()
    torch.manual_seed(0)
    y = dp(x)
    per_sample = y.flatten(1)
    kept = per_sample[:, 0] > 0
    assert torch.all(per_sample[kept] == 1 / 0.75) and torch.all(per_sample[~kept] == 0)
    assert 0.65 < kept.float().mean().item() < 0.85
    assert DropPath(0.0).train()(x) is x
