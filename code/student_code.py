"""The parts of Assignment 2 that students write: a convolution built from unfold/fold, the networks,
gradient attention maps and the PGD attack.

Sections:
    Part I   convolution with unfold / fold  (CustomConv2DFunction, custom_conv2d, CustomConv2d)
    Part II  networks                        (SimpleNet, ...; default_model)
    Part III attention and adversarial samples
"""
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
# Two choices keep it close to PyTorch's own convolution in time and memory:
# - the batch is processed in chunks whose column matrix fits in cache between unfold and the
#   matrix product, so the k^2-inflated columns never exist for the whole batch at once;
# - backward keeps the input, not the columns, and recomputes the columns of each chunk.

# Bytes of column matrix per chunk. The CPU's L2 is 1 MiB a core and its L3 32 MiB; measured with
# bench/bench_conv.py, see the README.
CHUNK_BYTES = 4 * 2**20

_PADDING_STRINGS = ("valid", "same")


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
        if self.is_pointwise:
            return cols.view(cols.shape[0], cols.shape[1], *size)
        return F.fold(cols, size, self.kernel_size, self.dilation, self.fold_padding, self.stride)


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


def _batch_chunks(batch_size, sample_bytes):
    """Slices of the batch whose column matrices hold about CHUNK_BYTES each."""
    step = max(1, CHUNK_BYTES // max(1, sample_bytes))
    return [slice(start, min(start + step, batch_size)) for start in range(0, batch_size, step)]


class CustomConv2DFunction(Function):
    """2-D convolution with unfold/fold and matrix products only: no conv kernels inside."""

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """input (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,) or None -> (N, O, Ho, Wo)."""
        _check_tensors(input, weight, bias)
        if input.dim() != 4:
            raise ValueError(f"input must be 4-D (N, C, H, W), got {tuple(input.shape)}")
        geo = _Geometry(input.shape, weight.shape, stride, padding, dilation, groups)
        n, out_channels, g = input.shape[0], weight.shape[0], geo.groups
        ho, wo = geo.out_size
        w = weight.reshape(g, out_channels // g, -1)  # (G, O/G, K)
        x = geo.pad(input)

        # Allocated whole and written chunk by chunk: the output is a fresh tensor, never a view,
        # so an in-place op (ReLU(inplace=True)) may follow.
        output = input.new_empty((n, out_channels, ho, wo))
        out_groups = output.view(n, g, out_channels // g, ho * wo)  # (N, G, O/G, L)
        sample_bytes = weight[0].numel() * g * ho * wo * input.element_size()
        for chunk in _batch_chunks(n, sample_bytes):
            cols = geo.columns(x[chunk])  # (Nc, C*kh*kw, L)
            cols = cols.view(cols.shape[0], g, -1, ho * wo)  # (Nc, G, K, L)
            torch.matmul(w, cols, out=out_groups[chunk])  # (Nc, G, O/G, L)
        if bias is not None:
            output += bias.view(1, -1, 1, 1)

        ctx.geometry = geo
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
        dy = grad_output.contiguous().view(n, g, out_channels // g, ho * wo)  # (N, G, O/G, L)

        grad_input = grad_weight = grad_bias = None
        if need_bias and ctx.has_bias:
            grad_bias = grad_output.sum(dim=(0, 2, 3))
        if need_weight:
            x = geo.pad(input)
            grad_w = torch.zeros_like(w)  # (G, O/G, K)
        if need_input:
            grad_x = input.new_empty((n, input.shape[1], *geo.padded_size)) if not geo.symmetric \
                else torch.empty_like(input, memory_format=torch.contiguous_format)
            w_t = w.transpose(1, 2)  # (G, K, O/G)

        sample_bytes = weight[0].numel() * g * ho * wo * input.element_size()
        for chunk in _batch_chunks(n, sample_bytes):
            dy_chunk = dy[chunk]  # (Nc, G, O/G, L)
            if need_weight:
                cols = geo.columns(x[chunk])
                cols = cols.view(cols.shape[0], g, -1, ho * wo)  # (Nc, G, K, L)
                _accumulate_weight_grad(grad_w, dy_chunk, cols)
            if need_input:
                dcols = torch.matmul(w_t, dy_chunk)  # (Nc, G, K, L)
                fold_size = grad_x.shape[2:] if geo.symmetric else geo.padded_size
                grad_x[chunk] = geo.fold(dcols.view(dcols.shape[0], -1, ho * wo), fold_size)

        if need_weight:
            grad_weight = grad_w.view_as(weight)
        if need_input:
            if not geo.symmetric:
                top, bottom, left, right = geo.pads
                grad_x = grad_x[:, :, top:grad_x.shape[2] - bottom, left:grad_x.shape[3] - right]
            grad_input = grad_x
        return grad_input, grad_weight, grad_bias, None, None, None, None


def _accumulate_weight_grad(grad_w, dy, cols):
    """grad_w (G, O/G, K) += sum over the chunk of dy (Nc, G, O/G, L) @ cols^T (Nc, G, L, K)."""
    for sample_dy, sample_cols in zip(dy, cols):
        for group in range(grad_w.shape[0]):
            grad_w[group].addmm_(sample_dy[group], sample_cols[group].t())


def custom_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """`torch.nn.functional.conv2d`, computed with CustomConv2DFunction.

    Takes batched (N, C, H, W) or unbatched (C, H, W) input, and padding as an int, a pair,
    'valid' or 'same'. Under autocast it runs in the autocast dtype, as F.conv2d does.
    """
    _check_tensors(input, weight, bias)
    if input.dim() not in (3, 4):
        raise ValueError(f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), got {tuple(input.shape)}")
    device_type = input.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return custom_conv2d(
                input.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                stride, padding, dilation, groups,
            )
    if input.dim() == 3:
        return CustomConv2DFunction.apply(
            input.unsqueeze(0), weight, bias, stride, padding, dilation, groups
        ).squeeze(0)
    return CustomConv2DFunction.apply(input, weight, bias, stride, padding, dilation, groups)


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


# --arch name -> constructor(conv_op=nn.Conv2d, num_classes=100); main.py chooses from these.
ARCHS = {
    "simplenet": SimpleNet,
}

default_model = SimpleNet


# ---------------------------------------------------------------------------------------------------
# Part III: attention and adversarial samples
# ---------------------------------------------------------------------------------------------------
