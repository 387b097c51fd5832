"""Tests of the ResNet equihash networks (docs/method.md section 5): layout, head, input handling."""

import math

import pytest
import torch

from equihash.io import InputError
from equihash.nn.mnist import MnistMosaicCNN
from equihash.nn.resnet import Bottleneck, MnistResNet, Uint8ResNet
from equihash.tasks import build_network

K = 64


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def conv_bn(k, c_in, c_out):
    """Parameters of a bias-free k x k convolution followed by BatchNorm (weight + bias)."""
    return k * k * c_in * c_out + 2 * c_out


def layout_count(depth, nbits, in_channels=3):
    """Parameter count from the ResNet layout formula, written independently of the module."""
    bottleneck = depth == 50
    counts = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    expansion = 4 if bottleneck else 1
    total, c = conv_bn(7, in_channels, 64), 64
    for planes, stride, count in zip((64, 128, 256, 512), (1, 2, 2, 2), counts):
        for i in range(count):
            out = planes * expansion
            if bottleneck:
                total += conv_bn(1, c, planes) + conv_bn(3, planes, planes) + conv_bn(1, planes, out)
            else:
                total += conv_bn(3, c, planes) + conv_bn(3, planes, planes)
            if (stride if i == 0 else 1) != 1 or c != out:
                total += conv_bn(1, c, out)
            c = out
    return total + c * nbits + 2 * nbits  # Linear without bias + BatchNorm1d


# torchvision's totals (with its 1000-class Linear with bias) and the fc width.
TORCHVISION = {18: (11_689_512, 512), 34: (21_797_672, 512), 50: (25_557_032, 2048)}


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parameter_counts_match_the_standard_layouts(depth):
    total, width = TORCHVISION[depth]
    expected = total - (width * 1000 + 1000) + width * K + 2 * K
    assert layout_count(depth, K) == expected
    assert n_params(Uint8ResNet(K, depth)) == expected
    assert {18: 11_209_408, 34: 21_317_568, 50: 23_639_232}[depth] == expected


def test_mnist_resnet_count_and_shapes():
    net = MnistResNet(K).eval()
    # One input channel instead of three in the 7x7 stem: 2 * 49 * 64 = 6272 fewer weights.
    assert n_params(net) == layout_count(18, K, in_channels=1) == 11_209_408 - 6272
    assert net.stem[0].stride == (1, 1) and net.stem[0].padding == (3, 3)
    x = torch.rand(3, 56, 56)
    with torch.inference_mode():
        out = net(x)
        assert out.shape == (3, K)
        pairs = net(x[:2].reshape(1, 2, 56, 56))
    assert pairs.shape == (1, 2, K)
    torch.testing.assert_close(pairs[0], out[:2], rtol=0, atol=1e-5)


def test_bottleneck_stride_on_the_3x3_convolution():
    net = Uint8ResNet(K, 50)
    first = net.stages[1][0]
    assert isinstance(first, Bottleneck)
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)  # ResNet v1.5
    assert first.shortcut[0].stride == (2, 2)
    assert net.stages[0][0].shortcut[0].out_channels == 256  # 64 -> 256: projection at stride 1
    assert isinstance(net.stages[0][1].shortcut, torch.nn.Identity)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return Uint8ResNet(K).to(memory_format=torch.channels_last).eval()


def images(*lead, h=64, w=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*lead, 3, h, w), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_leading_shapes_match_the_flat_batch(resnet18, lead):
    x = images(*lead)
    with torch.inference_mode():
        out = resnet18(x)
        flat = resnet18(x.reshape(-1, 3, 64, 96))
    assert out.shape == (*lead, K)
    torch.testing.assert_close(out.reshape(-1, K), flat, rtol=0, atol=1e-5)


def test_uint8_rescale_reaches_the_first_convolution(resnet18):
    seen = []
    hook = resnet18.stem[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.tensor([0, 255, 127, 128], dtype=torch.uint8).repeat_interleave(16).reshape(1, 1, 8, 8)
    x = x.expand(2, 3, 8, 8).contiguous()
    try:
        with torch.inference_mode():
            resnet18(x)
    finally:
        hook.remove()
    (first,) = seen
    assert first.dtype == torch.float32 and first.shape == (2, 3, 8, 8)
    assert first.is_contiguous(memory_format=torch.channels_last)
    rows = first[:, :, :, 0].reshape(-1, 4, 2)[..., 0]  # each value fills 2 rows
    expected = torch.tensor([-1.0, 1.0, -0.5 / 127.5, 0.5 / 127.5])
    torch.testing.assert_close(rows, expected.expand_as(rows), rtol=0, atol=1e-7)


def test_eval_logits_do_not_depend_on_the_batch(resnet18):
    x = images(4, seed=1)
    with torch.inference_mode():
        batch = resnet18(x)
        for i in range(4):
            torch.testing.assert_close(resnet18(x[i]), batch[i], rtol=0, atol=1e-5)
    assert batch.std() > 0.01  # the test is not vacuous: rows differ
    assert (batch[0] - batch[1]).abs().max() > 1e-3


def test_thesis_mosaic_size_and_pairs_train_step():
    torch.manual_seed(1)
    net = build_network("OpenImagesMosaic", 16).to(memory_format=torch.channels_last)
    assert isinstance(net, Uint8ResNet) and net.depth == 18
    feature, linear = [], []
    net.stages.register_forward_hook(lambda module, args, out: feature.append(out.shape))
    net.head[0].register_forward_hook(lambda module, args, out: linear.append(out.detach()))
    x = images(2, 2, h=180, w=270, seed=2)  # two positive pairs: (n, 2, 3, H, W)
    out = net.train()(x)
    assert out.shape == (2, 2, 16)
    assert feature == [(4, 512, 6, 9)]  # 180 x 270 / 32, rounded up by the paddings
    # Training-mode BatchNorm1d over the 4 images of the 2 pairs (weight 1, bias 0, eps 1e-5).
    (z,) = linear
    expected = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out.detach().reshape(4, 16), expected, rtol=1e-4, atol=1e-5)
    out[..., :8].sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_initialisation_and_reproducibility():
    torch.manual_seed(3)
    a = Uint8ResNet(K)
    torch.manual_seed(3)
    b = Uint8ResNet(K)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    conv = a.stages[3][1].conv2.weight  # 512 -> 512, 3x3: Kaiming normal, fan-out, ReLU gain
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.01)
    assert abs(conv.mean().item()) < 1e-4
    bns = [m for m in a.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert len(bns) == 1 + 2 * 8 + 3 + 1  # stem, two per block, three projections, head
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in bns)
    assert a.head[0].bias is None
    x = images(2, seed=4)
    with torch.inference_mode():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_registry_and_bad_input():
    assert type(build_network("OpenImagesMosaic", 8)) is Uint8ResNet
    assert isinstance(build_network("MnistMosaic", 8), MnistMosaicCNN)
    assert build_network("OpenImagesMosaic", 8, depth=34).depth == 34
    with pytest.raises(InputError, match="unknown task 'Nope'; known tasks: MnistMosaic, OpenImagesMosaic"):
        build_network("Nope", 8)
    with pytest.raises(ValueError, match=r"depth must be one of \[18, 34, 50\], got 101"):
        Uint8ResNet(8, depth=101)
    net = Uint8ResNet(8).eval()
    with pytest.raises(ValueError, match=r"uint8 images of shape \(\.\.\., 3, H, W\), got torch.float32"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got torch.uint8 \(1, 1, 32, 32\)"):
        net(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="MnistResNet expects float images"):
        MnistResNet(8)(torch.zeros(2, 56, 56, dtype=torch.uint8))
