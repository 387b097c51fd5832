"""MnistMosaicCNN's pooling: the fast pass without gradients is max_pool2d bit for bit."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equihash.nn.mnist import MaxPool2x2, MnistMosaicCNN


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5, 8, 10), (2, 4, 7, 9), (6, 3, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pooling_without_gradients_equals_max_pool2d(dtype, shape, channels_last):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    x[..., 1::4, :] = x[..., 0::4, :]  # tied maxima
    x.view(-1)[5] = float("nan")
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = MaxPool2x2()(x)
    assert fast.dtype == dtype
    torch.testing.assert_close(fast, F.max_pool2d(x, 2), rtol=0, atol=0, equal_nan=True)


def test_pooling_with_gradients_is_max_pool2d():
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    x[..., 1::2, :] = x[..., 0::2, :]  # ties: max_pool2d's gradient goes to the first maximum only
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    MaxPool2x2()(a).backward(grad)
    F.max_pool2d(b, 2).backward(grad)
    assert torch.equal(a.grad, b.grad)
    assert (a.grad != 0).sum() == grad.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_network_logits_are_those_of_max_pool2d(dtype):
    torch.manual_seed(0)
    net = MnistMosaicCNN(16).eval().to(memory_format=torch.channels_last)
    reference = copy.deepcopy(net)
    for i, layer in enumerate(reference.features):
        if isinstance(layer, MaxPool2x2):
            reference.features[i] = nn.MaxPool2d(2)
    x = torch.randn(5, 56, 56)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
        assert torch.equal(net(x), reference(x))
    assert net.state_dict().keys() == reference.state_dict().keys()
