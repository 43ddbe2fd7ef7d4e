"""Part I's held cases: a grid of convolutions the grader hands the child, and F.conv2d's answers.

Graded cases stay within what the 2019 assignment asked (square kernels, one stride and one padding, a
bias given), from the simplest up, so the first that fails names the smallest failing case; the
assignment's own case (test_conv.py's) is among them. Cases beyond 2019 (dilation, groups, no bias,
rectangular kernels) go through custom_conv2d with F.conv2d's arguments and are reported at 0 points.

Each quantity's tolerance comes from the reference's own float error: ten times the largest difference
between F.conv2d in float32 and in float64 on the same case (at least 1e-9). A float64 answer differs
by ~1e-14, a float32 one stays within it, a wrong one is off by ~1e-1.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..conv_check import ASSIGNMENT_CASE, ConvCase

QUANTITIES = ("output", "grad_input", "grad_weight", "grad_bias")
TOLERANCE_FACTOR = 10.0
TOLERANCE_FLOOR = 1e-9


@dataclass(frozen=True)
class HeldCase:
    id: str
    case: ConvCase
    via: str = "function"  # "function": CustomConv2DFunction.apply; "functional": custom_conv2d; "module"
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    kernel_w: int = 0  # a rectangular kernel's width (0: square)
    extra: bool = False  # beyond the 2019 assignment: information only

    def describe(self):
        text = self.case.describe()
        if self.extra:
            text += (f", dilation {self.dilation}" if self.dilation != 1 else "") + \
                    (f", groups {self.groups}" if self.groups != 1 else "") + \
                    ("" if self.bias else ", no bias") + \
                    (f", kernel {self.case.kernel}x{self.kernel_w}" if self.kernel_w else "")
        return text

    def task(self):
        return {"id": self.id, "via": self.via, "stride": self.case.stride, "padding": self.case.padding,
                "dilation": self.dilation, "groups": self.groups, "bias": self.bias, "extra": self.extra}


GRID = (  # from the simplest up: kernel sizes, channels, padding, strides, non-square inputs, batch 1
    ConvCase(1, 1, 4, 4, 1, 1),
    ConvCase(1, 1, 5, 5, 1, 3),
    ConvCase(2, 2, 5, 5, 3, 3, padding=1),
    ConvCase(2, 2, 7, 7, 3, 3, stride=2),
    ConvCase(1, 2, 7, 7, 3, 3, stride=2, padding=1),
    ConvCase(3, 1, 6, 6, 8, 2, stride=2),
    ConvCase(1, 3, 8, 8, 2, 3, stride=3, padding=1),
    ConvCase(2, 3, 6, 9, 4, 3, stride=2, padding=1),
    ConvCase(1, 5, 7, 11, 6, 3),
    ConvCase(2, 3, 9, 9, 4, 5, padding=2),
    ASSIGNMENT_CASE,
)
ASSIGNMENT_ID = f"f{len(GRID) - 1}"


def held_cases():
    cases = [HeldCase(f"f{i}", case) for i, case in enumerate(GRID)]
    cases += [HeldCase(f"m{i}", GRID[i], via="module") for i in (2, 4, 7)]
    cases.append(HeldCase("m_assignment", ASSIGNMENT_CASE, via="module"))
    cases += [
        HeldCase("x_dilation", ConvCase(1, 2, 9, 9, 3, 3, padding=2), via="functional", dilation=2, extra=True),
        HeldCase("x_groups", ConvCase(1, 4, 6, 6, 4, 3, padding=1), via="functional", groups=2, extra=True),
        HeldCase("x_nobias", ConvCase(1, 2, 6, 6, 3, 3, padding=1), via="functional", bias=False, extra=True),
        HeldCase("x_rect", ConvCase(1, 2, 7, 9, 3, 3, padding=1), via="functional", kernel_w=5, extra=True),
    ]
    return cases


def make_inputs(cases, seed=0):
    """{f"{id}.x|w|b|g": tensor} in float64: the input, weight, bias and upstream gradient of each case."""
    tensors = {}
    for index, held in enumerate(cases):
        c = held.case
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        kernel_w = held.kernel_w or c.kernel
        x = torch.randn(c.batch, c.in_channels, c.height, c.width, dtype=torch.float64, generator=generator)
        w = torch.randn(c.out_channels, c.in_channels // held.groups, c.kernel, kernel_w, dtype=torch.float64,
                        generator=generator)
        b = torch.randn(c.out_channels, dtype=torch.float64, generator=generator)
        out = F.conv2d(x, w, b, c.stride, c.padding, held.dilation, held.groups)
        g = torch.randn(out.shape, dtype=torch.float64, generator=generator)
        tensors.update({f"{held.id}.x": x, f"{held.id}.w": w, f"{held.id}.b": b, f"{held.id}.g": g})
    return tensors


def answers(held, inputs):
    """({quantity: F.conv2d's value in float64}, {quantity: tolerance}) for one case."""
    results = {}
    for dtype in (torch.float64, torch.float32):
        x, w, b = (inputs[f"{held.id}.{n}"].to(dtype).requires_grad_(True) for n in "xwb")
        g = inputs[f"{held.id}.g"].to(dtype)
        c = held.case
        out = F.conv2d(x, w, b if held.bias else None, c.stride, c.padding, held.dilation, held.groups)
        grads = torch.autograd.grad(out, (x, w, b) if held.bias else (x, w), g)
        results[dtype] = dict(zip(QUANTITIES, (out.detach(), *grads)))
    exact = results[torch.float64]
    tolerance = {q: max(TOLERANCE_FACTOR * (results[torch.float32][q].double() - exact[q]).abs().max().item(),
                        TOLERANCE_FLOOR) for q in exact}
    return exact, tolerance


def compare(held, exact, tolerance, found):
    """Lines saying what differs ([] when all agree): found maps quantities to the child's tensors."""
    lines = []
    for quantity, wanted in exact.items():
        got = found.get(quantity)
        if got is None:
            lines.append(f"{quantity} is not computed")
        elif type(got) is not torch.Tensor or got.shape != wanted.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            lines.append(f"{quantity} has shape {shape}, F.conv2d's {tuple(wanted.shape)}")
        else:
            diff = (got.double() - wanted).abs().max().item()
            if not diff <= tolerance[quantity]:  # NaN fails too
                lines.append(f"{quantity} differs by up to {diff:.1e}")
    return lines
