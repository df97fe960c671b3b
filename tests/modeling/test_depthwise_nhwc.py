"""The compiled channels-last depthwise kernels: forward, input and weight gradients against
PyTorch's convolution in float64, shared and per-sample kernels, the fused GELU, the fallbacks; and
the whole fast path (channels-last + kernels) against the reference formulation in training."""
import shutil

import pytest
import torch
import torch.nn.functional as F

from hrnext_d2.modeling.layers import depthwise_nhwc
from hrnext_d2.modeling.layers.depthwise_nhwc import cpu_kernels_available, cpu_kernels_usable, depthwise_conv2d


@pytest.fixture(scope="module", autouse=True)
def kernels():
    if not cpu_kernels_available():
        pytest.skip("the CPU depthwise kernels could not be built here (no C compiler?): the PyTorch path is used")


def _reference(x, w, b, pad, dil, per_sample):
    B, C = x.shape[:2]
    if per_sample:
        y = F.conv2d(x.reshape(1, B * C, *x.shape[2:]), w.reshape(B * C, 1, *w.shape[2:]),
                     None if b is None else b.reshape(-1), 1, pad, dil, B * C)
        return y.view(B, C, *y.shape[2:])
    return F.conv2d(x, w, b, 1, pad, dil, C)


@pytest.mark.parametrize(
    "B,C,H,W,k,dil,per_sample,bias",
    [
        (3, 32, 17, 13, 3, 1, True, "sample"),   # HRNeXt's dynamic 3x3 (C multiple of 16: vector path)
        (2, 64, 9, 30, 7, 3, False, None),       # the dilated 7x7 of the spatial gate
        (2, 16, 6, 5, 5, 1, False, "shared"),    # map smaller than the kernel's reach
        (2, 40, 9, 7, 3, 1, True, None),         # C not a multiple of 16: scalar path
        (1, 48, 11, 8, 3, 2, True, "sample"),
        (2, 256, 7, 20, 3, 1, True, "sample"),   # rows too wide for L1: channel blocks outer
    ],
)
def test_forward_and_gradients_match_pytorch(B, C, H, W, k, dil, per_sample, bias):
    g = torch.Generator().manual_seed(B * 100 + C)
    pad = dil * (k - 1) // 2
    x64 = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    w64 = torch.randn(*((B, C) if per_sample else (C, 1)), k, k, generator=g, dtype=torch.float64)
    b64 = None if bias is None else torch.randn(*((B, C) if bias == "sample" else (C,)), generator=g, dtype=torch.float64)
    leaves64 = [t.requires_grad_() for t in (x64, w64, b64) if t is not None]
    ref = _reference(x64, w64, b64, pad, dil, per_sample)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(gy)

    x, w = x64.detach().float().requires_grad_(), w64.detach().float().requires_grad_()
    b = None if b64 is None else b64.detach().float().requires_grad_()
    y = depthwise_conv2d(x, w, b, 1, pad, dil)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.shape == ref.shape
    y.backward(gy.float())
    for ours, theirs in [(y, ref)] + [(t.grad, t64.grad) for t, t64 in zip((x, w, b), (x64, w64, b64)) if t is not None]:
        err = (ours.double() - theirs).abs().max() / theirs.abs().max()
        assert err < 2e-6, err
    with torch.no_grad():
        fused = depthwise_conv2d(x, w, b, 1, pad, dil, gelu=True)
        torch.testing.assert_close(fused, F.gelu(y), atol=2e-6, rtol=1e-5)
        # a per-sample input offset read by the kernel = the conv of the offset input (zero padding)
        offset = torch.randn(B, C, generator=g, dtype=torch.float64)
        expected = _reference(x64.detach() + offset.view(B, C, 1, 1), w64.detach(), None if b64 is None else b64.detach(),
                              pad, dil, per_sample)
        got = depthwise_conv2d(x, w, b, 1, pad, dil, input_bias=offset.float())
        assert ((got.double() - expected).abs().max() / expected.abs().max()) < 2e-6


def test_pytorch_path_when_not_usable(monkeypatch):
    x = torch.randn(2, 32, 8, 6)
    w = torch.randn(32, 1, 3, 3)
    ref = F.conv2d(x, w, None, 1, 1, 1, 32)
    assert cpu_kernels_usable(x)
    assert not cpu_kernels_usable(x.double()) and not cpu_kernels_usable(x.bfloat16())
    # stride 2 and float64 run PyTorch's conv; so does everything when the kernels are switched off
    torch.testing.assert_close(depthwise_conv2d(x, w, None, 2, 1, 1), F.conv2d(x, w, None, 2, 1, 1, 32))
    monkeypatch.setattr(depthwise_nhwc, "_lib", None)
    assert not cpu_kernels_usable(x)
    out = depthwise_conv2d(x, w, None, 1, 1, 1)
    assert out.is_contiguous()  # PyTorch's NCHW result
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="neither"):
        depthwise_conv2d(x, torch.randn(3, 32, 3, 3), None, 1, 1, 1)


def test_traced_graphs_use_standard_ops():
    w = torch.randn(32, 1, 3, 3)
    traced = torch.jit.trace(lambda t: depthwise_conv2d(t, w, None, 1, 1, 1), torch.randn(2, 32, 8, 6))
    assert "aten::_convolution" in str(traced.graph) or "aten::conv2d" in str(traced.graph)
    x = torch.randn(3, 32, 5, 7)
    torch.testing.assert_close(traced(x), F.conv2d(x, w, None, 1, 1, 1, 32))


_PROBE = """
import torch, torch.nn.functional as F
from hrnext_d2.modeling.layers.depthwise_nhwc import cpu_kernels_available, depthwise_conv2d
x = torch.randn(2, 16, 9, 7).contiguous(memory_format=torch.channels_last); w = torch.randn(16, 1, 5, 5)
err = (depthwise_conv2d(x, w, None, 1, 2) - F.conv2d(x, w, None, 1, 2, 1, 16)).abs().max().item()
print("available", cpu_kernels_available(), "error", err)
"""


@pytest.mark.parametrize("env,available", [({}, True), ({"HRNEXT_D2_CPU_KERNELS": "0"}, False),
                                           ({"CC": "/nonexistent/cc"}, False)])
def test_kernel_switches_in_a_fresh_process(tmp_path, env, available):
    """The kernels compile into $HRNEXT_D2_CACHE on first use; HRNEXT_D2_CPU_KERNELS=0 or a compiler
    that fails leaves every call to PyTorch's conv (a warning names the failure), same results."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT, tool_env

    if available and not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler on this machine")
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env=tool_env(HRNEXT_D2_CACHE=str(cache), **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = proc.stdout.split()
    assert words[:2] == ["available", str(available)], proc.stdout
    assert float(words[3]) < 1e-4
    assert bool(list(cache.glob("depthwise_nhwc_*.so"))) == available
    if "CC" in env:
        assert "HRNeXt CPU depthwise kernels unavailable" in proc.stderr, proc.stderr[-2000:]


def _pointwise64(x, k, b):
    """Per-sample 1x1 conv in float64: x (B, C, H, W), k (B, out, C), b (B, out)."""
    return torch.einsum("bchw,boc->bohw", x.double(), k.double()) + b.double()[:, :, None, None]


@pytest.mark.parametrize("B,C,H,W,shared", [(8, 32, 16, 12, False), (1, 32, 21, 13, False), (3, 64, 5, 9, False),
                                             (2, 32, 9, 3, False), (2, 8, 1, 1, False), (3, 16, 7, 10, True)])
def test_pointwise_depthwise_gelu_matches_float64(B, C, H, W, shared):
    """The fused 1x1 conv -> 3x3 depthwise conv -> GELU of the FFN: one sample per task and row groups
    with halo rows (B=1), maps narrower than a register group, a 1x1 map, kernels shared by the batch
    (a static FFN); and the sums."""
    g = torch.Generator().manual_seed(B * 31 + H)
    out = 4 * C
    x = torch.randn(B, C, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    k1, b1 = torch.randn(B, out, C, generator=g) / C ** 0.5, torch.randn(B, out, generator=g)
    k2, b2 = torch.randn(B, out, 3, 3, generator=g) / 3, torch.randn(B, out, generator=g)
    if shared:
        k1, b1, k2, b2 = k1[:1].expand_as(k1), b1[:1].expand_as(b1), k2[:1].expand_as(k2), b2[:1].expand_as(b2)
    with torch.no_grad():
        if shared:
            h, mean = depthwise_nhwc.pointwise_depthwise_gelu(x, k1[0], b1[0], k2[0], b2[0])
        else:
            h, mean = depthwise_nhwc.pointwise_depthwise_gelu(x, k1, b1, k2, b2)
    hid = _pointwise64(x, k1, b1)
    want = F.gelu(F.conv2d(hid.reshape(1, B * out, H, W), k2.double().reshape(B * out, 1, 3, 3),
                           b2.double().reshape(-1), 1, 1, 1, B * out)).view(B, out, H, W)
    assert h.is_contiguous(memory_format=torch.channels_last)
    assert ((h.double() - want).abs().max() / want.abs().max()) < 2e-6
    assert ((mean.double() - want.mean((2, 3))).abs().max() / want.abs().max()) < 2e-6


@pytest.mark.parametrize("B,C,H,W,out", [(8, 128, 16, 12, 32), (3, 256, 5, 7, 64), (1, 64, 3, 1, 32)])
def test_pointwise_residual_matches_float64(B, C, H, W, out):
    g = torch.Generator().manual_seed(B + C + out)
    h = torch.randn(B, C, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    x = torch.randn(B, out, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    k, b = torch.randn(B, out, C, generator=g) / C ** 0.5, torch.randn(B, out, generator=g)
    want = x.double() + _pointwise64(h, k, b)
    with torch.no_grad():
        got = depthwise_nhwc.pointwise_residual_(x, h, k, b)
    assert got is x
    assert ((got.double() - want).abs().max() / want.abs().max()) < 2e-6
    with pytest.raises(ValueError, match="multiple of 32"):
        depthwise_nhwc.pointwise_residual_(x.contiguous(), h, k, b)
