"""Export forms of the HRNeXt ops (static weights, symbolic batch) against the reference formulation in
float64, the switch that selects them, and the pinned folded forms."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from torch import nn

from hrnext_d2.checkpoint.synthetic_weights import fill_like_official
from hrnext_d2.modeling.layers import DConv, FusedInferenceMixin, KernelAggregation
from hrnext_d2.modeling.layers.export_forms import (
    dilated_depthwise_export,
    dynamic_conv_export,
    export_forms_active,
    pinned_folded_forms,
    use_export_forms,
)
from tests.modeling.test_top_down import topdown_cfg


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _rel(y, ref):
    return ((y - ref).abs().max() / ref.abs().max()).item()


# (in, out, kernel, stride, padding, groups, K): the depthwise and 1x1 convs of HRNeXt, plus a
# strided grouped conv with several channels per group (the general case of the grouped form).
CASES = [(12, 12, 3, 1, 1, 12, 4), (16, 16, 3, 1, 1, 16, 2), (8, 12, 1, 1, 0, 1, 4),
         (8, 6, 3, 2, 1, 2, 3), (6, 6, 5, 1, 2, 6, 2)]


@pytest.mark.parametrize("cin,cout,k,stride,pad,groups,kernels", CASES)
def test_dynamic_conv_export_form_equals_reference_float64(cin, cout, k, stride, pad, groups, kernels):
    agg = KernelAggregation(cin, cout, k, stride, pad, 1, groups, kernels).double()
    x = torch.randn(5, cin, 11, 9, dtype=torch.float64, generator=_g(1))
    att = torch.rand(5, kernels, dtype=torch.float64, generator=_g(2))
    bank = agg.weight.detach()
    for bias in (None, torch.randn(cout, dtype=torch.float64, generator=_g(3)),
                 torch.randn(5, cout, dtype=torch.float64, generator=_g(4))):
        ref = agg.convolve(x, att, bank, bias, fast=False)  # the batch folded into the groups
        y = dynamic_conv_export(x, att, bank, bias, stride, pad, 1, groups)
        assert y.shape == ref.shape
        assert _rel(y, ref) <= 1e-12
        # the layer dispatches to it in export mode
        with use_export_forms():
            assert torch.equal(agg.convolve(x, att, bank, bias, fast=True), y)


def test_folded_dconv_in_export_mode_equals_reference():
    torch.manual_seed(0)
    m = DConv(8, 8, 3, 1, 1, groups=8, num_kernels=4).double().eval()
    fill_like_official(m, 3)
    norm = nn.BatchNorm2d(8).double().eval()
    fill_like_official(norm, 4)
    x = torch.randn(3, 8, 10, 7, dtype=torch.float64, generator=_g(5))
    with torch.no_grad():
        m.conv.aggregation.fast_ops = False
        ref = norm(m(x))
        f = m.fold(norm)
        with use_export_forms():
            y = m.apply_folded(x, f)
    assert _rel(y, ref) <= 1e-12


def test_dilated_depthwise_export_form():
    x = torch.randn(2, 6, 13, 10, dtype=torch.float64, generator=_g(6))
    w = torch.randn(6, 1, 7, 7, dtype=torch.float64, generator=_g(7))
    b = torch.randn(6, dtype=torch.float64, generator=_g(8))
    assert torch.equal(dilated_depthwise_export(x, w, b, 3, 9), F.conv2d(x, w, b, 1, 9, 3, 6))


class _Probe(nn.Module):
    def forward(self, x):
        return x + 1 if export_forms_active() else x


def test_export_forms_switch():
    assert not export_forms_active()
    with use_export_forms():
        assert export_forms_active()
        with use_export_forms(False):
            assert not export_forms_active()
        assert export_forms_active()
    assert not export_forms_active()
    traced = torch.jit.trace(_Probe(), torch.zeros(2), check_trace=False)  # a trace takes the export forms by itself
    assert torch.equal(traced(torch.zeros(3)), torch.ones(3))
    with use_export_forms(False):  # unless told not to (fvcore's FLOP count traces the eager forms)
        traced = torch.jit.trace(_Probe(), torch.zeros(2), check_trace=False)
    assert torch.equal(traced(torch.zeros(3)), torch.zeros(3))


@pytest.fixture(scope="module")
def small_model64():
    """Reduced HRNeXt-S top-down model (one module per stage, 128x96), trained-like weights, float64."""
    torch.manual_seed(0)
    model = build_model(topdown_cfg()).eval()
    fill_like_official(model, 11)
    return model.double()


def test_whole_model_export_forms_equal_reference_formulation_float64(small_model64):
    model = small_model64
    x = torch.randn(3, 3, 128, 96, dtype=torch.float64, generator=_g(9))
    with torch.no_grad():
        model.backbone.set_formulation(fast_ops=False, fuse_inference=False)
        ref = model.forward_crops(x)
        model.backbone.set_formulation(fast_ops=True, fuse_inference=True)
        with use_export_forms(), pinned_folded_forms(model) as pinned:
            y = model.forward_crops(x)
            y1 = model.forward_crops(x[1:2])
    assert pinned > 0 and ref.abs().max() > 1e-3
    assert _rel(y, ref) <= 1e-10
    assert _rel(y1, ref[1:2]) <= 1e-10  # per-sample kernels: batch size changes nothing


def test_pinned_folded_forms_are_constants_and_released(small_model64):
    model = small_model64
    fused = [m for m in model.modules() if isinstance(m, FusedInferenceMixin)]
    with torch.no_grad(), pinned_folded_forms(model) as pinned:
        assert pinned == len(fused)
        values = [m.fused_params() for m in fused]
        assert all(v is m.fused_params() for v, m in zip(values, fused))  # served, not recomputed

        def tensors(v):
            if isinstance(v, torch.Tensor):
                yield v
            elif isinstance(v, dict):
                for u in v.values():
                    yield from tensors(u)
            elif isinstance(v, (list, tuple)):
                for u in v:
                    yield from tensors(u)

        params = {p.data_ptr() for p in model.parameters()}
        for t in tensors(values):
            assert not t.requires_grad and t.data_ptr() not in params
    assert all("fused_params" not in m.__dict__ for m in fused)
    # outside the block the lazy cache works as before; grads needed -> no folding, nothing pinned
    with pinned_folded_forms(model) as pinned:
        assert pinned == 0 or not torch.is_grad_enabled()
