"""What differs between a student's convolution and PyTorch's, and by how much.

test_conv.py says whether a check passed; this module says why one failed: for each of the output
and the gradients of the input, weight and bias, the largest absolute difference from F.conv2d's
(float64, the same upstream gradient for both), on the assignment's case and, to help find the
bug, on the smallest of a ladder of simpler cases that fails too. E.g.

    grad_weight differs from F.conv2d's by up to 3.7e+00 (input 2x3x12x12, 64 filters 7x7, stride 2, padding 3)

`conv(input, weight, bias, stride, padding)` is any function with F.conv2d's positional arguments
(CustomConv2DFunction.apply, custom_conv2d).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import student

QUANTITIES = ("output", "grad_input", "grad_weight", "grad_bias")
ATOL = 1e-5  # test_conv.py's tolerance in float64; a right answer differs by ~1e-14


@dataclass(frozen=True)
class ConvCase:
    """One convolution: a (batch, in_channels, height, width) input and out_channels square filters."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0

    def describe(self):
        return (f"input {self.batch}x{self.in_channels}x{self.height}x{self.width}, {self.out_channels} "
                f"filter{'s' if self.out_channels > 1 else ''} {self.kernel}x{self.kernel}, "
                f"stride {self.stride}, padding {self.padding}")

    def tensors(self, device, seed=0):
        """(input, weight, bias, upstream gradient) in float64, the first three requiring gradients."""
        generator = torch.Generator().manual_seed(seed)

        def randn(*shape, grad=True):
            t = torch.randn(*shape, dtype=torch.float64, generator=generator).to(device)
            return t.requires_grad_(grad)

        x = randn(self.batch, self.in_channels, self.height, self.width)
        w = randn(self.out_channels, self.in_channels, self.kernel, self.kernel)
        b = randn(self.out_channels)
        out_h = (self.height + 2 * self.padding - self.kernel) // self.stride + 1
        out_w = (self.width + 2 * self.padding - self.kernel) // self.stride + 1
        return x, w, b, randn(self.batch, self.out_channels, out_h, out_w, grad=False)


# The assignment's case (test_conv.py): 2 x 3 x 12 x 12 input, 64 filters of 7 x 7, stride 2, padding 3.
ASSIGNMENT_CASE = ConvCase(2, 3, 12, 12, 64, 7, stride=2, padding=3)
# Simplest first: one feature at a time (a 3x3 kernel, several channels, padding, stride, batch, a
# rectangular input), so the first that fails points at what the code gets wrong.
SIMPLER_CASES = (
    ConvCase(1, 1, 4, 4, 1, 1),
    ConvCase(1, 1, 5, 5, 1, 3),
    ConvCase(1, 2, 5, 5, 3, 3),
    ConvCase(1, 2, 5, 5, 3, 3, padding=1),
    ConvCase(1, 2, 7, 7, 3, 3, stride=2),
    ConvCase(1, 2, 7, 7, 3, 3, stride=2, padding=1),
    ConvCase(2, 2, 5, 5, 3, 3, padding=1),
    ConvCase(2, 3, 6, 9, 4, 3, stride=2, padding=1),
)


def differences(conv, case, device, seed=0):
    """{quantity: largest |difference| from F.conv2d's, or a string saying what is wrong instead}.

    The student's forward and backward run once; an exception inside them propagates.
    """
    x, w, b, grad_output = case.tensors(device, seed)
    reference = F.conv2d(x, w, b, case.stride, case.padding)
    expected = dict(zip(QUANTITIES, (reference, *torch.autograd.grad(reference, (x, w, b), grad_output))))
    output = conv(x, w, b, case.stride, case.padding)
    if not isinstance(output, torch.Tensor):
        return {"output": f"is a {type(output).__name__}, not a tensor"}
    if output.shape != reference.shape:
        return {"output": f"has shape {tuple(output.shape)}, F.conv2d's {tuple(reference.shape)}"}
    found = {"output": output}
    if output.requires_grad:
        grads = torch.autograd.grad(output, (x, w, b), grad_output, allow_unused=True)
        found.update(zip(QUANTITIES[1:], grads))
    return {name: _difference(found.get(name), expected[name]) for name in QUANTITIES}


def _difference(found, expected):
    if found is None:
        return "is not computed (None)"
    if found.shape != expected.shape:
        return f"has shape {tuple(found.shape)}, F.conv2d's {tuple(expected.shape)}"
    largest = (found.detach().double() - expected).abs().max().item()
    return math.inf if math.isnan(largest) else largest


def failures(diffs, atol=ATOL):
    """The quantities of `diffs` that are wrong: a message, or a difference above atol."""
    return {name: value for name, value in diffs.items() if isinstance(value, str) or value > atol}


def describe_failures(diffs, case, atol=ATOL):
    """One line per wrong quantity, e.g. 'grad_weight differs from F.conv2d's by up to 3.7e+00 (input ...)'."""
    lines = []
    for name, value in failures(diffs, atol).items():
        what = value if isinstance(value, str) else f"differs from F.conv2d's by up to {value:.1e}"
        lines.append(f"{name} {what} ({case.describe()})")
    return lines


def smallest_failing_case(conv, device, atol=ATOL, cases=SIMPLER_CASES):
    """(case, its failing quantities' lines) for the first of `cases` that fails, or None.

    A case whose forward or backward raises fails too, its line naming the exception's type.
    """
    for case in cases:
        try:
            lines = describe_failures(differences(conv, case, device), case, atol)
        except student.RAISES as exc:  # the student's code may raise anything: that case fails
            lines = [f"raises {type(exc).__name__} ({case.describe()})"]
        if lines:
            return case, lines
    return None


def diagnose(conv, device, atol=ATOL):
    """The lines that say what differs on the assignment's case and, when a simpler case fails too,
    the smallest such case; [] when nothing differs."""
    lines = describe_failures(differences(conv, ASSIGNMENT_CASE, device), ASSIGNMENT_CASE, atol)
    smallest = smallest_failing_case(conv, device, atol)
    if smallest is not None:
        lines += [f"the smallest failing case: {line}" for line in smallest[1]]
    return lines


def module_as_function(module_class):
    """conv(input, weight, bias, stride, padding) computed by a `module_class` layer (CustomConv2d) that
    holds weight and bias, so that the module is checked like the function."""
    def conv(input_feats, weight, bias, stride, padding):
        out_channels, in_channels, kernel, _ = weight.shape
        layer = module_class(in_channels, out_channels, kernel, stride=stride, padding=padding)
        layer = layer.to(weight.device, weight.dtype)
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (input_feats,))
    return conv
