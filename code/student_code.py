"""The parts of Assignment 2 that students write: a convolution built from unfold/fold, the networks,
gradient attention maps and the PGD attack.

Sections:
    Part I   convolution with unfold / fold  (CustomConv2DFunction, custom_conv2d, CustomConv2d)
    Part II  networks                        (SimpleNet; the team's CustomNet2, CustomNet, ResNet,
                                              GoogLeNet; ours: CustomNet2BN, CustomNetRes,
                                              ResNet18Half, GoogLeNetHalf; default_model)
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
#
# Three choices keep it close to PyTorch's own convolution in time and memory:
# - the batch is processed in chunks whose column matrix fits in cache between unfold and the
#   matrix product, so the k^2-inflated columns never exist for the whole batch at once;
# - backward keeps the input, not the columns, and recomputes the columns of each chunk;
# - a channels-last (NHWC) input gets a channels-last output and input gradient, as from nn.Conv2d
#   (groups=1; grouped layers stay NCHW; the layout follows the input, not the weight). A 1x1 layer
#   computes in NHWC itself: there each position's values are adjacent, so y^T = x^T @ W^T (N*L, O)
#   is one product landing in place.
#   Any other layer computes NCHW, as unfold's columns are channel-major, and converts its output
#   and gradient once: on the CPU a 3x3 64-channel layer (batch 64, 32x32) took 0.62 s a step so,
#   against 0.87 s with the products on transposed columns (torch.profiler).

# Bytes of column matrix per chunk. On the CPU (L2 1 MiB a core, L3 32 MiB here) 4 MiB measured
# best with bench/bench_conv.py (see the README). A GPU wants few, large products instead: there a
# chunk is bounded only to keep the columns' memory modest next to the activations.
CHUNK_BYTES = 4 * 2**20
ACCELERATOR_CHUNK_BYTES = 64 * 2**20

# The two strategies: "cpu" (CHUNK_BYTES, per-sample weight-gradient products) and "accelerator"
# (ACCELERATOR_CHUNK_BYTES, one weight-gradient product per chunk). None picks by the tensors'
# device, "cpu" for CPU tensors and "accelerator" for any other; setting one forces it on every
# device, so that a machine without a GPU can test the accelerator's code against F.conv2d.
CONV_STRATEGY = None
CONV_STRATEGIES = ("cpu", "accelerator")

_PADDING_STRINGS = ("valid", "same")


class CustomConv2DFunction(Function):
    """2-D convolution with unfold/fold and matrix products only: no conv kernels inside."""

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """input (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,) or None -> (N, O, Ho, Wo)."""
        _check_tensors(input, weight, bias)  # the one place arguments are checked
        if input.dim() != 4:
            raise ValueError(f"input must be 3-D (C, H, W; through custom_conv2d) or 4-D (N, C, H, W), "
                             f"got {tuple(input.shape)}")
        geo = _Geometry(input.shape, weight.shape, stride, padding, dilation, groups)
        n, out_channels, g = input.shape[0], weight.shape[0], geo.groups
        ho, wo = geo.out_size
        w = weight.reshape(g, out_channels // g, -1)  # (G, O/G, K)
        x = geo.pad(input)

        # Allocated whole and written chunk by chunk: the output is a fresh tensor, never a view,
        # so an in-place op (ReLU(inplace=True)) may follow.
        nhwc = g == 1 and _is_channels_last(input)
        transposed = nhwc and geo.is_pointwise  # products computed NHWC, in place
        output = _empty_like_layout(input, (n, out_channels, ho, wo), transposed)
        out_groups = _group_view(output, g)  # (N, G, O/G, L), a view in either layout
        strategy = _Strategy(input.device)
        for chunk in strategy.batch_chunks(n, geo.column_bytes(input.element_size())):
            cols = geo.columns(x[chunk])  # (Nc, C*kh*kw, L)
            cols = cols.view(cols.shape[0], g, -1, ho * wo)  # (Nc, G, K, L)
            _matmul_into(out_groups[chunk], w, cols, transposed)  # (Nc, G, O/G, L)
        if bias is not None:
            output += bias.view(1, -1, 1, 1)
        if nhwc and not transposed:
            output = output.contiguous(memory_format=torch.channels_last)

        ctx.geometry = geo
        ctx.nhwc = nhwc
        ctx.strategy = strategy  # backward chunks the batch as forward did
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, weight)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        """Only the gradients autograd asks for: a first layer's input gradient is never computed."""
        input, weight = ctx.saved_tensors
        geo = ctx.geometry
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        n, out_channels, ho, wo = grad_output.shape
        g = geo.groups
        w = weight.reshape(g, out_channels // g, -1)  # (G, O/G, K)
        nhwc = ctx.nhwc
        transposed = nhwc and geo.is_pointwise
        dy = _group_view(grad_output, g) if transposed \
            else grad_output.contiguous().view(n, g, out_channels // g, ho * wo)  # (N, G, O/G, L)

        grad_input = grad_weight = grad_bias = None
        if need_bias and ctx.has_bias:
            grad_bias = grad_output.sum(dim=(0, 2, 3))
        if need_weight:
            x = geo.pad(input)
            grad_w = torch.zeros_like(w)  # (G, O/G, K)
        if need_input:
            # Symmetric padding is folded away by fold itself; an asymmetric one is cut off at the end.
            fold_size = tuple(input.shape[2:]) if geo.symmetric else geo.padded_size
            grad_x = _empty_like_layout(input, (n, input.shape[1], *fold_size), transposed)
            w_t = w.transpose(1, 2)  # (G, K, O/G)

        strategy = ctx.strategy
        for chunk in strategy.batch_chunks(n, geo.column_bytes(input.element_size())):
            dy_chunk = dy[chunk]  # (Nc, G, O/G, L)
            if need_weight:
                cols = geo.columns(x[chunk])
                cols = cols.view(cols.shape[0], g, -1, ho * wo)  # (Nc, G, K, L)
                # A 1x1 layer in NHWC lays dy and x out as (Nc*L, O) and (Nc*L, C) rows: one product.
                _accumulate_weight_grad(grad_w, dy_chunk, cols, one_product=strategy.one_product or transposed)
            if need_input and geo.is_pointwise:
                # dx = W^T @ dy is a 1x1 convolution's whole input gradient: no fold.
                _matmul_into(_group_view(grad_x, g)[chunk], w_t, dy_chunk, transposed)  # (Nc, G, C/G, L)
            elif need_input:
                dcols = torch.matmul(w_t, dy_chunk)  # (Nc, G, K, L)
                grad_x[chunk] = geo.fold(dcols.view(dcols.shape[0], -1, ho * wo), fold_size)

        if need_weight:
            grad_weight = grad_w.view_as(weight)
        if need_input:
            if not geo.symmetric:
                top, bottom, left, right = geo.pads
                grad_x = grad_x[:, :, top:grad_x.shape[2] - bottom, left:grad_x.shape[3] - right]
            if nhwc and not transposed:
                grad_x = grad_x.contiguous(memory_format=torch.channels_last)
            grad_input = grad_x
        return grad_input, grad_weight, grad_bias, None, None, None, None


def custom_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """`torch.nn.functional.conv2d`, computed with CustomConv2DFunction.

    Takes batched (N, C, H, W) or unbatched (C, H, W) input, and padding as an int, a pair,
    'valid' or 'same'. Under autocast it runs in the autocast dtype, as F.conv2d does.
    """
    if isinstance(input, torch.Tensor) and torch.is_autocast_enabled(input.device.type):
        # Cast before the dtype check, as autocast does for F.conv2d: inside a network a layer gets
        # the previous layer's fp16/bf16 output while its own weight stays float32.
        device_type = input.device.type
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return custom_conv2d(_autocast_to(input, dtype), _autocast_to(weight, dtype),
                                 _autocast_to(bias, dtype), stride, padding, dilation, groups)
    # (C, H, W) -> (1, C, H, W) and back; CustomConv2DFunction checks every argument.
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    output = CustomConv2DFunction.apply(input.unsqueeze(0) if unbatched else input, weight, bias, stride, padding,
                                        dilation, groups)
    return output.squeeze(0) if unbatched else output


class CustomConv2d(nn.Conv2d):
    """A drop-in for nn.Conv2d whose forward is custom_conv2d.

    Subclassing nn.Conv2d gives exactly its constructor, parameter names and shapes, default
    initialisation and padding modes, so one state_dict loads into either and the outputs match.
    """

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            # Same as nn.Conv2d: pad explicitly in the requested mode, then convolve unpadded.
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return custom_conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return custom_conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


# Helpers of Part I: argument checks, the convolution's geometry, the chunking strategy.


def _check_tensors(input, weight, bias):
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kh, kw), got {tuple(weight.shape)}")
    if input.dtype != weight.dtype:
        raise TypeError(f"input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if input.device != weight.device:
        raise ValueError(f"input is on {input.device} but weight is on {weight.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        if bias.dtype != weight.dtype:
            raise TypeError(f"bias dtype {bias.dtype} and weight dtype {weight.dtype} differ")


def _int_pair(value, name):
    """An int or a pair of ints -> (int, int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


class _Geometry:
    """The resolved arguments of one convolution: everything but the tensors.

    pads = (top, bottom, left, right); only 'same' with an even kernel makes them asymmetric.
    """

    def __init__(self, input_shape, weight_shape, stride, padding, dilation, groups):
        n, c, h, w = input_shape
        out_channels, c_per_group, kh, kw = weight_shape
        self.stride = _int_pair(stride, "stride")
        self.dilation = _int_pair(dilation, "dilation")
        if min(self.stride) < 1:
            raise ValueError(f"stride must be at least 1, got {stride!r}")
        if min(self.dilation) < 1:
            raise ValueError(f"dilation must be at least 1, got {dilation!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if c % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide both in_channels={c} and out_channels={out_channels}"
            )
        if c_per_group * groups != c:
            raise ValueError(
                f"input has {c} channels but weight {tuple(weight_shape)} with groups={groups} "
                f"expects {c_per_group * groups}"
            )
        self.pads = self._resolve_padding(padding, (kh, kw))
        self.in_channels = c
        self.groups = groups
        self.kernel_size = (kh, kw)
        padded_h = h + self.pads[0] + self.pads[1]
        padded_w = w + self.pads[2] + self.pads[3]
        span_h = self.dilation[0] * (kh - 1) + 1
        span_w = self.dilation[1] * (kw - 1) + 1
        if span_h > padded_h or span_w > padded_w:
            raise ValueError(
                f"kernel {kh}x{kw} (dilated extent {span_h}x{span_w}) is larger than the padded "
                f"input {padded_h}x{padded_w}"
            )
        self.padded_size = (padded_h, padded_w)
        self.out_size = (
            (padded_h - span_h) // self.stride[0] + 1,
            (padded_w - span_w) // self.stride[1] + 1,
        )

    def _resolve_padding(self, padding, kernel_size):
        if isinstance(padding, str):
            if padding not in _PADDING_STRINGS:
                raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
            if padding == "valid":
                return (0, 0, 0, 0)
            if self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {self.stride}")
            # Like F.conv2d: the total d*(k-1) is split evenly, the odd pixel going to the end.
            pads = []
            for k, d in zip(kernel_size, self.dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        ph, pw = _int_pair(padding, "padding")
        if ph < 0 or pw < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        return (ph, ph, pw, pw)

    @property
    def symmetric(self):
        top, bottom, left, right = self.pads
        return top == bottom and left == right

    @property
    def is_pointwise(self):
        """A 1x1 kernel at stride 1 with no padding is a plain matrix product: no unfold needed."""
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self.pads == (0, 0, 0, 0)

    def pad(self, x):
        """Asymmetric padding is applied explicitly; symmetric padding is left to unfold/fold."""
        if self.symmetric:
            return x
        top, bottom, left, right = self.pads
        return F.pad(x, (left, right, top, bottom))

    @property
    def fold_padding(self):
        return (self.pads[0], self.pads[2]) if self.symmetric else (0, 0)

    def columns(self, x):
        """(Nc, C, H, W) -> (Nc, C*kh*kw, L). `x` is already padded if the padding is asymmetric."""
        if self.is_pointwise:
            return x.reshape(x.shape[0], x.shape[1], -1)
        return F.unfold(x, self.kernel_size, self.dilation, self.fold_padding, self.stride)

    def fold(self, cols, size):
        """(Nc, C*kh*kw, L) -> (Nc, C, *size): each column summed back onto its receptive field."""
        return F.fold(cols, size, self.kernel_size, self.dilation, self.fold_padding, self.stride)

    def column_bytes(self, element_size):
        """Bytes of one sample's column matrix (C*kh*kw, L)."""
        kh, kw = self.kernel_size
        ho, wo = self.out_size
        return self.in_channels * kh * kw * ho * wo * element_size


class _Strategy:
    """How one call runs: the column bytes per chunk and the weight-gradient layout."""

    def __init__(self, device):
        name = CONV_STRATEGY or ("cpu" if device.type == "cpu" else "accelerator")
        if name not in CONV_STRATEGIES:
            raise ValueError(f"CONV_STRATEGY must be None or one of {CONV_STRATEGIES}, got {name!r}")
        self.name = name
        # Read at each call, not at import, so that a benchmark or test may set the budgets.
        self.chunk_bytes = CHUNK_BYTES if name == "cpu" else ACCELERATOR_CHUNK_BYTES
        self.one_product = name == "accelerator"

    def batch_chunks(self, batch_size, sample_bytes):
        """Slices of the batch whose column matrices hold about chunk_bytes each (one sample at least)."""
        step = max(1, self.chunk_bytes // max(1, sample_bytes))
        return [slice(start, min(start + step, batch_size)) for start in range(0, batch_size, step)]


def _is_channels_last(t):
    """A 4-D tensor stored NHWC (and not also NCHW, as when C == 1 or H == W == 1)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _empty_like_layout(t, shape, nhwc):
    """An uninitialised tensor of `shape` with t's dtype and device, NHWC when `nhwc`, else NCHW."""
    memory_format = torch.channels_last if nhwc else torch.contiguous_format
    return torch.empty(shape, dtype=t.dtype, device=t.device, memory_format=memory_format)


def _group_view(t, groups):
    """(N, O, H, W) -> (N, G, O/G, H*W): a view of an NCHW or NHWC tensor (a copy of any other)."""
    n, o, h, w = t.shape
    if _is_channels_last(t):
        return t.permute(0, 2, 3, 1).view(n, h * w, groups, o // groups).permute(0, 2, 3, 1)
    return t.contiguous().view(n, groups, o // groups, h * w)


def _matmul_into(out, a, b, nhwc):
    """out (Nc, G, M, L) = a (G, M, K) @ b (Nc, G, K, L), written in place. An NHWC `out` (groups=1)
    holds each position's M values together, so the transpose b^T @ a^T (Nc, L, M) is computed: gemm
    reads the transposed operands in place, the result needs no copy, and when b^T's rows are
    contiguous too (a 1x1 layer's NHWC input) the whole chunk is one (Nc*L, K) @ (K, M) product."""
    if nhwc:
        torch.matmul(b[:, 0].transpose(1, 2), a[0].t(), out=out[:, 0].transpose(1, 2))
    else:
        torch.matmul(a, b, out=out)


def _accumulate_weight_grad(grad_w, dy, cols, one_product):
    """grad_w (G, O/G, K) += sum over the chunk of dy (Nc, G, O/G, L) @ cols^T (Nc, G, L, K).

    one_product=True lays the chunk out as (G, O/G, Nc*L) @ (G, Nc*L, K), one product per group, at
    the price of copying the columns: right for a GPU, where launches are the cost. On the CPU the
    per-sample products read cols^T in place (gemm handles the transpose) and measured as fast.
    """
    if one_product:
        g, og, k = grad_w.shape
        dy_rows = dy.permute(1, 2, 0, 3).reshape(g, og, -1)  # (G, O/G, Nc*L)
        cols_rows = cols.permute(1, 0, 3, 2).reshape(g, -1, k)  # (G, Nc*L, K)
        grad_w.baddbmm_(dy_rows, cols_rows)
        return
    for sample_dy, sample_cols in zip(dy, cols):
        for group in range(grad_w.shape[0]):
            grad_w[group].addmm_(sample_dy[group], sample_cols[group].t())


def _autocast_to(tensor, dtype):
    """A floating-point tensor in `dtype`; anything else unchanged, for _check_tensors to judge."""
    if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
        return tensor.to(dtype)
    return tensor


# ---------------------------------------------------------------------------------------------------
# Part II: networks
# ---------------------------------------------------------------------------------------------------


def kaiming_init_(model):
    """Kaiming-normal (fan_out, ReLU) weights and zero biases for every conv; N(0, 0.01) for linear.

    With PyTorch's default init SimpleNet sat at chance for epochs on MiniPlaces; with this it
    learns from the first epoch (see the README).
    """
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


class SimpleNet(nn.Module):
    """The Spring 2019 starter's network: 1,368,676 parameters, about 5.5 MB."""

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.features = nn.Sequential(
            # 3 x 128 x 128 -> 64 x 64 x 64 -> 64 x 32 x 32
            conv_op(3, 64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            # bottleneck 64 -> 64 -> 64 -> 256, then 256 x 16 x 16
            conv_op(64, 64, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(64, 64, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(64, 256, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            # bottleneck 256 -> 64 -> 64 -> 256, then 256 x 8 x 8
            conv_op(256, 64, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(64, 64, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(64, 256, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            # 512 x 8 x 8
            conv_op(256, 512, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        self.reset_parameters()

    def reset_parameters(self):
        kaiming_init_(self)

    def forward(self, x):
        x = self.features(x)  # (N, 512, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (N, 512)
        return self.fc(x)  # (N, num_classes)


# --- The team's networks --------------------------------------------------------------------------
#
# Rebuilt from the code that trained the report's figures (../shared/team/README.md lists the facts):
# the same layers in the same order, the same state-dict names and shapes, so the team's checkpoints
# load strictly. The team trained them with PyTorch's default initialisation (main.py --init pytorch);
# the constructors apply our Kaiming init, as every network here does.


def _conv_bn_relu(conv_op, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False):
    """[conv, BN, ReLU]. Our designs drop the conv bias (batch norm's beta takes its place); the
    team's networks kept it (bias=True), and their checkpoints hold it."""
    return [
        conv_op(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def _bottleneck(conv_op, in_channels):
    """SimpleNet's bottleneck without its last ReLU: conv 1x1 in -> 64, ReLU, conv 3x3 64 -> 64, ReLU,
    conv 1x1 64 -> 256 (all with bias)."""
    return [
        conv_op(in_channels, 64, kernel_size=1),
        nn.ReLU(inplace=True),
        conv_op(64, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        conv_op(64, 256, kernel_size=1),
    ]


def _pool():
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


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
        *_conv_bn_relu(conv_op, in_channels, mid_channels, kernel_size=1, bias=True),
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
        self.conv_block1 = nn.Sequential(*_conv_bn_relu(conv_op, 3, 64, 7, stride=2, padding=3, bias=True))
        self.maxpool = _pool()
        self.residual_block1 = _residual_branch(conv_op, 64, 64, 64)  # identity shortcut
        self.residual_block2 = _residual_branch(conv_op, 64, 64, 256)
        self.downsample = _conv3x3_shortcut(conv_op, 64, 256)
        self.residual_block3 = _residual_branch(conv_op, 256, 64, 64)
        self.downsample2 = _conv3x3_shortcut(conv_op, 256, 64)
        self.conv_block2 = nn.Sequential(*_conv_bn_relu(conv_op, 256, 512, 3, padding=1, bias=True))
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
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = _conv3x3_shortcut(conv_op, in_channels, out_channels, stride)

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
        self.b1 = nn.Sequential(*_conv_bn_relu(conv_op, in_planes, n1x1, 1, bias=True))
        self.b2 = nn.Sequential(
            *_conv_bn_relu(conv_op, in_planes, n3x3red, 1, bias=True),
            *_conv_bn_relu(conv_op, n3x3red, n3x3, 3, padding=1, bias=True),
        )
        self.b3 = nn.Sequential(
            *_conv_bn_relu(conv_op, in_planes, n5x5red, 1, bias=True),
            *_conv_bn_relu(conv_op, n5x5red, n5x5, 3, padding=1, bias=True),
            *_conv_bn_relu(conv_op, n5x5, n5x5, 3, padding=1, bias=True),
        )
        self.b4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            *_conv_bn_relu(conv_op, in_planes, pool_planes, 1, bias=True),
        )

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class GoogLeNet(nn.Module):
    """The team's GoogLeNet (report Section 3: 35.99% val top-1 when stopped), a tiny inception net.

    pre_layers (conv 3x3 3 -> 12, BN, ReLU), inception a3, b3, max pool, a4-e4, max pool, a5, b5,
    global average pool, linear 64 -> num_classes: 32,311 parameters. The inception stages run at
    H, H/2 and H/4.
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.pre_layers = nn.Sequential(*_conv_bn_relu(conv_op, 3, 12, 3, padding=1, bias=True))
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


# --- Our own designs ------------------------------------------------------------------------------
#
# Not the team's networks: written from the report's prose before the team's code was at hand, then
# measured (the README's tables). They are the base for beating the report: --arch customnet2_bn,
# customnet_res, resnet18_half, googlenet_half.


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
    """(low, high), each (1, 3, 1, 1): the normalized values of pixel 0 and pixel 1 per channel.

    Computed as torchvision's Normalize computes them, (0 - mean) / std in `like`'s dtype, so a
    normalized black or white pixel is exactly on the bound.
    """
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


def _total(loss):
    """A loss_fn with reduction='none' gives one loss per image; their sum has the same gradients."""
    return loss.sum() if loss.dim() > 0 else loss


def _predicted_label(logits):
    return logits.argmax(dim=1)  # (N,)


def _least_confident_label(logits):
    return logits.argmin(dim=1)  # (N,)


def _input_gradient(model, loss_fn, x, labels=None, pick=None):
    """Gradient of loss_fn(model(x), labels) with respect to x alone, with no graph left behind.

    When `labels` is None they are picked from the logits of this very forward pass, `pick(logits)`,
    so choosing the label costs no extra pass. Returns (grad like x, labels (N,)).
    """
    # inference_mode(False) and enable_grad() let this run inside torch.no_grad() or inference_mode;
    # the clone is a normal tensor even when x was made under inference_mode, and it is ours to flag.
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)  # (N, num_classes)
        if labels is None:
            labels = pick(logits.detach())  # (N,)
        (grad,) = torch.autograd.grad(_total(loss_fn(logits, labels)), x)
    return grad, labels


def _training_flags(model):
    return [(module, module.training) for module in model.modules()]


def _restore_training_flags(flags):
    # Per module, not model.train(flag): a submodule deliberately left in eval (a frozen batch norm) stays so.
    for module, training in flags:
        module.training = training


@contextlib.contextmanager
def _eval_mode(model):
    """Run `model` in eval mode inside the block; every module's own mode is restored on the way out."""
    flags = _training_flags(model)
    model.eval()
    try:
        yield model
    finally:
        _restore_training_flags(flags)


class GradAttention:
    """Gradient saliency maps (Simonyan et al. 2014): the pixels where a small change moves the loss most."""

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn

    def explain(self, model, input):
        """(N, 3, H, W) normalized images -> (N, 1, H, W) non-negative saliency.

        The absolute gradient of the loss of the model's predicted label, maximum over the colour
        channels. With a mean-reduced loss every map is scaled by 1/N; vis_grad_attention thresholds
        relative to the mean, so the scale does not matter there. The network runs in eval mode, so the
        same images give the same map; the input, the parameters' .grad and requires_grad flags, the
        buffers (batch-norm statistics) and every module's mode are left as they were.
        """
        _check_images(input)
        with _eval_mode(model):
            grad, _ = _input_gradient(model, self.loss_fn, input, pick=_predicted_label)
        return grad.abs().amax(dim=1, keepdim=True)  # (N, 1, H, W)


class PGDAttack:
    """Projected gradient descent in the L-inf ball (Madry et al. 2018).

    targeted=True (the original's attack): lower the loss of a target label, by default the label
    the model is least confident of. targeted=False: raise the loss of the true label, which
    perturb() then needs. random_start begins from a uniform point of the ball instead of the input.
    """

    def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1, targeted=True, random_start=False):
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        if not step_size > 0:  # also rejects NaN
            raise ValueError(f"step_size must be > 0, got {step_size!r}")
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self.loss_fn = loss_fn
        self.num_steps = num_steps
        self.step_size = float(step_size)
        self.epsilon = float(epsilon)
        self.targeted = bool(targeted)
        self.random_start = bool(random_start)

    def __repr__(self):
        return (f"PGDAttack(num_steps={self.num_steps}, step_size={self.step_size}, epsilon={self.epsilon}, "
                f"targeted={self.targeted}, random_start={self.random_start})")

    def perturb(self, model, input, target=None):
        """(N, 3, H, W) normalized images -> adversarial images of the same shape, dtype and device, detached.

        target: (N,) labels. Targeted: the labels to move towards (default: each image's least
        confident label, taken from the first step's forward pass). Untargeted: the true labels
        (required). Costs num_steps forward and backward passes, with the network in eval mode (without
        random_start, the same images give the same result); the input, the parameters' .grad and
        requires_grad flags, the buffers (batch-norm statistics) and every module's mode are left as
        they were.
        """
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

    def _bounds(self, clean):
        """The L-inf ball around `clean`, projected onto the valid image range: (low, high), each like clean.

        Clamping to [low, high] is the exact projection onto ball intersected with range, since both
        are boxes. Each bound is clamped into the range, so the range wins for an input that is not
        a valid image (only there can the result lie further than epsilon from the input).
        """
        range_low, range_high = valid_image_range(clean)
        low = torch.clamp(clean - self.epsilon, range_low, range_high)
        high = torch.clamp(clean + self.epsilon, range_low, range_high)
        return low, high


def vis_grad_attention(input, vis_alpha=2.0, n_rows=10, vis_output=None):
    """(N, 3, H, W) normalized images [+ (N, 1, H, W) saliency] -> one (3, H', W') picture in [0, 1], on the CPU.

    The de-normalized images tiled by make_grid, n_rows images per row (2-pixel borders). Given a
    saliency map, it is tiled the same way and its pixels above vis_alpha times the maps' mean are
    painted into the red channel.
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
