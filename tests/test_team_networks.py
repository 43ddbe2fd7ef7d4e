"""The team's four networks (--arch customnet2, customnet, resnet, googlenet) against the facts of
../shared/team/README.md: parameter counts, every state-dict name and shape (tables written out here
from the README, not from the code), feature-map and output shapes, CustomConv2d against nn.Conv2d,
and the team's trained ResNet checkpoint on real val images (skipped when ../shared is absent).

Run: python -m pytest tests/test_team_networks.py -q --durations=5
"""
import math

import pytest
import torch
import torch.nn as nn

import custom_dataloader
import custom_transforms
from harness import models
from harness.networks import ResNet18Half
from student_code import CustomConv2d, ResNet

TEAM_ARCHS = ("customnet2", "customnet", "resnet", "googlenet")

# The README's parameter counts, with 100 classes.
PARAMETERS = {"customnet2": 1_370_852, "customnet": 1_785_124, "resnet": 201_588, "googlenet": 32_311}

# The team's figures for their ResNet checkpoint (epoch 90): logged val top-1, and the README's top-1
# on all 10,000 val images through a Pillow / bilinear-160 / ImageNet-normalize pipeline.
TEAM_RESNET_VAL_TOP1 = 43.97
CHECKPOINT_SLICE = 300  # val images; see test_team_resnet_checkpoint_classifies_real_val_images


# ---------------------------------------------------------------------------------------------------
# State-dict tables, from the README's layer lists
# ---------------------------------------------------------------------------------------------------


def conv(name, in_channels, out_channels, kernel_size, bias=True):
    entries = [(f"{name}.weight", (out_channels, in_channels, kernel_size, kernel_size))]
    return entries + ([(f"{name}.bias", (out_channels,))] if bias else [])


def bn(name, channels):
    return [(f"{name}.{key}", (channels,)) for key in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{name}.num_batches_tracked", ())]


def linear(name, in_features, out_features):
    return [(f"{name}.weight", (out_features, in_features)), (f"{name}.bias", (out_features,))]


CUSTOMNET2_STATE = [
    # conv 3->64 7/2/3, pool, ReLU, BN(64)
    *conv("features.0", 3, 64, 7), *bn("features.3", 64),
    # conv 64->64 1x1, ReLU, conv 64->64 3x3, ReLU, conv 64->256 1x1, pool, ReLU, BN(256)
    *conv("features.4", 64, 64, 1), *conv("features.6", 64, 64, 3), *conv("features.8", 64, 256, 1),
    *bn("features.11", 256),
    # conv 256->64 1x1, ReLU, conv 64->64 3x3, ReLU, conv 64->256 1x1, pool, ReLU, BN(256)
    *conv("features.12", 256, 64, 1), *conv("features.14", 64, 64, 3), *conv("features.16", 64, 256, 1),
    *bn("features.19", 256),
    # conv 256->512 3x3, ReLU, BN(512), Dropout (features.23)
    *conv("features.20", 256, 512, 3), *bn("features.22", 512),
    *linear("fc", 512, 100),
]

CUSTOMNET_STATE = [
    *conv("conv_block1.0", 3, 64, 7), *bn("conv_block1.1", 64),
    *conv("residual_block1.0", 64, 64, 1), *bn("residual_block1.1", 64),
    *conv("residual_block1.3", 64, 64, 3), *bn("residual_block1.4", 64),
    *conv("residual_block2.0", 64, 64, 1), *bn("residual_block2.1", 64),
    *conv("residual_block2.3", 64, 256, 3), *bn("residual_block2.4", 256),
    *conv("downsample.0", 64, 256, 3, bias=False), *bn("downsample.1", 256),
    *conv("residual_block3.0", 256, 64, 1), *bn("residual_block3.1", 64),
    *conv("residual_block3.3", 64, 64, 3), *bn("residual_block3.4", 64),
    *conv("downsample2.0", 256, 64, 3, bias=False), *bn("downsample2.1", 64),
    *conv("conv_block2.0", 256, 512, 3), *bn("conv_block2.1", 512),
    *linear("fc", 512, 100),
]


def basic_block(name, in_channels, out_channels, downsample):
    entries = [*conv(f"{name}.conv1", in_channels, out_channels, 3, bias=False),
               *bn(f"{name}.bn1", out_channels),
               *conv(f"{name}.conv2", out_channels, out_channels, 3, bias=False),
               *bn(f"{name}.bn2", out_channels)]
    if downsample:
        entries += [*conv(f"{name}.downsample.0", in_channels, out_channels, 3, bias=False),
                    *bn(f"{name}.downsample.1", out_channels)]
    return entries


RESNET_STATE = [
    *conv("conv", 3, 16, 3, bias=False), *bn("bn", 16),
    *basic_block("layer1.0", 16, 16, False), *basic_block("layer1.1", 16, 16, False),
    *basic_block("layer2.0", 16, 32, True), *basic_block("layer2.1", 32, 32, False),
    *basic_block("layer3.0", 32, 64, True), *basic_block("layer3.1", 64, 64, False),
    *linear("fc", 64, 100),
]


def inception(name, in_planes, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes):
    """b1: 1x1 | b2: 1x1, 3x3 | b3: 1x1, 3x3, 3x3 | b4: pool, 1x1; each conv followed by BN, ReLU."""
    return [
        *conv(f"{name}.b1.0", in_planes, n1x1, 1), *bn(f"{name}.b1.1", n1x1),
        *conv(f"{name}.b2.0", in_planes, n3x3red, 1), *bn(f"{name}.b2.1", n3x3red),
        *conv(f"{name}.b2.3", n3x3red, n3x3, 3), *bn(f"{name}.b2.4", n3x3),
        *conv(f"{name}.b3.0", in_planes, n5x5red, 1), *bn(f"{name}.b3.1", n5x5red),
        *conv(f"{name}.b3.3", n5x5red, n5x5, 3), *bn(f"{name}.b3.4", n5x5),
        *conv(f"{name}.b3.6", n5x5, n5x5, 3), *bn(f"{name}.b3.7", n5x5),
        *conv(f"{name}.b4.1", in_planes, pool_planes, 1), *bn(f"{name}.b4.2", pool_planes),
    ]


GOOGLENET_STATE = [
    *conv("pre_layers.0", 3, 12, 3), *bn("pre_layers.1", 12),
    *inception("a3", 12, 4, 6, 8, 1, 2, 2), *inception("b3", 16, 8, 8, 12, 2, 6, 4),
    *inception("a4", 30, 12, 6, 13, 1, 3, 4), *inception("b4", 32, 10, 7, 14, 2, 4, 4),
    *inception("c4", 32, 8, 8, 16, 2, 4, 4), *inception("d4", 32, 7, 9, 18, 2, 4, 4),
    *inception("e4", 33, 16, 10, 20, 2, 8, 8),
    *inception("a5", 52, 16, 10, 20, 2, 8, 8), *inception("b5", 52, 24, 12, 24, 3, 8, 8),
    *linear("linear", 64, 100),
]

STATE_TABLES = {"customnet2": CUSTOMNET2_STATE, "customnet": CUSTOMNET_STATE, "resnet": RESNET_STATE,
                "googlenet": GOOGLENET_STATE}

# (channels, downsampling factor) of the map entering the global average pool.
FINAL_FEATURES = {"customnet2": (512, 16), "customnet": (512, 16), "resnet": (64, 4), "googlenet": (64, 4)}


def build(arch, conv_op=nn.Conv2d):
    torch.manual_seed(0)
    return models.build_model(arch, 100, use_custom_conv=conv_op is CustomConv2d)[1]


# ---------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", TEAM_ARCHS)
def test_parameter_count_is_the_teams(arch):
    assert sum(p.numel() for p in build(arch).parameters()) == PARAMETERS[arch]


@pytest.mark.parametrize("arch", TEAM_ARCHS)
def test_state_dict_names_and_shapes_are_the_teams(arch):
    state = [(name, tuple(tensor.shape)) for name, tensor in build(arch).state_dict().items()]
    assert state == STATE_TABLES[arch]
    # The tables agree with the README's counts too (num_batches_tracked and running stats aside).
    parameters = sum(math.prod(shape) for name, shape in STATE_TABLES[arch]
                     if not name.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert parameters == PARAMETERS[arch]


@pytest.mark.parametrize("size", [128, 160])
@pytest.mark.parametrize("arch", TEAM_ARCHS)
def test_final_feature_map_and_logits_shapes(arch, size):
    model = build(arch).eval()
    seen = []
    model.avgpool.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    channels, factor = FINAL_FEATURES[arch]
    assert seen == [(2, channels, size // factor, size // factor)]
    assert logits.shape == (2, 100) and torch.isfinite(logits).all()


def test_team_resnet_has_no_stem_pooling():
    model = build("resnet").eval()
    with torch.no_grad():
        features = model.layer1(model.relu(model.bn(model.conv(torch.randn(1, 3, 160, 160)))))
    assert features.shape == (1, 16, 160, 160)  # layer1 at the full input resolution


def test_customnet_applies_residual_block2_and_downsample_twice():
    model = build("customnet").train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    # One forward pass updates a batch norm once per use: the shared modules' twice.
    tracked = {name: int(buffer) for name, buffer in model.named_buffers()
               if name.endswith("num_batches_tracked")}
    twice = {name for name, count in tracked.items() if count == 2}
    assert twice == {"residual_block2.1.num_batches_tracked", "residual_block2.4.num_batches_tracked",
                     "downsample.1.num_batches_tracked"}
    assert all(count == 1 for name, count in tracked.items() if name not in twice)


@pytest.mark.parametrize("arch", TEAM_ARCHS)
def test_team_networks_keep_every_batch_norm_gamma_at_one(arch):
    # Our Kaiming init, without our designs' zero-initialised residual gammas.
    for name, module in build(arch).named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.weight.eq(1).all(), name


def test_team_customnet2_uses_element_wise_dropout():
    dropouts = [m for m in build("customnet2").modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert [type(m) for m in dropouts] == [nn.Dropout] and dropouts[0].p == 0.5


# ---------------------------------------------------------------------------------------------------
# CustomConv2d
# ---------------------------------------------------------------------------------------------------


def randomize_(model, seed=0):
    """Random weights and batch-norm statistics, so that every layer shapes the eval-mode output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                # Variances and gammas in [0.5, 1.5); everything else around zero.
                tensor.copy_(values + 0.5 if name.endswith(("running_var", "weight")) and tensor.dim() == 1
                             else (values - 0.5) * 0.2)
    return model


@pytest.mark.parametrize("arch", TEAM_ARCHS)
def test_custom_conv_gives_the_same_outputs_from_one_state_dict(arch):
    reference = randomize_(build(arch)).double().eval()
    custom = build(arch, conv_op=CustomConv2d).double().eval()
    custom.load_state_dict(reference.state_dict())  # strict: same names and shapes
    assert sum(type(m) is CustomConv2d for m in custom.modules()) == sum(
        isinstance(m, nn.Conv2d) for m in reference.modules())
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(images), custom(images)
    assert expected.std() > 1e-3  # the outputs differ between images: a meaningful comparison
    torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# The team's checkpoint
# ---------------------------------------------------------------------------------------------------


def load_team_resnet_checkpoint(shared_team):
    path = shared_team / "checkpoints" / "resnet_model_best.pth.tar"
    return torch.load(path, map_location="cpu", weights_only=True)


def test_team_resnet_checkpoint_loads_strictly(shared_team):
    checkpoint = load_team_resnet_checkpoint(shared_team)
    assert checkpoint["epoch"] == 90 and checkpoint["model_arch"] == "simplenet"  # the 2019 harness's string
    assert float(checkpoint["best_acc1"]) == pytest.approx(TEAM_RESNET_VAL_TOP1, abs=1e-4)
    ResNet().load_state_dict(checkpoint["state_dict"])
    # Our own ResNet design is another network: the team's weights do not fit it.
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "stem.0.weight"'):
        ResNet18Half().load_state_dict(checkpoint["state_dict"])


def test_team_resnet_checkpoint_classifies_real_val_images(shared_team, shared_miniplaces):
    """The first CHECKPOINT_SLICE val images (the val list is in random class order) through
    get_val_transforms(): Pillow decode, bilinear resize to 160 x 160, ImageNet normalization.

    Each image is right with probability p = 0.4397, so the slice's top-1 has a binomial standard
    deviation of 100 * sqrt(p (1 - p) / n) = 2.9 points at n = 300; 3.5 of them (10 points) make a
    false failure a 1-in-2000 event, while a broken pipeline (no normalization, another network)
    lands far below and chance is 1%. Runtime grows with n (ResNet runs layer1 at 160 x 160): on
    the 2-core CPU, idle, 500 images took 44 s, so 300 take about 27 s; 500 would narrow the
    tolerance to 7.8 points.
    """
    model = ResNet().eval()
    model.load_state_dict(load_team_resnet_checkpoint(shared_team)["state_dict"])
    val_set = custom_dataloader.MiniPlacesLoader(shared_miniplaces, num_classes=100, split="val",
                                                 transforms=custom_transforms.get_val_transforms())
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, range(CHECKPOINT_SLICE)),
                                         batch_size=50)
    correct = 0
    with torch.inference_mode():
        for images, labels in loader:
            correct += (model(images).argmax(dim=1) == labels).sum().item()
    top1 = 100.0 * correct / CHECKPOINT_SLICE
    p = TEAM_RESNET_VAL_TOP1 / 100
    std = 100 * math.sqrt(p * (1 - p) / CHECKPOINT_SLICE)
    assert abs(top1 - TEAM_RESNET_VAL_TOP1) < 3.5 * std, f"top-1 {top1:.1f}% on {CHECKPOINT_SLICE} images"
