"""The unfold/fold convolution against PyTorch's F.conv2d and nn.Conv2d."""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from student_code import CustomConv2d, CustomConv2DFunction, custom_conv2d

# (in_channels, out_channels, kernel, stride, padding, dilation, groups)
CASES = [
    (3, 4, 1, 1, 0, 1, 1),  # pointwise fast path
    (3, 4, 1, 2, 1, 1, 1),  # 1x1 that still needs unfold (stride, padding)
    (3, 4, 3, 1, 1, 1, 1),
    (3, 4, 5, 2, 2, 1, 1),
    (3, 4, 7, 2, 3, 1, 1),  # SimpleNet's first layer
    (2, 3, (3, 5), (1, 2), (1, 2), 1, 1),  # rectangular kernel, pair stride and padding
    (2, 3, 3, 1, 2, 2, 1),  # dilation
    (2, 2, 3, (2, 1), 0, (1, 2), 1),
    (4, 6, 3, 1, 1, 1, 2),  # groups
    (4, 4, 3, 2, 1, 1, 4),  # depthwise
    (4, 8, 3, 1, "same", 1, 4),
    (3, 4, 4, 1, "same", 1, 1),  # even kernel: asymmetric 'same' padding
    (3, 4, (2, 3), 1, "same", (2, 1), 1),
    (3, 4, 3, 1, "valid", 1, 1),
]


def make_case(case, batch=2, size=(9, 10), dtype=torch.float64, bias=True, seed=0):
    c_in, c_out, kernel, stride, padding, dilation, groups = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c_in, *size, dtype=dtype, generator=g)
    w = torch.randn(c_out, c_in // groups, kh, kw, dtype=dtype, generator=g)
    b = torch.randn(c_out, dtype=dtype, generator=g) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def grads(fn, tensors, grad_out_seed=1):
    """fn's output and the gradients of <output, g> for each tensor, g ~ N(0, 1) drawn from the seed
    (the same values whatever the output's dtype and device)."""
    tensors = [t.detach().requires_grad_() for t in tensors if t is not None]
    out = fn(*tensors)
    generator = torch.Generator().manual_seed(grad_out_seed)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=generator).to(out.device, out.dtype)
    return out, torch.autograd.grad(out, tensors, grad_out)


def assert_matches_conv2d(tensors, kwargs):
    """custom_conv2d's output and gradients equal F.conv2d's on the same tensors."""
    out, custom_grads = grads(lambda *t: custom_conv2d(*t, **kwargs), tensors)
    ref_out, ref_grads = grads(lambda *t: F.conv2d(*t, **kwargs), tensors)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out)
    for got, expected in zip(custom_grads, ref_grads):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_forward_and_gradients_match_conv2d(case, bias):
    x, w, b, kwargs = make_case(case, bias=bias)
    assert_matches_conv2d([x, w, b] if bias else [x, w], kwargs)


# F.conv2d's own OpInfo samples (sample_inputs_conv2d in torch/testing/_internal/common_methods_invocations.py,
# which needs the expecttest package to import): (input, weight, bias or None, kwargs), each run batched and
# unbatched as there.
OPINFO_SAMPLES = [
    ((1, 3, 4, 4), (3, 3, 3, 3), (3,), dict(stride=(2, 2), padding=2, groups=1)),
    ((2, 4, 8, 8), (2, 2, 3, 3), (2,), dict(stride=(3, 2), padding=(2, 1), groups=2, dilation=(4, 4))),
    ((1, 4, 5, 5), (1, 4, 2, 3), (1,), dict(stride=2, padding=1, groups=1, dilation=(2, 3))),
    ((1, 2, 4, 3), (4, 2, 3, 4), None, dict(stride=2, padding=1, groups=1)),
    ((1, 4, 5, 5), (1, 4, 2, 3), (1,), dict(stride=2, padding="valid")),
    ((1, 4, 5, 5), (1, 4, 2, 3), (1,), dict(stride=1, padding="same", dilation=3)),
    ((2, 4, 6, 6), (4, 1, 3, 3), (4,), dict(groups=4)),
    ((2, 4, 6, 6), (8, 1, 3, 3), (8,), dict(groups=4)),
    ((2, 4, 6, 6), (8, 1, 3, 3), None, dict(groups=4)),
    ((2, 4, 6, 6), (4, 1, 3, 3), (4,), dict(groups=4, stride=(3, 2))),
    ((2, 4, 6, 6), (4, 1, 3, 3), (4,), dict(groups=4, padding=(1, 1))),
    ((2, 4, 5, 5), (4, 1, 2, 2), (4,), dict(groups=4, dilation=(2, 2))),
    ((2, 4, 6, 5), (6, 2, 3, 2), (6,), dict(groups=2)),
    ((1, 4, 5, 5), (3, 4, 3, 3), None, {}),
]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("x_shape,w_shape,b_shape,kwargs", OPINFO_SAMPLES, ids=str)
def test_conv2d_opinfo_samples_match(x_shape, w_shape, b_shape, kwargs, batched):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape if batched else x_shape[1:], dtype=torch.float64, generator=g)
    w = torch.randn(w_shape, dtype=torch.float64, generator=g)
    b = None if b_shape is None else torch.randn(b_shape, dtype=torch.float64, generator=g)
    assert_matches_conv2d([x, w, b], kwargs)


@pytest.mark.parametrize("case", [CASES[2], CASES[5], CASES[6], CASES[8], CASES[11]], ids=str)
def test_gradcheck(case):
    x, w, b, kwargs = make_case(case, batch=2, size=(6, 7))
    inputs = tuple(t.requires_grad_() for t in (x, w, b))
    # fast_mode checks random projections of the Jacobian: the same verdict for a wrong gradient at a
    # fraction of the cost. code/test_conv.py runs the assignment's full gradcheck.
    assert torch.autograd.gradcheck(
        lambda *t: custom_conv2d(*t, **kwargs), inputs, eps=1e-6, atol=1e-5, fast_mode=True
    )


def column_bytes(x, w, kwargs, dtype=None):
    """Bytes of one sample's unfolded columns (C*kh*kw, Ho*Wo) in `dtype` (default x's)."""
    ho, wo = F.conv2d(x, w, **kwargs).shape[2:]
    return x.shape[1] * w.shape[2] * w.shape[3] * ho * wo * (dtype or x.dtype).itemsize


def count_chunks(monkeypatch, chunk_bytes=None):
    """Optionally set every device's chunk budget to `chunk_bytes`; returns the list that records how
    many chunks each forward and backward pass cut the batch into."""
    if chunk_bytes is not None:
        for device_kind in student_code.CHUNK_BYTES:
            monkeypatch.setitem(student_code.CHUNK_BYTES, device_kind, chunk_bytes)
    counts = []
    batch_chunks = student_code._Geometry.batch_chunks

    def counting(self, *args):
        chunks = batch_chunks(self, *args)
        counts.append(len(chunks))
        return chunks

    monkeypatch.setattr(student_code._Geometry, "batch_chunks", counting)
    return counts


def assert_close_to_float64(fn, reference, tensors, dtype, tolerance):
    """fn on `tensors` cast to `dtype` gives the output and gradients of `reference` in float64, within
    `tolerance` times each tensor's largest magnitude (a scale-free bound for low precision)."""
    grad_seed = 1
    out, got = grads(fn, [t.to(dtype) for t in tensors], grad_seed)
    ref_out, expected = grads(reference, [t.double() for t in tensors], grad_seed)
    assert out.dtype == dtype
    for actual, wanted in zip((out, *got), (ref_out, *expected)):
        bound = tolerance * wanted.abs().max().item()
        torch.testing.assert_close(actual.double(), wanted.to(actual.device), atol=bound, rtol=0)


# Strided, grouped, depthwise (strided), asymmetric 'same' and pointwise layers.
CHUNKING_CASES = [CASES[3], CASES[8], CASES[9], CASES[11], CASES[0]]


@pytest.mark.parametrize("samples_per_chunk,chunks", [(1, 5), (2, 3), (5, 1)])
@pytest.mark.parametrize("case", CHUNKING_CASES, ids=str)
def test_matches_conv2d_in_any_chunking(samples_per_chunk, chunks, case, monkeypatch):
    # One sample per chunk: 5 chunks; the weight gradient sums one product per chunk.
    x, w, b, kwargs = make_case(case, batch=5)
    counts = count_chunks(monkeypatch, samples_per_chunk * column_bytes(x, w, kwargs))
    assert_matches_conv2d([x, w, b], kwargs)
    assert counts == [chunks, chunks]  # forward and backward chunk the batch alike


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=str)
def test_chunked_in_low_precision(dtype, tolerance, monkeypatch):
    x, w, b, kwargs = make_case(CASES[8], batch=4, size=(12, 12))
    count_chunks(monkeypatch, 2 * column_bytes(x, w, kwargs, dtype))
    assert_close_to_float64(lambda *t: custom_conv2d(*t, **kwargs), lambda *t: F.conv2d(*t, **kwargs),
                            [x, w, b], dtype, tolerance)


def test_the_chunk_budget_follows_the_device():
    # SimpleNet's 3x3 64-channel layer at 32 x 32: 576 x 1024 float32 columns, 2.25 MiB a sample.
    sample_bytes = 64 * 9 * 32 * 32 * 4
    for device, budget in (("cpu", student_code.CHUNK_BYTES["cpu"]),
                           ("meta", student_code.CHUNK_BYTES["accelerator"])):  # any device but the CPU
        x, w = torch.empty(64, 64, 32, 32, device=device), torch.empty(64, 64, 3, 3, device=device)
        geometry = student_code._Geometry(x, w, None, 1, 1, 1, 1)
        assert geometry.chunk_size == max(1, budget // sample_bytes)


def test_unbatched_input():
    x, w, b, kwargs = make_case(CASES[4])
    out = custom_conv2d(x[0], w, b, **kwargs)
    torch.testing.assert_close(out, F.conv2d(x[0], w, b, **kwargs))
    assert out.dim() == 3


@pytest.mark.parametrize("layout", ["channels_last", "channels_last_weight", "non_contiguous"])
def test_memory_layouts(layout):
    x, w, b, kwargs = make_case(CASES[4], size=(12, 12))
    if layout.startswith("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
        assert not x.is_contiguous()
    if layout == "channels_last_weight":  # as model.to(memory_format=torch.channels_last) leaves it
        w = w.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        assert not w.is_contiguous()
    if layout == "non_contiguous":
        x = x[:, :, ::2, 1::2]  # a strided view: (2, 3, 6, 6)
    assert_matches_conv2d([x, w, b], kwargs)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_channels_last_input_matches_conv2d(case):
    # A channels-last input and weight (as model.to(memory_format=torch.channels_last) leaves them),
    # with a channels-last output gradient (as an NHWC network's next layer sends it): computed in
    # NCHW, the values and every gradient are F.conv2d's.
    x, w, b, kwargs = make_case(case, size=(12, 12))
    x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
    assert_matches_conv2d([x, w, b], kwargs)
    x, w = (t.detach().requires_grad_() for t in (x, w))
    out = custom_conv2d(x, w, b, **kwargs)
    ref = F.conv2d(x, w, b, **kwargs)
    grad_out = torch.randn(out.shape, dtype=out.dtype).contiguous(memory_format=torch.channels_last)
    for got, expected in zip(torch.autograd.grad(out, (x, w), grad_out), torch.autograd.grad(ref, (x, w), grad_out)):
        torch.testing.assert_close(got, expected)


def test_an_empty_batch_has_empty_gradients():
    for memory_format in (torch.contiguous_format, torch.channels_last):
        for kernel in (1, 3):
            x = torch.randn(0, 4, 5, 5).contiguous(memory_format=memory_format).requires_grad_()
            w = torch.randn(3, 4, kernel, kernel, requires_grad=True)
            custom_conv2d(x, w).sum().backward()
            assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[11]], ids=str)
def test_channels_last_in_chunks(case, monkeypatch):
    # Pointwise, SimpleNet's 7x7 and an asymmetric 'same' layer, one sample per chunk, in NHWC.
    x, w, b, kwargs = make_case(case, batch=3)
    x = x.contiguous(memory_format=torch.channels_last)
    counts = count_chunks(monkeypatch, column_bytes(x, w, kwargs))
    assert_matches_conv2d([x, w, b], kwargs)
    assert counts == [3, 3]


def test_float32_and_positional_call_as_in_the_assignment():
    x, w, b, _ = make_case(CASES[4], dtype=torch.float32)
    # The original test calls CustomConv2DFunction.apply(input, weight, bias, stride, padding).
    out = CustomConv2DFunction.apply(x, w, b, 2, 3)
    torch.testing.assert_close(out, F.conv2d(x, w, b, 2, 3), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(custom_conv2d(x, w, b, 2, 3), F.conv2d(x, w, b, 2, 3), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    x, w, b, kwargs = make_case(CASES[2], dtype=torch.float32)
    expected = F.conv2d(x, w, b, **kwargs)
    out = custom_conv2d(x.to(dtype), w.to(dtype), b.to(dtype), **kwargs)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=0.25, rtol=0.05)


def test_autocast_runs_in_the_autocast_dtype():
    x, w, b, kwargs = make_case(CASES[2], dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = custom_conv2d(x, w, b, **kwargs)
        ref = F.conv2d(x, w, b, **kwargs)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=0.25, rtol=0.05)


def test_autocast_casts_mixed_dtypes_as_conv2d_does():
    # Inside an autocast network a layer gets the previous layer's bf16 output and its float32 weight.
    x, w, b, kwargs = make_case(CASES[2], dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = custom_conv2d(x.bfloat16(), w, b, **kwargs)
        ref = F.conv2d(x.bfloat16(), w, b, **kwargs)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=0.25, rtol=0.05)


def test_simplenet_trains_under_autocast_with_either_conv():
    torch.manual_seed(0)
    reference = student_code.SimpleNet(conv_op=nn.Conv2d)
    custom = student_code.SimpleNet(conv_op=CustomConv2d)
    custom.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    losses = []
    for model in (reference, custom):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().logsumexp(dim=1).mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], atol=0.05, rtol=0.02)
    for (name, p), q in zip(reference.named_parameters(), custom.parameters()):
        assert q.grad is not None and q.grad.dtype == torch.float32, name
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(q.grad, p.grad, atol=0.05 * scale, rtol=0, msg=name)


def test_output_is_fresh_so_inplace_relu_works():
    x, w, b, kwargs = make_case(CASES[2], dtype=torch.float32)
    w.requires_grad_()
    out = custom_conv2d(x, w, b, **kwargs)
    assert out._base is None
    nn.ReLU(inplace=True)(out).sum().backward()
    ref_w = w.detach().clone().requires_grad_()
    F.relu(F.conv2d(x, ref_w, b, **kwargs)).sum().backward()
    torch.testing.assert_close(w.grad, ref_w.grad, atol=1e-4, rtol=1e-4)


def test_backward_computes_only_requested_gradients(monkeypatch):
    # A first layer's input needs no gradient: fold (only used for the input gradient) never runs.
    calls = []
    real_fold = torch.nn.functional.fold
    monkeypatch.setattr(torch.nn.functional, "fold", lambda *a, **k: calls.append(1) or real_fold(*a, **k))
    x, w, b, kwargs = make_case(CASES[4], dtype=torch.float32)
    w.requires_grad_()
    custom_conv2d(x, w, b, **kwargs).sum().backward()
    assert w.grad is not None and not calls
    x.requires_grad_()
    custom_conv2d(x, w, b, **kwargs).sum().backward()
    assert calls and x.grad is not None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_columns_are_those_of_f_unfold(case):
    # Part I builds its columns from Tensor.unfold's window views (faster on the CPU than F.unfold's
    # im2col); they must be F.unfold's, row for row: (N, G, K, L) with K = C/G * kh * kw, channel-major.
    x, w, b, kwargs = make_case(case)
    geometry = student_code._Geometry(x, w, b, **kwargs)
    padded = F.pad(x, geometry.pads)
    expected = F.unfold(padded, w.shape[2:], dilation=geometry.dilation, stride=geometry.stride)
    torch.testing.assert_close(geometry.columns(x), expected.view(x.shape[0], kwargs["groups"], -1, expected.shape[-1]),
                               rtol=0, atol=0)


def test_no_convolution_kernels_inside_the_op(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a convolution kernel was called")

    for name in ("conv2d", "conv_transpose2d", "convolution"):
        monkeypatch.setattr(torch.nn.functional, name, forbidden, raising=False)
        monkeypatch.setattr(torch, name, forbidden, raising=False)
    x, w, b, kwargs = make_case(CASES[4])
    x.requires_grad_()
    w.requires_grad_()
    custom_conv2d(x, w, b, **kwargs).sum().backward()
    assert x.grad is not None and w.grad is not None


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=4, out_channels=8, kernel_size=(3, 5), stride=2, padding=(1, 2), bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=3, dilation=2, groups=2, padding="same"),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
], ids=lambda k: ",".join(f"{a}={v}" for a, v in k.items()))
def test_module_is_a_drop_in_for_nn_conv2d(kwargs):
    torch.manual_seed(0)
    reference = nn.Conv2d(**kwargs)
    torch.manual_seed(0)
    custom = CustomConv2d(**kwargs)
    # The same default init from the same seed, and the same parameter names and shapes.
    assert reference.state_dict().keys() == custom.state_dict().keys()
    for (name, p), (_, q) in zip(reference.named_parameters(), custom.named_parameters()):
        assert p.shape == q.shape and torch.equal(p, q), name
    # One state_dict loads into either, and outputs match.
    other = nn.Conv2d(**kwargs)
    custom.load_state_dict(other.state_dict())
    x = torch.randn(2, kwargs["in_channels"], 11, 12)
    torch.testing.assert_close(custom(x), other(x), atol=1e-5, rtol=1e-5)
    reference.load_state_dict(custom.state_dict())
    torch.testing.assert_close(reference(x), custom(x), atol=1e-5, rtol=1e-5)


ERROR_CASES = [
    # (input shape, weight shape, kwargs, error type, message pattern)
    ((2, 4, 8, 8), (6, 3, 3, 3), {}, ValueError, "input has 4 channels"),
    ((2, 4, 8, 8), (6, 2, 3, 3), dict(groups=3), ValueError, "groups must be a positive int dividing both in"),
    ((2, 4, 8, 8), (5, 2, 3, 3), dict(groups=2), ValueError, "groups must be a positive int dividing both in"),
    ((2, 4, 8, 8), (6, 4, 3, 3), dict(groups=0), ValueError, "groups must be a positive int"),
    ((2, 3, 4, 4), (6, 3, 7, 7), {}, ValueError, "larger than the padded input"),
    ((2, 3, 4, 4), (6, 3, 3, 3), dict(dilation=3), ValueError, "larger than the padded input"),
    ((2, 3, 8, 8), (6, 3, 3, 3), dict(stride=0), ValueError, "stride must be at least 1"),
    ((2, 3, 8, 8), (6, 3, 3, 3), dict(padding=-1), ValueError, "padding must be at least 0"),
    ((2, 3, 8, 8), (6, 3, 3, 3), dict(padding="full"), ValueError, "padding must be 'valid', 'same'"),
    ((2, 3, 8, 8), (6, 3, 3, 3), dict(padding="same", stride=2), ValueError, "padding='same' needs stride 1"),
    ((2, 3, 8, 8), (6, 3, 3, 3), dict(dilation=0), ValueError, "dilation must be at least 1"),
    ((2, 3, 8, 8), (6, 3, 3, 3), dict(stride=1.5), TypeError, "stride must be an int or a pair"),
    ((8, 8), (6, 3, 3, 3), {}, ValueError, "input must be 3-D"),
    ((1, 2, 3, 8, 8), (6, 3, 3, 3), {}, ValueError, "input must be 3-D"),
    ((2, 3, 8, 8), (6, 3, 3), {}, ValueError, "weight must be 4-D"),
    ((2, 3, 8, 8), (6, 3, 0, 3), dict(padding=1), ValueError, "none 0"),  # F.conv2d refuses an empty kernel
    ((2, 3, 8, 8), (0, 3, 3, 3), {}, ValueError, "none 0"),
]


@pytest.mark.parametrize("x_shape,w_shape,kwargs,error,match", ERROR_CASES, ids=lambda v: str(v))
def test_bad_arguments_raise_clear_errors(x_shape, w_shape, kwargs, error, match):
    with pytest.raises(error, match=match):
        custom_conv2d(torch.randn(*x_shape), torch.randn(*w_shape), None, **kwargs)


def test_mismatched_dtypes_and_bias():
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with pytest.raises(TypeError, match="dtype"):
        custom_conv2d(x.double(), w)
    with pytest.raises(ValueError, match="bias must have shape"):
        custom_conv2d(x, w, torch.randn(5))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        custom_conv2d(x.numpy(), w)


def test_simplenet_outputs_match_with_either_conv():
    torch.manual_seed(0)
    reference = student_code.SimpleNet(conv_op=nn.Conv2d).eval()
    custom = student_code.SimpleNet(conv_op=CustomConv2d).eval()
    custom.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(custom(x), reference(x), atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in reference.parameters()) == 1_368_676


# The grid above covers each feature; this sweeps their combinations on one small input.
@pytest.mark.parametrize("kernel,stride,padding,dilation", list(itertools.product(
    [1, 2, 3], [1, 2], [0, 1, "same"], [1, 2]
)))
def test_combinations_forward(kernel, stride, padding, dilation):
    if padding == "same" and stride > 1:
        pytest.skip("'same' needs stride 1")
    x, w, b, kwargs = make_case((2, 3, kernel, stride, padding, dilation, 1), size=(7, 8))
    torch.testing.assert_close(custom_conv2d(x, w, b, **kwargs), F.conv2d(x, w, b, **kwargs))
