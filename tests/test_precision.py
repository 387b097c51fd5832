"""The precision of the network's passes: bf16 autocast of the trunk, a float32 head."""

import logging

import pytest
import torch

import equihash.nn.precision as precision
from equihash.io import InputError
from equihash.nn.mnist import MnistMosaicCNN
from equihash.nn.resnet import Uint8ResNet
from equihash.nn.precision import PRECISIONS, check_precision, precision_context, resolve_precision

CPU = torch.device("cpu")


def dtypes_seen(net, x, mode):
    """The dtype of the output of every Linear and Conv2d of ``net`` on ``x`` at precision ``mode``."""
    seen = {}
    hooks = [module.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, out.dtype))
             for name, module in net.named_modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.inference_mode(), precision_context(mode, CPU):
        logits = net(x)
    for hook in hooks:
        hook.remove()
    return seen, logits


@pytest.mark.parametrize("net, x", [
    (MnistMosaicCNN(16), torch.randn(4, 56, 56)),
    (Uint8ResNet(16), torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)),
])
def test_bf16_runs_the_trunk_in_bfloat16_and_the_head_in_float32(net, x):
    net = net.eval()
    seen, logits = dtypes_seen(net, x, "bf16")
    head = {name for name in seen if name.startswith("head")}
    assert head and all(seen[name] == torch.float32 for name in head)
    assert all(seen[name] == torch.bfloat16 for name in seen if name not in head)
    assert logits.dtype == torch.float32
    seen32, logits32 = dtypes_seen(net, x, "fp32")
    assert set(seen32.values()) == {torch.float32}
    with torch.inference_mode():
        assert torch.equal(logits32, net(x))  # fp32 is the plain pass
    assert not torch.equal(logits, logits32)
    assert torch.allclose(logits, logits32, atol=0.1, rtol=0.05)


def test_an_unknown_precision_names_where_it_came_from():
    assert check_precision("bf16", "encode") == "bf16"
    with pytest.raises(InputError, match=r"encode: precision 'fp16'; expected one of fp32, bf16"):
        check_precision("fp16", "encode")


@pytest.mark.parametrize("flags, resolved", [({"avx2", "avx512f"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"),
                                             ({"amx_bf16"}, "bf16")])
def test_auto_is_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, flags, resolved):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    for device in ("cpu", CPU):
        assert resolve_precision("auto", device, "encode") == resolved
    if not torch.cuda.is_available():  # auto is the CPU here; a GPU torch does not see is not native
        assert resolve_precision("auto", "auto", "encode") == resolved
        assert resolve_precision("auto", "cuda", "encode") == "fp32"
    for explicit in PRECISIONS:  # an explicit precision is kept, native or not
        assert resolve_precision(explicit, "cpu", "encode") == explicit
    with pytest.raises(InputError, match=r"encode: precision 'fp16'; expected one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu", "encode")


def test_bf16_on_a_cpu_without_bf16_units_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    precision._warn_emulated.cache_clear()
    with caplog.at_level(logging.WARNING, logger="equihash"):
        for _ in range(2):
            with precision_context("bf16", CPU):
                pass
    assert [r.message for r in caplog.records].count(
        "precision bf16 on a CPU without bfloat16 units (avx512_bf16 or amx_bf16): torch emulates it, "
        "about ten times more slowly than fp32") == 1
    precision._warn_emulated.cache_clear()
