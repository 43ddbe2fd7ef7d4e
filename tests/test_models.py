"""Tests of the networks in student_code's Part II and harness.networks: shapes, gradients, sizes, init, conv_op.

Every network is checked at the training (128 px) and validation (160 px) sizes with nn.Conv2d.
Gradients and the comparison with CustomConv2d run at the smallest supported size, 64 px, batch 2,
and the tests share few input shapes: on a CPU the first pass at a new conv shape is the slow one
(oneDNN prepares its kernels per shape).
Run: python -m pytest tests/test_models.py -q
"""
import math
import sys
import types

import pytest
import torch
import torch.nn as nn
import torchvision

from harness import models
import student_code
from harness.models import MAX_MODEL_BYTES, model_size_bytes
from student_code import CustomConv2d, SimpleNet
from harness.cli import UserError
from harness.networks import ResidualBlock

ARCH_NAMES = models.arch_names()
RESNET18_WEIGHTS_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1


def build(name, conv_op=nn.Conv2d, num_classes=100):
    """A fresh network, seeded; resnet18 never looks at the torch cache, so tests don't depend on it."""
    torch.manual_seed(0)
    return models.build_model(name, num_classes, use_custom_conv=conv_op is CustomConv2d)[1]


def calibrate_norms_(model, images):
    """Give every batch norm the running statistics of `images` and a random affine transform.

    With the init's running statistics (mean 0, var 1) an eval-mode network is unnormalised, and
    the zero-initialised last gammas of residual blocks hide every residual branch; this makes every
    layer count in the outputs and gradients the tests compare.
    """
    generator = torch.Generator().manual_seed(1)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
        norm.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(images)
        for norm in norms:
            norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) + 0.5)
            norm.bias.copy_(torch.rand(norm.bias.shape, generator=generator) * 0.2 - 0.1)
            norm.momentum = 0.1
    return model.eval()


def test_archs_are_the_agreed_names():
    team = {"customnet2", "customnet", "resnet", "googlenet"}
    ours = {"customnet2_bn", "customnet_res", "resnet18_half", "googlenet_half"}
    assert set(ARCH_NAMES) == {"simplenet", "resnet18"} | team | ours
    assert student_code.default_model is SimpleNet


def test_simplenet_has_the_starters_parameter_count():
    assert sum(p.numel() for p in SimpleNet().parameters()) == 1_368_676


def test_customnet2_bn_is_simplenet_with_batch_norm_and_channel_dropout():
    simple, custom2 = SimpleNet(), build("customnet2_bn")
    simple_convs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride)
                    for m in simple.modules() if isinstance(m, nn.Conv2d)]
    custom2_convs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride)
                     for m in custom2.modules() if isinstance(m, nn.Conv2d)]
    assert custom2_convs == simple_convs
    norms = [m for m in custom2.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [n.num_features for n in norms] == [c[1] for c in simple_convs]
    dropouts = [m for m in custom2.modules() if isinstance(m, nn.Dropout2d)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.5
    # Conv biases (made redundant by batch norm's beta) traded for gamma and beta per channel.
    conv_biases = sum(c[1] for c in simple_convs)
    expected = 1_368_676 - conv_biases + 2 * conv_biases
    assert sum(p.numel() for p in custom2.parameters()) == expected


@pytest.mark.parametrize("name", ARCH_NAMES)
@pytest.mark.parametrize("size", [128, 160])
def test_logits_shape_and_finite(name, size):
    model = build(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 100)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_every_parameter_and_the_input_get_a_gradient(name):
    # Only what holds on every CPU is asserted, not one CPU's rounding:
    # - A conv bias that feeds a batch norm in train mode has a zero gradient in exact arithmetic (the
    #   norm subtracts each channel's batch mean, so a constant added per channel changes nothing). The
    #   computed value is rounding noise, ~1e-8 on one CPU and exactly 0 on another (the team's
    #   GoogLeNet has 64 such biases, CustomNet 8; a4.b3.0.bias came out 0 on AMD EPYC and on Intel
    #   AVX-512). Those biases must get a finite gradient of their shape, not a nonzero one.
    # - Every other gradient is nonzero unless a ReLU is dead for the whole batch. In train mode a
    #   norm's output has mean beta over the batch in each channel, so with every beta > 0 some
    #   position passes the ReLU after it: no channel behind a norm is dead, the 1-channel convs of
    #   GoogLeNet's "5x5" branches included. The other ReLUs (SimpleNet's and CustomNet-2's, ResNet's
    #   after a residual sum) act on 16 or more channels: one parameter's gradient would need them all dead.
    model = build(name, num_classes=10)  # the demo dataset's 10 classes
    calibrate_norms_(model, torch.randn(2, 3, 64, 64)).train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.bias.abs_().add_(0.01)  # beta in [0.01, 0.11]
    conv_outputs, cancelled = {}, set()  # {id(output): (output, conv)}; {id(bias)} of biases a norm cancels

    def remember_output(conv, args, output):
        conv_outputs[id(output)] = (output, conv)  # kept alive, so the id cannot be reused

    def note_cancelled_bias(norm, args):
        output, conv = conv_outputs.get(id(args[0]), (None, None))
        if output is args[0] and conv.bias is not None:
            cancelled.add(id(conv.bias))

    hooks = [m.register_forward_hook(remember_output) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [norm.register_forward_pre_hook(note_cancelled_bias) for norm in norms]
    images = torch.randn(2, 3, 64, 64, requires_grad=True)
    logits = model(images)
    for hook in hooks:
        hook.remove()
    conv_outputs.clear()
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([3, 7])).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, param_name
        assert torch.isfinite(param.grad).all(), param_name
        if id(param) not in cancelled:
            assert param.grad.abs().sum() > 0, param_name
    # Saliency maps need the input's gradient.
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_serialized_size(name):
    model = build(name)
    num_params = sum(p.numel() for p in model.parameters())
    num_buffers = sum(b.numel() for b in model.buffers())
    size = model_size_bytes(model)
    # float32 tensors (int64 BN counters aside) plus a little pickle bookkeeping.
    assert 4 * (num_params + num_buffers) < size < 4 * (num_params + num_buffers) + 200_000
    if name == "resnet18":
        # torchvision's unchanged resnet18: 11.2 M parameters cannot fit; a baseline, not an entry.
        assert size > MAX_MODEL_BYTES
    else:
        assert size < MAX_MODEL_BYTES


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_custom_conv_matches_nn_conv_with_one_state_dict(name):
    # float64, as micrograd checks against PyTorch: in float32 the two convs' rounding differs by
    # ~1e-7, enough to flip a near-tie of a max pool and send an input gradient elsewhere.
    reference = calibrate_norms_(build(name).double(), torch.randn(2, 3, 64, 64, dtype=torch.float64))
    custom = build(name, conv_op=CustomConv2d).double()
    custom.load_state_dict(reference.state_dict())  # strict: same keys and shapes
    custom.eval()
    convs = [m for m in reference.modules() if isinstance(m, nn.Conv2d)]
    custom_convs = [m for m in custom.modules() if isinstance(m, nn.Conv2d)]
    assert len(custom_convs) == len(convs)
    assert all(type(m) is CustomConv2d for m in custom_convs)
    # Only the input's gradient is compared (saliency maps use it); the custom conv's weight
    # gradients are Part I's tests', and skipping them halves the backward pass.
    reference.requires_grad_(False)
    custom.requires_grad_(False)

    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref_input = images.clone().requires_grad_()
    custom_input = images.clone().requires_grad_()
    ref_logits, custom_logits = reference(ref_input), custom(custom_input)
    ref_logits.sum().backward()
    custom_logits.sum().backward()
    torch.testing.assert_close(custom_logits, ref_logits, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(custom_input.grad, ref_input.grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_init_is_kaiming_normal_fan_out(name):
    model = build(name)
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            expected_std = math.sqrt(2.0 / fan_out)
            std = module.weight.std().item()
            # The sample std of n normal draws has a relative spread of about 1/sqrt(2n): 10% covers
            # large layers, 4 spreads the team's GoogLeNet's tiny ones (48 weights in a3.b1.0).
            tolerance = max(0.1, 4 / math.sqrt(2 * module.weight.numel()))
            assert abs(std - expected_std) < tolerance * expected_std, module_name
            assert module.bias is None or not module.bias.any(), module_name
        elif isinstance(module, nn.Linear):
            assert abs(module.weight.std().item() - 0.01) < 0.001, module_name
            assert not module.bias.any(), module_name


@pytest.mark.parametrize("name", ["customnet_res", "resnet18_half", "resnet18"])
def test_residual_blocks_start_as_the_identity(name):
    model = build(name)
    blocks = [m for m in model.modules()
              if isinstance(m, (ResidualBlock, torchvision.models.resnet.BasicBlock))]
    assert len(blocks) == {"customnet_res": 4, "resnet18_half": 8, "resnet18": 8}[name]
    for block in blocks:
        assert not block.bn2.weight.any()
        assert block.bn1.weight.eq(1).all()


def test_custom_conv_network_reports_wrong_channels():
    model = build("customnet2", conv_op=CustomConv2d).eval()
    with pytest.raises(ValueError, match="input has 1 channels"):
        model(torch.randn(1, 1, 64, 64))


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """A private torch hub directory, so the tests never see (or write) the user's cache."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    return tmp_path


def test_resnet18_without_cached_weights_says_so(hub_dir, capsys):
    model = models.resnet18(num_classes=10)
    assert "no ImageNet weights" in capsys.readouterr().out
    assert model.fc.out_features == 10
    assert not list(hub_dir.iterdir())  # nothing downloaded


def test_resnet18_loads_cached_weights_into_the_custom_conv(hub_dir, capsys):
    imagenet_like = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        imagenet_like.conv1.weight.fill_(0.25)
        imagenet_like.layer4[1].conv2.weight.fill_(-0.5)
    (hub_dir / "checkpoints").mkdir()
    torch.save(imagenet_like.state_dict(), hub_dir / "checkpoints" / RESNET18_WEIGHTS_FILE)

    model = models.resnet18(conv_op=CustomConv2d, num_classes=100)
    assert "ImageNet weights loaded" in capsys.readouterr().out
    assert type(model.conv1) is CustomConv2d and type(model.layer4[1].conv2) is CustomConv2d
    assert model.conv1.weight.eq(0.25).all()
    assert model.layer4[1].conv2.weight.eq(-0.5).all()
    assert model.fc.weight.shape == (100, 512)  # a new head, not ImageNet's 1000 classes


def test_resnet18_unreadable_cached_weights_is_a_user_error(hub_dir):
    (hub_dir / "checkpoints").mkdir()
    (hub_dir / "checkpoints" / RESNET18_WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read the ImageNet weights .*resnet18-f37072fd.pth"):
        models.resnet18()


def test_a_network_written_for_nchw_is_caught_before_it_runs_in_nhwc():
    class FlattensWithView(nn.Module):  # as many 2019 networks end: fine in NCHW, an error in NHWC
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4)
            self.fc = nn.Linear(4 * 32 * 32, 10)

        def forward(self, x):
            x = self.conv(x)
            return self.fc(x.view(x.shape[0], -1))

    failure = models.channels_last_failure(FlattensWithView())
    assert failure.startswith("FlattensWithView fails in NHWC (") and "view size is not compatible" in failure
    # The run's note is the harness's choice, said as such: no exception, no line of the student's file.
    said = []
    assert models.choose_channels_last(None, torch.device("cpu"), FlattensWithView(), say=said.append) is False
    (note,) = said
    assert note.startswith("note: FlattensWithView runs in NCHW, the memory layout its code is written for;")
    assert "Error" not in note and ".py" not in note
    model = student_code.SimpleNet(conv_op=student_code.CustomConv2d)
    assert models.channels_last_failure(model) is None
    assert all(p.is_contiguous() for p in model.parameters())  # the probe ran on a copy


def test_our_designs_build_from_the_harness_whatever_the_students_file_defines(monkeypatch):
    # A student's file with the 2019 interface only (no CustomNet2BN & co.): --arch still builds our
    # designs, from harness.networks, and --use-custom-conv gives them the student's CustomConv2d.
    bare = types.ModuleType("student_code")
    bare.CustomConv2d, bare.SimpleNet, bare.default_model = CustomConv2d, SimpleNet, SimpleNet
    monkeypatch.setitem(sys.modules, "student_code", bare)
    for arch in models.NETWORK_ARCHS:
        name, model = models.build_model(arch, 10, use_custom_conv=True)
        assert name == arch and type(model).__name__ == models.ARCHS[arch]
        assert type(model).__module__ == "harness.networks"
        assert {type(m) for m in model.modules() if isinstance(m, nn.Conv2d)} == {CustomConv2d}
    assert models.candidate_archs() == ["simplenet", *models.NETWORK_ARCHS, "resnet18"]
