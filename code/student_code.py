"""The parts of Assignment 2 that students write: a convolution built from unfold/fold, the networks,
gradient attention maps and the PGD attack.

Sections:
    Part I   convolution with unfold / fold  (CustomConv2DFunction, custom_conv2d, CustomConv2d)
    Part II  networks                        (SimpleNet; the team's CustomNet2, CustomNet, ResNet,
                                              GoogLeNet; default_model)
    Part III attention and adversarial samples (GradAttention, vis_grad_attention, PGDAttack;
                                              default_attack, default_attention, default_visfunction)
"""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Function

# ---------------------------------------------------------------------------------------------------
# Part I: convolution with unfold / fold
# ---------------------------------------------------------------------------------------------------
#
# A convolution is a matrix product once each receptive field is laid out as a column:
#   cols = unfold(x)                 (N, C*kh*kw, L)      L = Ho*Wo output positions
#   y    = W.view(O, C*kh*kw) @ cols (N, O, L)
# and its gradients are matrix products too:
#   dW   = sum_n dy_n @ cols_n^T     (O, C*kh*kw)
#   dx   = fold(W^T @ dy)            fold adds each column back onto the pixels it came from.
# With groups, the C*kh*kw rows split into `groups` contiguous blocks (unfold is channel-major),
# so every product above becomes G independent products: (G, O/G, K) @ (N, G, K, L), K = C/G*kh*kw.
# BEGIN SOLUTION (removed)
#
# Three choices keep it close to PyTorch's own convolution in time and memory: the batch runs in chunks
# whose columns stay in cache between unfold and the product (the k^2-inflated columns never exist for
# the whole batch at once); backward keeps the input, not the columns, recomputing each chunk's; and the
# columns are copied from Tensor.unfold's window views (F.unfold's im2col took 1.6-8x as long on the CPU).
# A channels-last (NHWC) input is computed, and answered, in NCHW.

# Bytes of columns per chunk. On the CPU (L2 1 MiB a core, L3 32 MiB here) 4 MiB measured best with
# bench/bench_conv.py (docs/measurements.md); a GPU wants few, large products, bounded to keep the columns' memory modest.
CHUNK_BYTES = {"cpu": 4 * 2**20, "accelerator": 64 * 2**20}
# END SOLUTION


class CustomConv2DFunction(Function):
    """2-D convolution with unfold/fold and matrix products only: no conv kernels inside."""

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """input (N, C, H, W), weight (O, C/G, kh, kw), bias (O,) or None -> (N, O, Ho, Wo)."""
        # BEGIN SOLUTION
        geo = _Geometry(input, weight, bias, stride, padding, dilation, groups)  # checks every argument
        n, out_channels, g = input.shape[0], weight.shape[0], groups
        ho, wo = geo.out_size
        w = weight.reshape(g, out_channels // g, -1)  # (G, O/G, K)
        # A fresh tensor written chunk by chunk, never a view: an in-place ReLU may follow.
        output = input.new_empty(n, out_channels, ho, wo)
        out_groups = output.view(n, g, out_channels // g, ho * wo)  # (N, G, O/G, L)
        for chunk in geo.batch_chunks(n):
            torch.matmul(w, geo.columns(input[chunk]), out=out_groups[chunk])  # (Nc, G, O/G, L)
        if bias is not None:
            output += bias.view(1, -1, 1, 1)
        ctx.geometry = geo  # backward chunks the batch as forward did
        ctx.save_for_backward(input, weight)
        return output
        # END SOLUTION

    @staticmethod
    def backward(ctx, grad_output):
        """Only the gradients autograd asks for: a first layer's input gradient is never computed."""
        # BEGIN SOLUTION
        (input, weight), geo = ctx.saved_tensors, ctx.geometry
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]  # need_bias is False without bias
        n, out_channels, ho, wo = grad_output.shape
        g = geo.groups
        w = weight.reshape(g, out_channels // g, -1)  # (G, O/G, K)
        dy = grad_output.contiguous().view(n, g, out_channels // g, ho * wo)  # (N, G, O/G, L)
        grad_bias = grad_output.sum(dim=(0, 2, 3)) if need_bias else None
        if need_weight:
            grad_weight = torch.zeros_like(w)  # (G, O/G, K)
        if need_input:
            grad_input = input.new_empty(n, input.shape[1], *geo.fold_size)
        for chunk in geo.batch_chunks(n):
            dy_chunk = dy[chunk]  # (Nc, G, O/G, L)
            if need_weight:
                # dW = sum_n dy_n @ cols_n^T: (Nc, G, O/G, L) @ (Nc, G, L, K), summed over the chunk. The
                # transposed columns are a view: no copy of the k^2-inflated columns is made.
                cols = geo.columns(input[chunk])  # (Nc, G, K, L)
                grad_weight += torch.matmul(dy_chunk, cols.transpose(-1, -2)).sum(0)  # (G, O/G, K)
            if need_input:
                grad_input[chunk] = geo.fold(torch.matmul(w.transpose(1, 2), dy_chunk))  # (Nc, G, K, L)
        grad_weight = grad_weight.view_as(weight) if need_weight else None
        grad_input = geo.unpad(grad_input) if need_input else None
        return grad_input, grad_weight, grad_bias, None, None, None, None
        # END SOLUTION


def custom_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """`torch.nn.functional.conv2d` computed with CustomConv2DFunction: batched (N, C, H, W) or unbatched
    (C, H, W) input, padding an int, a pair, 'valid' or 'same'; under autocast, in the autocast dtype."""
    if isinstance(input, torch.Tensor) and torch.is_autocast_enabled(input.device.type):
        # Cast before the dtype check, as autocast does for F.conv2d: inside a network a layer gets
        # the previous layer's fp16/bf16 output while its own weight stays float32.
        dtype = torch.get_autocast_dtype(input.device.type)
        with torch.autocast(input.device.type, enabled=False):
            input, weight, bias = (t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                                   for t in (input, weight, bias))  # anything else: for the checks to judge
            return custom_conv2d(input, weight, bias, stride, padding, dilation, groups)
    # (C, H, W) -> (1, C, H, W) and back; CustomConv2DFunction checks every argument.
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    output = CustomConv2DFunction.apply(input.unsqueeze(0) if unbatched else input, weight, bias,
                                        stride, padding, dilation, groups)
    return output.squeeze(0) if unbatched else output


class CustomConv2d(nn.Conv2d):
    """A drop-in for nn.Conv2d whose forward is custom_conv2d. Subclassing nn.Conv2d gives exactly its
    constructor, parameter names and shapes, initialisation and padding modes: one state_dict fits both."""

    def _conv_forward(self, input, weight, bias):
        padding = self.padding
        if self.padding_mode != "zeros":  # as nn.Conv2d: pad in the requested mode, then convolve unpadded
            input, padding = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return custom_conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)


# BEGIN SOLUTION (removed)
class _Geometry:
    """The checked, resolved arguments of one convolution. pads = (left, right, top, bottom), as F.pad
    takes them: columns() pads each chunk; fold() takes symmetric padding as F.fold's argument, and only
    'same' with an even (dilated) kernel, asymmetric, is folded at the padded size and cut off after."""

    def __init__(self, input, weight, bias, stride, padding, dilation, groups):
        _check_tensors(input, weight, bias)
        (_, c, h, w), (out_channels, c_per_group, kh, kw) = input.shape, weight.shape
        self.stride, self.dilation = _int_pair(stride, "stride", 1), _int_pair(dilation, "dilation", 1)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups or out_channels % groups:
            raise ValueError(f"groups must be a positive int dividing both in_channels={c} and "
                             f"out_channels={out_channels}, got {groups!r}")
        if c_per_group * groups != c:
            raise ValueError(f"input has {c} channels but weight {tuple(weight.shape)} with groups={groups} "
                             f"expects {c_per_group * groups}")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {self.stride}")
            # As F.conv2d: 'same' splits the total d*(k-1) evenly, the odd pixel going to the end.
            th, tw = (d * (k - 1) if padding == "same" else 0 for k, d in zip((kh, kw), self.dilation))
            self.pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        else:
            ph, pw = _int_pair(padding, "padding", 0)
            self.pads = (pw, pw, ph, ph)
        left, right, top, bottom = self.pads
        self.symmetric = left == right and top == bottom
        padded = (h + top + bottom, w + left + right)
        span = tuple(d * (k - 1) + 1 for k, d in zip((kh, kw), self.dilation))
        if span[0] > padded[0] or span[1] > padded[1]:
            raise ValueError(f"kernel {kh}x{kw} (dilated extent {span[0]}x{span[1]}) is larger than the "
                             f"padded input {padded[0]}x{padded[1]}")
        self.out_size = tuple((p - s) // t + 1 for p, s, t in zip(padded, span, self.stride))
        self.fold_size = (h, w) if self.symmetric else padded  # fold's output: the input's gradient
        # (kernel_size, dilation, padding, stride), as F.fold takes them.
        self.fold_args = ((kh, kw), self.dilation, (top, left) if self.symmetric else (0, 0), self.stride)
        self.groups, self.kernel_size = groups, (kh, kw)
        # A 1x1 kernel at stride 1 with no padding is a plain matrix product: no unfold, no fold.
        self.pointwise = (kh, kw) == (1, 1) and self.stride == (1, 1) and self.pads == (0, 0, 0, 0)
        # Samples per chunk: as many as keep the chunk's columns (C*kh*kw, L) within the budget.
        sample_bytes = c * kh * kw * self.out_size[0] * self.out_size[1] * input.element_size()
        self.chunk_size = max(1, CHUNK_BYTES["cpu" if input.device.type == "cpu" else "accelerator"]
                              // max(1, sample_bytes))

    def batch_chunks(self, batch_size):
        return [slice(i, min(i + self.chunk_size, batch_size)) for i in range(0, batch_size, self.chunk_size)]

    def unpad(self, grad):
        left, right, top, bottom = self.pads
        return grad if self.symmetric else grad[:, :, top:grad.shape[2] - bottom, left:grad.shape[3] - right]

    def columns(self, x):
        """(Nc, C, H, W) -> (Nc, G, K, L): F.unfold's columns, copied from Tensor.unfold's window views."""
        n = x.shape[0]
        if self.pointwise:
            return x.reshape(n, self.groups, -1, x.shape[2] * x.shape[3])
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        x = F.pad(x, self.pads) if any(self.pads) else x  # F.pad copies even when it adds nothing
        fields = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
        fields = fields[..., ::dh, ::dw]  # (Nc, C, Ho, Wo, kh, kw): each output position's receptive field
        return fields.permute(0, 1, 4, 5, 2, 3).reshape(n, self.groups, -1, fields.shape[2] * fields.shape[3])

    def fold(self, cols):
        """(Nc, G, K, L) -> (Nc, C, *fold_size): each column summed back onto its receptive field."""
        if self.pointwise:  # dx = W^T @ dy is a 1x1 convolution's whole input gradient
            return cols.view(cols.shape[0], -1, *self.fold_size)
        return F.fold(cols.flatten(1, 2), self.fold_size, *self.fold_args)


def _check_tensors(input, weight, bias):
    for name, t in (("weight", weight), ("input", input), ("bias", weight if bias is None else bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != weight.dtype:
            raise TypeError(f"{name} dtype {t.dtype} and weight dtype {weight.dtype} differ")
    if input.dim() != 4:
        raise ValueError(f"input must be 3-D (C, H, W; through custom_conv2d) or 4-D (N, C, H, W), "
                         f"got {tuple(input.shape)}")
    if weight.dim() != 4 or 0 in weight.shape:  # F.unfold and F.conv2d refuse an empty kernel too
        raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kh, kw), none 0: {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if input.device != weight.device:
        raise ValueError(f"input is on {input.device} but weight is on {weight.device}")


def _int_pair(value, name, minimum):
    """An int or a pair of ints, each at least `minimum` -> (int, int)."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return pair
# END SOLUTION


# ---------------------------------------------------------------------------------------------------
# Part II: networks
# ---------------------------------------------------------------------------------------------------


def kaiming_init_(model):
    """Kaiming-normal (fan_out, ReLU) weights and zero biases for every conv; N(0, 0.01) for linear. With
    PyTorch's default init SimpleNet sat at chance for epochs on MiniPlaces; with this it learns at once."""
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


def _bottleneck(conv_op, in_channels):
    """SimpleNet's bottleneck without its last ReLU: conv 1x1 in -> 64, ReLU, conv 3x3 64 -> 64, ReLU,
    conv 1x1 64 -> 256 (all with bias)."""
    return [conv_op(in_channels, 64, kernel_size=1), nn.ReLU(inplace=True),
            conv_op(64, 64, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            conv_op(64, 256, kernel_size=1)]


def _pool():
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class SimpleNet(nn.Module):
    """The Spring 2019 starter's network: 1,368,676 parameters, about 5.5 MB."""

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        # BEGIN SOLUTION
        self.features = nn.Sequential(
            # 3 x 128 x 128 -> 64 x 64 x 64 -> 64 x 32 x 32
            conv_op(3, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(inplace=True), _pool(),
            # bottleneck 64 -> 64 -> 64 -> 256, then 256 x 16 x 16
            *_bottleneck(conv_op, 64), nn.ReLU(inplace=True), _pool(),
            # bottleneck 256 -> 64 -> 64 -> 256, then 256 x 8 x 8
            *_bottleneck(conv_op, 256), nn.ReLU(inplace=True), _pool(),
            # 512 x 8 x 8
            conv_op(256, 512, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        self.reset_parameters()
        # END SOLUTION

    def reset_parameters(self):
        kaiming_init_(self)

    def forward(self, x):
        x = self.features(x)  # (N, 512, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (N, 512)
        return self.fc(x)  # (N, num_classes)


# BEGIN SOLUTION (removed)
# --- The team's networks --------------------------------------------------------------------------
#
# Rebuilt from the code that trained the report's figures (../shared/team/README.md lists the facts):
# the same layers in the same order, the same state-dict names and shapes, so the team's checkpoints
# load strictly. The team trained them with PyTorch's default init (main.py --init pytorch); the
# constructors apply our Kaiming init, as SimpleNet's does.


def _conv_bn_relu(conv_op, in_channels, out_channels, kernel_size, stride=1, padding=0):
    """[conv, BN, ReLU]; the team kept the conv's bias before batch norm, and their checkpoints hold it."""
    return [conv_op(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class CustomNet2(nn.Module):
    """The team's CustomNet-2 (report Section 3, their best: 50.73% val top-1): SimpleNet plus batch norm.

    SimpleNet's convolutions, biases kept; each of its four blocks ends with [max pool,] ReLU, then
    BatchNorm2d; element-wise Dropout(0.5) on the last (N, 512, H/16, W/16) map, before the global
    average pool (the report's prose says Dropout2d; the code that trained it used Dropout).
    1,370,852 parameters; state-dict names features.<i>, i = 0..23, and fc.
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.features = nn.Sequential(
            # 3 x 128 x 128 -> 64 x 64 x 64 -> 64 x 32 x 32                       features.0-3
            conv_op(3, 64, kernel_size=7, stride=2, padding=3), _pool(), nn.ReLU(inplace=True),
            nn.BatchNorm2d(64),
            # bottleneck 64 -> 256, then 256 x 16 x 16                              features.4-11
            *_bottleneck(conv_op, 64), _pool(), nn.ReLU(inplace=True), nn.BatchNorm2d(256),
            # bottleneck 256 -> 256, then 256 x 8 x 8                               features.12-19
            *_bottleneck(conv_op, 256), _pool(), nn.ReLU(inplace=True), nn.BatchNorm2d(256),
            # 512 x 8 x 8                                                           features.20-23
            conv_op(256, 512, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(512),
            nn.Dropout(0.5),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.features(x)  # (N, 512, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (N, 512)
        return self.fc(x)  # (N, num_classes)


def _residual_branch(conv_op, in_channels, mid_channels, out_channels):
    """The team's CustomNet residual branch: conv 1x1 (in -> mid), BN, ReLU, conv 3x3 (mid -> out), BN,
    convs with bias. An nn.Sequential: state-dict names <block>.0, .1 (BN), .3, .4 (BN)."""
    return nn.Sequential(
        *_conv_bn_relu(conv_op, in_channels, mid_channels, kernel_size=1),
        conv_op(mid_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
    )


def _conv3x3_shortcut(conv_op, in_channels, out_channels, stride=1):
    """The team's projection shortcut: a 3x3 conv without bias (not ResNet's 1x1) and BN.
    State-dict names <name>.0 (conv), <name>.1 (BN)."""
    return nn.Sequential(
        conv_op(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class CustomNet(nn.Module):
    """The team's CustomNet (report Section 3: 60.47% train, 11.38% val top-1), 1,785,124 parameters.

    conv_block1, max pool, three residual blocks (the third and second with 3x3 projection shortcuts),
    max pool, conv_block2, global average pool, fc. As in the team's code, `residual_block2` and its
    shortcut `downsample` are applied twice: the same modules, so shared weights and batch-norm
    running statistics averaged over two different inputs (64 x H/4 and 64 x H/8 feature maps).
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.conv_block1 = nn.Sequential(*_conv_bn_relu(conv_op, 3, 64, 7, stride=2, padding=3))
        self.maxpool = _pool()
        self.residual_block1 = _residual_branch(conv_op, 64, 64, 64)  # identity shortcut
        self.residual_block2 = _residual_branch(conv_op, 64, 64, 256)
        self.downsample = _conv3x3_shortcut(conv_op, 64, 256)
        self.residual_block3 = _residual_branch(conv_op, 256, 64, 64)
        self.downsample2 = _conv3x3_shortcut(conv_op, 256, 64)
        self.conv_block2 = nn.Sequential(*_conv_bn_relu(conv_op, 256, 512, 3, padding=1))
        self.conv_relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.maxpool(self.conv_block1(x))  # (N, 64, H/4, W/4)
        x = self.conv_relu(self.residual_block1(x) + x)
        x = self.conv_relu(self.residual_block2(x) + self.downsample(x))  # (N, 256, H/4, W/4)
        x = self.maxpool(x)  # (N, 256, H/8, W/8)
        x = self.conv_relu(self.residual_block3(x) + self.downsample2(x))  # (N, 64, H/8, W/8)
        x = self.second_pass(x)  # (N, 256, H/8, W/8)
        x = self.conv_block2(self.maxpool(x))  # (N, 512, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (N, 512)
        return self.fc(x)  # (N, num_classes)

    def second_pass(self, x):
        """The team's second use of residual_block2 and downsample, the same modules (kept: their
        checkpoints need it). A method, so that a variant can give it modules of its own."""
        return self.conv_relu(self.residual_block2(x) + self.downsample(x))


class BasicBlock(nn.Module):
    """The team's ResNet block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3x3 convs
    without bias; the shortcut is the identity, or `downsample` (3x3 strided conv + BN) where the
    shape changes."""

    def __init__(self, conv_op, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = conv_op(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv_op(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        reshapes = stride != 1 or in_channels != out_channels
        self.downsample = _conv3x3_shortcut(conv_op, in_channels, out_channels, stride) if reshapes else None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))  # (N, out, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """The team's ResNet (report Section 3: 43.97% val top-1), CIFAR-style, 201,588 parameters.

    conv 3x3 3 -> 16, BN, ReLU; layer1, layer2, layer3 of two BasicBlocks at 16, 32, 64 channels,
    the first block of layers 2 and 3 at stride 2; global average pool; fc 64 -> num_classes. No
    stem pooling: layer1 runs at the full input resolution (160 x 160 in validation).
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.conv = conv_op(3, 16, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(conv_op, 16, 16), BasicBlock(conv_op, 16, 16))
        self.layer2 = nn.Sequential(BasicBlock(conv_op, 16, 32, stride=2), BasicBlock(conv_op, 32, 32))
        self.layer3 = nn.Sequential(BasicBlock(conv_op, 32, 64, stride=2), BasicBlock(conv_op, 64, 64))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn(self.conv(x))))  # (N, 16, H, W)
        x = self.layer3(self.layer2(x))  # (N, 64, H/4, W/4)
        x = self.avgpool(x).flatten(1)  # (N, 64)
        return self.fc(x)  # (N, num_classes)


class Inception(nn.Module):
    """The team's inception block: four branches of conv-BN-ReLU (convs with bias), concatenated.

    b1: 1x1 | b2: 1x1 -> 3x3 | b3: 1x1 -> 3x3 -> 3x3 (the "5x5" branch) | b4: 3x3/1 max pool -> 1x1.
    Output: (N, n1x1 + n3x3 + n5x5 + pool_planes, H, W).
    """

    def __init__(self, conv_op, in_planes, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes):
        super().__init__()
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_planes
        self.b1 = nn.Sequential(*_conv_bn_relu(conv_op, in_planes, n1x1, 1))
        self.b2 = nn.Sequential(*_conv_bn_relu(conv_op, in_planes, n3x3red, 1),
                                *_conv_bn_relu(conv_op, n3x3red, n3x3, 3, padding=1))
        self.b3 = nn.Sequential(*_conv_bn_relu(conv_op, in_planes, n5x5red, 1),
                                *_conv_bn_relu(conv_op, n5x5red, n5x5, 3, padding=1),
                                *_conv_bn_relu(conv_op, n5x5, n5x5, 3, padding=1))
        self.b4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                                *_conv_bn_relu(conv_op, in_planes, pool_planes, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class GoogLeNet(nn.Module):
    """The team's GoogLeNet (report Section 3: 35.99% val top-1 when stopped), a tiny inception net:
    pre_layers (conv 3x3 3 -> 12, BN, ReLU), inception a3, b3, max pool, a4-e4, max pool, a5, b5,
    global average pool, linear 64 -> num_classes; 32,311 parameters. The inception stages run at
    H, H/2 and H/4."""

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.pre_layers = nn.Sequential(*_conv_bn_relu(conv_op, 3, 12, 3, padding=1))
        # Inception(in, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes); output widths in comments.
        self.a3 = Inception(conv_op, 12, 4, 6, 8, 1, 2, 2)  # -> 16
        self.b3 = Inception(conv_op, 16, 8, 8, 12, 2, 6, 4)  # -> 30
        self.maxpool = _pool()
        self.a4 = Inception(conv_op, 30, 12, 6, 13, 1, 3, 4)  # -> 32
        self.b4 = Inception(conv_op, 32, 10, 7, 14, 2, 4, 4)  # -> 32
        self.c4 = Inception(conv_op, 32, 8, 8, 16, 2, 4, 4)  # -> 32
        self.d4 = Inception(conv_op, 32, 7, 9, 18, 2, 4, 4)  # -> 33
        self.e4 = Inception(conv_op, 33, 16, 10, 20, 2, 8, 8)  # -> 52
        self.a5 = Inception(conv_op, 52, 16, 10, 20, 2, 8, 8)  # -> 52
        self.b5 = Inception(conv_op, 52, 24, 12, 24, 3, 8, 8)  # -> 64
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(64, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.b3(self.a3(self.pre_layers(x)))  # (N, 30, H, W)
        x = self.maxpool(x)  # (N, 30, H/2, W/2)
        x = self.e4(self.d4(self.c4(self.b4(self.a4(x)))))  # (N, 52, H/2, W/2)
        x = self.b5(self.a5(self.maxpool(x)))  # (N, 64, H/4, W/4)
        x = self.avgpool(x).flatten(1)  # (N, 64)
        return self.linear(x)  # (N, num_classes)
# END SOLUTION


default_model = SimpleNet


# ---------------------------------------------------------------------------------------------------
# Part III: attention and adversarial samples
# ---------------------------------------------------------------------------------------------------
#
# Both tools differentiate a loss with respect to the input images x (N, 3, H, W), not the weights:
# - GradAttention (Simonyan et al. 2014) shows |d loss(predicted label) / d x|, max over channels;
# - PGDAttack (Madry et al. 2018) takes num_steps signed-gradient steps on x, each followed by a
#   projection onto the L-inf epsilon ball around the clean x and onto the valid image range.
# Both call torch.autograd.grad(loss, x): autograd computes only what x's gradient needs, the
# parameters' .grad are never written (a training step's gradients stay as they were), and each
# step's graph is freed as soon as its gradient is out. Both run the network in eval mode and then
# restore every module's own mode: in train mode each forward pass would update batch-norm running
# statistics (10 updates for one attack) and dropout would make two maps of the same images differ.
#
# The networks see ImageNet-normalized images, x = (pixel - mean) / std, so epsilon and step_size are
# in normalized units as in the original (epsilon 0.1 is about 0.023 = 6/255 of the pixel range) and
# a valid image lies in [(0 - mean) / std, (1 - mean) / std] per channel. The constants repeat
# custom_transforms.IMAGENET_MEAN / IMAGENET_STD so that this module does not depend on the data code.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalization(like):
    """ImageNet mean and std as (1, 3, 1, 1) tensors of `like`'s dtype and device."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    return mean, std


def valid_image_range(like):
    """(low, high), each (1, 3, 1, 1): the normalized values of pixel 0 and pixel 1 per channel, computed
    as torchvision's Normalize does, (0 - mean) / std in `like`'s dtype, so a black or white pixel is on them."""
    mean, std = _normalization(like)
    return (0 - mean) / std, (1 - mean) / std


def _check_images(images, name="input"):
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be a batch of RGB images (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor of normalized images, got {images.dtype}")


def _check_labels(labels, images, name):
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a tensor of {images.shape[0]} class indices, got {shape}")


# BEGIN SOLUTION (removed)
def _predicted_label(logits):
    return logits.argmax(dim=1)  # (N,)


def _least_confident_label(logits):
    return logits.argmin(dim=1)  # (N,)


def _input_gradient(model, loss_fn, x, labels=None, pick=None):
    """(gradient like x, labels (N,)): the gradient of loss_fn(model(x), labels) with respect to x alone,
    with no graph left behind. Labels None are picked from this very forward pass's logits, `pick(logits)`,
    so choosing the label costs no extra pass."""
    # inference_mode(False) and enable_grad() let this run inside torch.no_grad() or inference_mode;
    # the clone is a normal tensor even when x was made under inference_mode, and it is ours to flag.
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)  # (N, num_classes)
        if labels is None:
            labels = pick(logits.detach())  # (N,)
        # A loss_fn with reduction='none' gives one loss per image: their sum has the same gradients.
        (grad,) = torch.autograd.grad(loss_fn(logits, labels).sum(), x)
    return grad, labels


@contextlib.contextmanager
def _eval_mode(model):
    """Run `model` in eval mode inside the block; every module's own mode is restored on the way out."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        # Per module, not model.train(flag): a submodule deliberately left in eval (a frozen batch norm) stays so.
        for module, training in flags:
            module.training = training
# END SOLUTION


class GradAttention:
    """Gradient saliency maps (Simonyan et al. 2014): the pixels where a small change moves the loss most."""

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn

    def explain(self, model, input):
        """(N, 3, H, W) normalized images -> (N, 1, H, W) non-negative saliency: the absolute gradient of
        the loss of the model's predicted label, maximum over the colour channels. A mean-reduced loss
        scales every map by 1/N, which vis_grad_attention's threshold (relative to the mean) ignores.
        Runs in eval mode (the same images give the same map); leaves the input, the parameters' .grad
        and requires_grad flags, the buffers (batch-norm statistics) and every module's mode as they were.
        """
        # BEGIN SOLUTION
        _check_images(input)
        with _eval_mode(model):
            grad, _ = _input_gradient(model, self.loss_fn, input, pick=_predicted_label)
        return grad.abs().amax(dim=1, keepdim=True)  # (N, 1, H, W)
        # END SOLUTION


class PGDAttack:
    """Projected gradient descent in the L-inf ball (Madry et al. 2018). targeted=True (the original's
    attack): lower the loss of a target label, by default the label the model is least confident of.
    targeted=False: raise the loss of the true label, which perturb() then needs. random_start begins
    from a uniform point of the ball instead of the input."""

    def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1, targeted=True, random_start=False):
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        if not step_size > 0:  # also rejects NaN
            raise ValueError(f"step_size must be > 0, got {step_size!r}")
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self.loss_fn, self.num_steps = loss_fn, num_steps
        self.step_size, self.epsilon = float(step_size), float(epsilon)
        self.targeted, self.random_start = bool(targeted), bool(random_start)

    def __repr__(self):
        return (f"PGDAttack(num_steps={self.num_steps}, step_size={self.step_size}, epsilon={self.epsilon}, "
                f"targeted={self.targeted}, random_start={self.random_start})")

    def perturb(self, model, input, target=None):
        """(N, 3, H, W) normalized images -> adversarial images of the same shape, dtype and device, detached.

        target: (N,) labels. Targeted: the labels to move towards (default: each image's least
        confident label, from the first step's forward pass). Untargeted: the true labels (required).
        Costs num_steps forward and backward passes in eval mode (without random_start, the same images
        give the same result); leaves the input, the parameters' .grad and requires_grad flags, the
        buffers (batch-norm statistics) and every module's mode as they were.
        """
        # BEGIN SOLUTION
        _check_images(input)
        if target is not None:
            _check_labels(target, input, "target")
            target = target.to(input.device)
        elif not self.targeted:
            raise ValueError("an untargeted PGDAttack needs the true labels: perturb(model, input, target=labels)")

        clean = input.detach()
        low, high = self._bounds(clean)  # each (N, 3, H, W)
        if self.epsilon == 0:
            # The ball is the input itself: no pass can move it (an epsilon sweep starts here).
            return clean.clamp(low, high)

        # adv is this function's own tensor (each step differentiates a clone of it), so it is updated
        # in place: a step's peak memory is one forward+backward plus adv, grad and the two bounds.
        adv = clean.clone()
        with torch.no_grad(), _eval_mode(model):
            if self.random_start:
                adv.add_(torch.empty_like(adv).uniform_(-self.epsilon, self.epsilon))
                torch.clamp(adv, low, high, out=adv)
            # Descend the target's loss, or ascend the true label's.
            signed_step = -self.step_size if self.targeted else self.step_size
            for _ in range(self.num_steps):
                grad, target = _input_gradient(model, self.loss_fn, adv, target, pick=_least_confident_label)
                adv.add_(grad.sign_(), alpha=signed_step)
                del grad  # before the next step's forward and backward, not after them
                torch.clamp(adv, low, high, out=adv)
        return adv
        # END SOLUTION

    # BEGIN SOLUTION (removed)
    def _bounds(self, clean):
        """The L-inf ball around `clean`, projected onto the valid image range: (low, high), each like clean.
        Clamping to [low, high] is the exact projection onto ball and range, both boxes. Each bound is clamped
        into the range, so the range wins for an input that is not a valid image (only there can the
        result lie further than epsilon from the input)."""
        range_low, range_high = valid_image_range(clean)
        low = torch.clamp(clean - self.epsilon, range_low, range_high)
        high = torch.clamp(clean + self.epsilon, range_low, range_high)
        return low, high
    # END SOLUTION


def vis_grad_attention(input, vis_alpha=2.0, n_rows=10, vis_output=None):
    """(N, 3, H, W) normalized images [+ (N, 1, H, W) saliency] -> one (3, H', W') picture in [0, 1], on the CPU:
    the de-normalized images tiled by make_grid, n_rows images per row (2-pixel borders). A saliency map is
    tiled the same way and its pixels above vis_alpha times the maps' mean are painted into the red channel.
    """
    from torchvision.utils import make_grid  # torchvision takes seconds to import; only pictures need it

    _check_images(input)
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows must be an int >= 1, got {n_rows!r}")
    images = input.detach().cpu().float()
    mean, std = _normalization(images)
    grid = make_grid((images * std + mean).clamp(0, 1), nrow=n_rows)  # (3, H', W')
    if vis_output is None:
        return grid

    saliency = vis_output.detach().cpu().float() if isinstance(vis_output, torch.Tensor) else vis_output
    expected = (images.shape[0], 1, *images.shape[2:])
    if not isinstance(saliency, torch.Tensor) or saliency.shape != expected:
        shape = tuple(saliency.shape) if isinstance(saliency, torch.Tensor) else type(saliency).__name__
        raise ValueError(f"vis_output must be a saliency map of shape {expected}, got {shape}")
    tiled = make_grid(saliency, nrow=n_rows)[0]  # (H', W'); make_grid repeats one channel into three
    # The threshold uses the maps' own mean: the grid's zero borders would lower it.
    mask = (tiled > vis_alpha * saliency.mean()).to(grid.dtype)
    grid[0] = torch.maximum(grid[0], mask)
    return grid


default_attack = PGDAttack
default_attention = GradAttention
default_visfunction = vis_grad_attention
