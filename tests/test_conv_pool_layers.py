"""Convolution and pooling modules against PyTorch (weights loaded from torch's
state_dict, float32): every argument torch has that we support, padding modes, transposed
convolution, empty batches and unbatched inputs; and the argument errors, raised once
where the layer is built, naming the layer, the argument and the value."""
import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn
from tinygrad_k.nn import functional as F
from test_layers import copy_weights, rel, run_pair

torch = pytest.importorskip("torch")
tnn = torch.nn

CONV = {
    "conv1d": (lambda m: m.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
               (2, 4, 11)),
    "conv1d_same_circular": (lambda m: m.Conv1d(3, 2, 4, padding="same",
                                                padding_mode="circular"), (2, 3, 9)),
    "conv2d_groups_dilation": (lambda m: m.Conv2d(6, 4, (3, 2), stride=(1, 2), padding=(2, 1),
                                                  dilation=(2, 1), groups=2), (2, 6, 9, 8)),
    "conv2d_depthwise": (lambda m: m.Conv2d(3, 6, 3, padding=1, groups=3, bias=False),
                         (2, 3, 6, 5)),
    "conv2d_same_even": (lambda m: m.Conv2d(2, 3, (4, 3), padding="same", dilation=(1, 2)),
                         (2, 2, 7, 8)),
    "conv2d_valid": (lambda m: m.Conv2d(2, 3, 3, padding="valid"), (2, 2, 6, 6)),
    "conv2d_reflect": (lambda m: m.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="reflect"),
                       (2, 2, 6, 5)),
    "conv2d_replicate": (lambda m: m.Conv2d(2, 3, 3, stride=2, padding=2,
                                            padding_mode="replicate"), (2, 2, 6, 5)),
    "conv2d_circular_same": (lambda m: m.Conv2d(2, 3, (2, 3), padding="same",
                                                padding_mode="circular"), (2, 2, 5, 6)),
    "conv_transpose2d": (lambda m: m.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                     output_padding=1, groups=2), (2, 4, 5, 4)),
    "conv_transpose2d_dilated": (lambda m: m.ConvTranspose2d(3, 2, (2, 3), stride=(1, 2),
                                                             padding=(0, 1), dilation=(2, 1),
                                                             output_padding=(1, 0)),
                                 (2, 3, 4, 5)),
    "maxpool1d": (lambda m: m.MaxPool1d(3, 2, 1, dilation=2, ceil_mode=True), (2, 3, 10)),
    "avgpool1d": (lambda m: m.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                  (2, 3, 10)),
    "maxpool2d_dilated_ceil": (lambda m: m.MaxPool2d((3, 2), (2, 1), (1, 0), dilation=(1, 2),
                                                     ceil_mode=True), (2, 3, 9, 8)),
    "avgpool2d_divisor": (lambda m: m.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=4),
                          (2, 3, 8, 7)),
}


@pytest.mark.parametrize("name", sorted(CONV))
def test_layer_matches_pytorch(name):
    make, shape = CONV[name]
    ours, theirs = make(nn), make(tnn)
    copy_weights(ours, theirs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    run_pair(ours, theirs, x)
    # the same layer on one unbatched sample, as PyTorch allows
    y, ty = ours(tk.tensor(x[0])), theirs(torch.tensor(x[0]))
    assert y.shape == tuple(ty.shape) and rel(y.numpy(), ty.detach().numpy()) < 1e-5


@pytest.mark.parametrize("name", sorted(CONV))
def test_empty_batch_gives_pytorchs_shape(name):
    make, shape = CONV[name]
    ours, theirs = make(nn), make(tnn)
    x = np.zeros((0,) + shape[1:], np.float32)
    xt = tk.tensor(x, requires_grad=True)
    y = ours(xt)
    assert y.shape == tuple(theirs(torch.tensor(x)).shape)
    y.sum().backward()
    assert xt.grad.shape == x.shape
    for p in ours.parameters():
        assert not p.grad.numpy().any()


def test_conv_transpose_output_size_picks_the_output_padding():
    ours, theirs = nn.ConvTranspose2d(2, 3, 3, stride=3), tnn.ConvTranspose2d(2, 3, 3, stride=3)
    copy_weights(ours, theirs)
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for size in ((12, 12), (13, 14), [1, 3, 14, 12]):
        y, ty = ours(tk.tensor(x), output_size=size), theirs(torch.tensor(x), output_size=size)
        assert y.shape == tuple(ty.shape) and rel(y.numpy(), ty.detach().numpy()) < 1e-5
    with pytest.raises(ValueError, match=r"ConvTranspose2d: output_size must be between "
                                         r"\(12, 12\) and \(14, 14\)"):
        ours(tk.tensor(x), output_size=(15, 12))


def test_max_pool_return_indices_match_pytorch():
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 8)).astype(np.float32)
    y, idx = F.max_pool2d(tk.tensor(x), 3, 2, 1, 2, True, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, 1, 2, True,
                                              return_indices=True)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    assert idx.dtype == np.int64 and not idx.requires_grad
    y, idx = nn.MaxPool1d(2, return_indices=True)(tk.tensor(x[:, :, 0]))
    ty, tidx = tnn.MaxPool1d(2, return_indices=True)(torch.tensor(x[:, :, 0]))
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())


def test_reprs_follow_pytorch():
    assert repr(nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2, bias=False,
                          padding_mode="reflect")) == repr(
        tnn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2, bias=False,
                   padding_mode="reflect"))
    assert repr(nn.ConvTranspose2d(4, 6, 3, 2, 1, 1)) == repr(tnn.ConvTranspose2d(4, 6, 3, 2, 1, 1))
    assert repr(nn.Conv1d(2, 3, 5, stride=2)) == repr(tnn.Conv1d(2, 3, 5, stride=2))
    assert repr(nn.MaxPool2d(2)) == repr(tnn.MaxPool2d(2))


BAD = [
    (lambda: nn.Conv2d(1, 2, 0), ValueError, "Conv2d: kernel_size must be >= 1, got 0"),
    (lambda: nn.Conv2d(1, 2, -1), ValueError, "Conv2d: kernel_size must be >= 1, got -1"),
    (lambda: nn.Conv2d(1, 2, 3, stride=1.5), TypeError,
     "Conv2d: stride must be an int or a tuple of 2 ints, got 1.5"),
    (lambda: nn.Conv2d(1, 2, 3, stride=0), ValueError, "Conv2d: stride must be >= 1, got 0"),
    (lambda: nn.Conv2d(1, 2, 3, padding=-1), ValueError, "Conv2d: padding must be >= 0, got -1"),
    (lambda: nn.Conv2d(1, 2, 3, padding="full"), ValueError, "Conv2d: padding must be 'same'"),
    (lambda: nn.Conv2d(1, 2, 3, stride=2, padding="same"), ValueError,
     "Conv2d: stride must be 1 with padding='same'"),
    (lambda: nn.Conv2d(1, 2, 3, dilation=(1, 0)), ValueError,
     r"Conv2d: dilation must be >= 1, got \(1, 0\)"),
    (lambda: nn.Conv2d(3, 2, 3, groups=2), ValueError,
     "Conv2d: in_channels must be divisible by groups=2, got 3"),
    (lambda: nn.Conv2d(2, 3, 3, groups=2), ValueError,
     "Conv2d: out_channels must be divisible by groups=2, got 3"),
    (lambda: nn.Conv2d(2, 2, 3, groups=0), ValueError, "Conv2d: groups must be >= 1, got 0"),
    (lambda: nn.Conv2d(2, 2, 3, padding_mode="mirror"), ValueError,
     "Conv2d: padding_mode must be one of"),
    (lambda: nn.Conv1d(2, 2, (3, 3)), TypeError,
     r"Conv1d: kernel_size must be an int or a tuple of 1 int, got \(3, 3\)"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2), ValueError,
     r"ConvTranspose2d: output_padding must be smaller than stride \(2, 2\) or dilation"),
    (lambda: nn.MaxPool2d(3, padding=2), ValueError,
     r"MaxPool2d: padding must be at most half of kernel_size \(3, 3\), got 2"),
    (lambda: nn.MaxPool2d(0), ValueError, "MaxPool2d: kernel_size must be >= 1, got 0"),
    (lambda: nn.AvgPool2d(2, stride=0.5), TypeError, "AvgPool2d: stride must be an int"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError,
     "AvgPool2d: divisor_override must be >= 1, got 0"),
    (lambda: F.conv2d(tk.zeros(1, 3, 5, 5), tk.zeros(2, 3, 3, 3), stride=(1, 2, 3)), TypeError,
     r"conv2d: stride must be an int or a tuple of 2 ints, got \(1, 2, 3\)"),
    (lambda: F.max_pool2d(tk.zeros(1, 3, 5, 5), 2, dilation=0), ValueError,
     "max_pool2d: dilation must be >= 1, got 0"),
    (lambda: F.conv2d(tk.zeros(1, 3, 2, 2), tk.zeros(2, 3, 3, 3)), ValueError,
     "conv2d: input .* gives an empty output"),
    (lambda: nn.Conv2d(3, 2, 3)(tk.zeros(1, 2, 5, 5)), ValueError,
     r"Conv2d\(3, 2\): input of shape \(1, 2, 5, 5\), expected \(N, 3, H, W\)"),
]


@pytest.mark.parametrize("make,exc,message", BAD)
def test_bad_arguments_raise_one_clear_error(make, exc, message):
    with pytest.raises(exc, match=message):
        make()
