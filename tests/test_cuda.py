"""The accelerator paths on a CUDA GPU: the unfold/fold convolution in every precision and layout, an
AMP training step with its GradScaler, the deferred resampling, and the assignment's conv checks.

Every test here is marked `cuda` (`python -m pytest -m cuda` selects them) and runs on the device
that TEST_DEVICE names, by default `cuda`; without CUDA they skip. bench/gpu_check.py runs them on
the GPU, and its CPU mode sets TEST_DEVICE=cpu so that they also run, and cannot rot, on machines
without one (there autocast and --amp use bfloat16 and the GradScaler is off, as in training).
"""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

import custom_transforms
from harness import devices, engine, loaders
import student_code
import test_conv
from student_code import CustomConv2d, custom_conv2d
from test_custom_conv import CASES, assert_close_to_float64, column_bytes, count_chunks, grads, make_case

pytestmark = pytest.mark.cuda

# Largest error allowed, as a fraction of the reference's largest magnitude (unit roundoff 2^-24,
# 2^-11, 2^-8, with room for the sums of a convolution).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
# Pointwise, 3x3, SimpleNet's 7x7 stride 2, grouped, and asymmetric 'same' layers.
DEVICE_CASES = [CASES[0], CASES[2], CASES[4], CASES[8], CASES[11]]


@pytest.fixture(scope="module")
def device():
    device = torch.device(os.environ.get("TEST_DEVICE", "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA (TEST_DEVICE=cpu runs these tests on the CPU)")
    return device


def on(device, tensors, channels_last=False):
    """The tensors on `device`; 4-D ones in channels_last when asked."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return [t.to(device).contiguous(memory_format=memory_format) if t.dim() == 4 else t.to(device)
            for t in tensors]


def autocast_dtypes(device):
    # CUDA autocasts to fp16 (main.py --amp) or bf16; the CPU's autocast is bf16 in training.
    return (torch.float16, torch.bfloat16) if device.type == "cuda" else (torch.bfloat16,)


# ---------------------------------------------------------------------------------------------------
# The convolution
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("case", DEVICE_CASES, ids=str)
def test_conv_matches_conv2d_in_each_precision(device, case, dtype, channels_last):
    x, w, b, kwargs = make_case(case, batch=4, size=(12, 12))
    assert_close_to_float64(lambda *t: custom_conv2d(*t, **kwargs), lambda *t: F.conv2d(*t, **kwargs),
                            on(device, [x, w, b], channels_last), dtype, TOLERANCE[dtype])


@pytest.mark.parametrize("case", [CASES[4], CASES[8]], ids=str)
def test_conv_under_autocast_matches_conv2d(device, case):
    x, w, b, kwargs = make_case(case, batch=4, size=(12, 12), dtype=torch.float32)
    tensors = on(device, [x, w, b], channels_last=True)
    for dtype in autocast_dtypes(device):
        results = []
        for conv in (custom_conv2d, F.conv2d):
            with torch.autocast(device.type, dtype=dtype):
                results.append(grads(lambda *t: conv(*t, **kwargs), tensors))
        (out, got), (ref_out, expected) = results
        assert out.dtype == ref_out.dtype == dtype
        for actual, wanted in zip((out, *got), (ref_out, *expected)):
            assert actual.dtype == wanted.dtype  # gradients in the leaves' float32
            bound = 2 * TOLERANCE[dtype] * wanted.abs().max().item()
            torch.testing.assert_close(actual.float(), wanted.float(), atol=bound, rtol=0)


@pytest.mark.parametrize("case", [CASES[4], CASES[8]], ids=str)
def test_conv_chunks_the_batch_on_the_device(device, case, monkeypatch):
    # A budget of two samples: chunks of 2, 2, 1, whose weight-gradient products add up on the device.
    x, w, b, kwargs = make_case(case, batch=5, size=(12, 12), dtype=torch.float32)
    counts = count_chunks(monkeypatch, 2 * column_bytes(x, w, kwargs))
    assert_close_to_float64(lambda *t: custom_conv2d(*t, **kwargs), lambda *t: F.conv2d(*t, **kwargs),
                            on(device, [x, w, b]), torch.float32, TOLERANCE[torch.float32])
    assert counts == [3, 3]


@pytest.mark.parametrize("check", [check for _, _, check in test_conv.CHECKS], ids=lambda c: c.__name__)
def test_assignment_conv_checks_on_the_device(device, check):
    if device.type == "cpu" and check is test_conv.check_bprop:
        # Its full gradcheck takes seconds on a GPU but minutes on a busy 2-core CPU.
        pytest.skip("code/test_conv.py runs the full gradcheck on the CPU")
    assert check(device)


def test_simplenet_in_channels_last_with_either_conv(device):
    torch.manual_seed(0)
    reference = student_code.SimpleNet(conv_op=nn.Conv2d)
    custom = student_code.SimpleNet(conv_op=CustomConv2d)
    custom.load_state_dict(reference.state_dict())
    x = torch.randn(4, 3, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    outputs = [model.to(device, memory_format=torch.channels_last).eval()(x) for model in (reference, custom)]
    # cuDNN may run float32 convolutions in TF32 (10-bit mantissa), hence the 1% bound.
    bound = 1e-2 * outputs[0].abs().max().item()
    torch.testing.assert_close(outputs[1], outputs[0], atol=bound, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Training with --amp: autocast and the GradScaler
# ---------------------------------------------------------------------------------------------------


def sgd_update(model, images, target, amp):
    """The parameter change of one engine.train_step (SGD, lr 0.1, no momentum or decay), as main.py
    runs it with or without --amp; returns (update, output dtype, scaler)."""
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    amp_dtype, scaler = devices.amp_settings(amp, images.device)
    _, output = engine.train_step(model, images, target, nn.CrossEntropyLoss(), optimizer, scaler, amp_dtype)
    update = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    return update, output.dtype, scaler


@pytest.mark.parametrize("conv_op", [nn.Conv2d, CustomConv2d], ids=lambda c: c.__name__)
def test_amp_training_step_matches_float32(device, conv_op):
    torch.manual_seed(0)
    models = [student_code.SimpleNet(conv_op=conv_op, num_classes=10) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    images = torch.randn(4, 3, 32, 32).to(device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (4,)).to(device)
    models = [model.to(device, memory_format=torch.channels_last) for model in models]

    reference, _, _ = sgd_update(models[0], images, target, amp=False)
    update, output_dtype, scaler = sgd_update(models[1], images, target, amp=True)
    assert output_dtype == (torch.float16 if device.type == "cuda" else torch.bfloat16)
    assert scaler.is_enabled() == (device.type == "cuda")
    if scaler.is_enabled():
        # The scale only drops when a step found inf/NaN gradients and was skipped.
        assert scaler.get_scale() >= 2.0**16
    assert torch.isfinite(update).all()
    # The unscaled fp16 (or bf16) update is the float32 one up to rounding; a missing unscale would
    # make it 65536 times larger, a skipped step zero.
    relative_error = ((update - reference).norm() / reference.norm()).item()
    assert relative_error < 0.1, relative_error


def test_peak_memory_reads_the_device(device):
    devices.reset_peak_memory(device)
    block = torch.ones(16 * 2**20, device=device)  # 64 MiB
    assert devices.peak_memory_mib(device) >= 64
    del block


# ---------------------------------------------------------------------------------------------------
# The deferred resampling (what the train loader hands over) on the device
# ---------------------------------------------------------------------------------------------------


def deferred_batch(size=8, seed=0):
    """A collated batch of DeferResample outputs: random smooth pictures through the train pipeline."""
    torch.manual_seed(seed)  # the augmentation draws from torch's generator
    rng = np.random.default_rng(seed)
    transforms = custom_transforms.get_train_transforms(defer=True)
    items = []
    for _ in range(size):
        small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        items.append(transforms(Image.fromarray(small).resize((128, 128), Image.BILINEAR)))
    return default_collate(items)


def test_resample_batch_on_the_device_equals_the_cpu(device):
    batch = deferred_batch()
    expected = custom_transforms.resample_batch(batch)
    images, target = loaders.finish_deferred_batch(batch, torch.arange(8), device, channels_last=True)
    assert images.device.type == device.type and target.device.type == device.type
    assert images.is_contiguous(memory_format=torch.channels_last)
    difference = (images.cpu() - expected).abs()
    # Bilinear and bicubic differ by rounding only; a nearest-neighbour sample exactly between two
    # pixels may round either way on either device, so a few isolated values may differ more.
    assert difference.median().item() < 1e-5
    assert (difference > 1e-3).float().mean().item() < 1e-3
