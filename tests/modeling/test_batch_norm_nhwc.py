"""BatchNorm2dNHWC: the same layer as nn.BatchNorm2d (outputs, running statistics, gradients) with the
compiled backward on channels-last CPU tensors, and nn.BatchNorm2d itself everywhere else."""
import pytest
import torch
from torch import nn

from hrnext_d2.modeling.layers import get_norm
from hrnext_d2.modeling.layers.batch_norm_nhwc import BatchNorm2dNHWC
from hrnext_d2.modeling.layers.depthwise_nhwc import cpu_kernels_available


@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_batchnorm2d_in_training(momentum):
    if not cpu_kernels_available():
        pytest.skip("the CPU kernels could not be built here (no C compiler?)")
    g = torch.Generator().manual_seed(0)
    ref = nn.BatchNorm2d(48, momentum=momentum).train()
    with torch.no_grad():
        ref.weight.copy_(torch.rand(48, generator=g) + 0.5)
        ref.bias.copy_(torch.randn(48, generator=g))
    ours = BatchNorm2dNHWC(48, momentum=momentum).train()
    ours.load_state_dict(ref.state_dict())
    for step in range(2):
        x = (torch.randn(4, 48, 9, 7, generator=g) * 3 + 1).contiguous(memory_format=torch.channels_last)
        gy = torch.randn(4, 48, 9, 7, generator=g).contiguous(memory_format=torch.channels_last)
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        yr.backward(gy)
        yo.backward(gy)
        torch.testing.assert_close(yo, yr)
        torch.testing.assert_close(xo.grad, xr.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-5, rtol=1e-5)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)  # running stats and the batch count


def test_is_batchnorm2d_and_the_norm_for_bn():
    norm = get_norm("BN", 8)
    assert type(norm) is BatchNorm2dNHWC and isinstance(norm, nn.BatchNorm2d)
    assert list(norm.state_dict()) == list(nn.BatchNorm2d(8).state_dict())
    # NCHW input and eval mode: nn.BatchNorm2d's own path
    x = torch.randn(2, 8, 5, 5)
    ref = nn.BatchNorm2d(8)
    torch.testing.assert_close(norm(x), ref(x))
    norm.eval(), ref.eval()
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(norm(xc), ref(xc))
