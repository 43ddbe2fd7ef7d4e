"""Our own network designs, selectable with --arch customnet2_bn, customnet_res, resnet18_half and
googlenet_half (harness.models builds them; `--use-custom-conv` passes the student's CustomConv2d as
`conv_op`, as for every network).

Not the team's networks (student_code.py rebuilds those, so that the team's checkpoints load): written
from the report's prose before the team's code was at hand, then measured (docs/networks.md and docs/measurements.md), they
are the base for beating the report. Their state-dict names and parameter counts are those they had in
student_code.py, where they were first written, so the checkpoints trained then still load.
"""
import torch
import torch.nn as nn

# The three helpers below repeat student_code.py's: the harness cannot rely on the student's file for
# them (a 2019 student's file has none of them), so this module imports nothing from it.


def kaiming_init_(model):
    """Kaiming-normal (fan_out, ReLU) weights and zero biases for every conv; N(0, 0.01) for linear."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


def _conv_bn_relu(conv_op, in_channels, out_channels, kernel_size, stride=1, padding=0):
    """[conv, BN, ReLU], the conv without bias: batch norm's beta takes its place."""
    return [
        conv_op(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def _pool():
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def zero_init_residual_(model):
    """Zero the last batch-norm gamma of every ResidualBlock, so each block starts as the identity.

    Then the network at initialisation is its shortcut path, a shallow network, and the residual
    branches grow in from zero: Goyal et al. 2017 ("Accurate, Large Minibatch SGD") use it to keep
    the first iterations at a large learning rate stable (ours is 0.1), and torchvision offers it
    as `zero_init_residual`. The gamma gets a gradient from the first step, the rest of the
    branch from the second.
    """
    for module in model.modules():
        if isinstance(module, ResidualBlock):
            nn.init.zeros_(module.bn2.weight)


class CustomNet2BN(nn.Module):
    """Ours (not the team's CustomNet2): SimpleNet with batch norm after each conv and channel dropout.

    Same layers and widths as SimpleNet (1,370,020 parameters against 1,368,676: batch norm's two
    parameters per channel replace the conv biases). Dropout2d(0.5) sits once, on the last conv's
    (N, 512, H/16, W/16) output just before the global average pool, where dropping whole
    channels drops features of the classifier's input, as the classifier dropout of AlexNet/VGG.
    Placed earlier it would hide half of every layer's input, and placed before a batch norm it
    would shift the variance that batch norm learned in training away from what it sees in eval
    (Li et al. 2019, "Understanding the disharmony between dropout and batch normalization").
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(
            # 3 x 128 x 128 -> 64 x 64 x 64 -> 64 x 32 x 32
            *_conv_bn_relu(conv_op, 3, 64, kernel_size=7, stride=2, padding=3),
            _pool(),
            # bottleneck 64 -> 64 -> 64 -> 256, then 256 x 16 x 16
            *_conv_bn_relu(conv_op, 64, 64, kernel_size=1),
            *_conv_bn_relu(conv_op, 64, 64, kernel_size=3, padding=1),
            *_conv_bn_relu(conv_op, 64, 256, kernel_size=1),
            _pool(),
            # bottleneck 256 -> 64 -> 64 -> 256, then 256 x 8 x 8
            *_conv_bn_relu(conv_op, 256, 64, kernel_size=1),
            *_conv_bn_relu(conv_op, 64, 64, kernel_size=3, padding=1),
            *_conv_bn_relu(conv_op, 64, 256, kernel_size=1),
            _pool(),
            # 512 x 8 x 8
            *_conv_bn_relu(conv_op, 256, 512, kernel_size=3, padding=1),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.dropout(self.features(x))  # (N, 512, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (N, 512)
        return self.fc(x)  # (N, num_classes)


class ResidualBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with 3x3 convs (He et al. 2016).

    The shortcut is the identity, or a strided 1x1 conv + BN where the shape changes.
    """

    def __init__(self, conv_op, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = conv_op(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv_op(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv_op(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))  # (N, out, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18Half(nn.Module):
    """Ours (not the team's ResNet): ResNet-18's layout at about half width, for 128 x 128 MiniPlaces.

    stem: 7x7/2 conv + BN + ReLU + 3x3/2 max pool, 3 x 128 x 128 -> C x 32 x 32 (ResNet's own
    stem). Then `stages`, each (width, number of blocks, stride of its first block): by default
    ResNet-18's two blocks per stage at half its widths, 32-64-128, except the last stage at 192
    channels, not 256, which would take 2.8 M parameters (11 MB, over the 10 MB limit).
    At 128 px the last stage runs at 4 x 4 (ResNet-18 at 224 px: 7 x 7).
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100, stem_channels=32,
                 stages=((32, 2, 1), (64, 2, 2), (128, 2, 2), (192, 2, 2))):
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn_relu(conv_op, 3, stem_channels, kernel_size=7, stride=2, padding=3),
            _pool(),
        )
        blocks = []
        in_channels = stem_channels
        for width, num_blocks, stride in stages:
            for index in range(num_blocks):
                blocks.append(ResidualBlock(conv_op, in_channels, width, stride if index == 0 else 1))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes)
        kaiming_init_(self)
        zero_init_residual_(self)

    def forward(self, x):
        x = self.blocks(self.stem(x))  # (N, C, H/s, W/s), s = 4 * product of the stage strides
        x = self.avgpool(x).flatten(1)  # (N, C)
        return self.fc(x)  # (N, num_classes)


class CustomNetRes(ResNet18Half):
    """Ours (not the team's CustomNet): SimpleNet's stem and 4 residual blocks of two conv-BN-ReLU each.

    64 x 32 x 32 -> 64 x 32 x 32 -> 128 x 16 x 16 -> 128 x 16 x 16 -> 256 x 8 x 8 at 128 px: the
    same downsampling as SimpleNet, ending at 8 x 8, with about its parameter count.
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__(conv_op, num_classes, stem_channels=64,
                         stages=((64, 1, 1), (128, 1, 2), (128, 1, 1), (256, 1, 2)))


class Inception5x5(nn.Module):
    """GoogLeNet's block: four branches concatenated on channels (Szegedy et al. 2015).

    1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, every conv followed by BN + ReLU
    (batch norm as in Inception-v2). The paper's 5x5 is kept (torchvision's GoogLeNet and the
    team's Inception use 3x3 there). Output: (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W).
    """

    def __init__(self, conv_op, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = nn.Sequential(*_conv_bn_relu(conv_op, in_channels, ch1x1, kernel_size=1))
        self.branch2 = nn.Sequential(
            *_conv_bn_relu(conv_op, in_channels, ch3x3red, kernel_size=1),
            *_conv_bn_relu(conv_op, ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            *_conv_bn_relu(conv_op, in_channels, ch5x5red, kernel_size=1),
            *_conv_bn_relu(conv_op, ch5x5red, ch5x5, kernel_size=5, padding=2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            *_conv_bn_relu(conv_op, in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x):
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], dim=1)


# GoogLeNet's inception configurations (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj),
# every width halved; "pool" marks a 3x3/2 max pool.
GOOGLENET_HALF_BLOCKS = (
    (96, 32, 48, 64, 8, 16, 16),  # 3a -> 128
    (128, 64, 64, 96, 16, 48, 32),  # 3b -> 240
    "pool",
    (240, 96, 48, 104, 8, 24, 32),  # 4a -> 256
    (256, 80, 56, 112, 12, 32, 32),  # 4b -> 256
    (256, 64, 64, 128, 12, 32, 32),  # 4c -> 256
    (256, 56, 72, 144, 16, 32, 32),  # 4d -> 264
    (264, 128, 80, 160, 16, 64, 64),  # 4e -> 416
    "pool",
    (416, 128, 80, 160, 16, 64, 64),  # 5a -> 416
    (416, 192, 96, 192, 24, 64, 64),  # 5b -> 512
)


class GoogLeNetHalf(nn.Module):
    """Ours (not the team's GoogLeNet): GoogLeNet (Szegedy et al. 2015) at half width, for 128 x 128.

    The stem drops GoogLeNet's second max pool, so at 128 px the inception stages see 32, 16 and
    8 px (the original sees 28, 14 and 7 at 224 px) and end at 8 x 8 as SimpleNet does. No
    auxiliary classifiers: they helped the original's deep network train without batch norm,
    and with batch norm after every conv they are not needed (Inception-v2/v3 kept them only
    as regularisers) while adding parameters. Dropout 0.4 before the classifier, as in the paper.
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100, dropout=0.4):
        super().__init__()
        self.stem = nn.Sequential(
            # 3 x 128 x 128 -> 32 x 64 x 64 -> 32 x 32 x 32 -> 96 x 32 x 32
            *_conv_bn_relu(conv_op, 3, 32, kernel_size=7, stride=2, padding=3),
            _pool(),
            *_conv_bn_relu(conv_op, 32, 32, kernel_size=1),
            *_conv_bn_relu(conv_op, 32, 96, kernel_size=3, padding=1),
        )
        self.inception = nn.Sequential(*(
            _pool() if config == "pool" else Inception5x5(conv_op, *config)
            for config in GOOGLENET_HALF_BLOCKS
        ))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.inception[-1].out_channels, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.inception(self.stem(x))  # (N, 512, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (N, 512)
        return self.fc(self.dropout(x))  # (N, num_classes)
