"""The assignment's check of the unfold/fold convolution against PyTorch's.

    python test_conv.py          (from code/)   or   python code/test_conv.py   (from the repo root)

Prints the assignment's lines and exits non-zero when a check fails (the original printed
"All passed!" whatever happened): 1 when a check fails (an exception inside the student's code is
one line naming its file and line, under the check's name; a missing CustomConv2DFunction or
CustomConv2d fails the checks that need it), 4 when student_code.py cannot be imported, 130 when
interrupted. Under a failed check, one line for each of
the output and the input, weight and bias gradients that differs from PyTorch's says by how much,
and, where a simpler case fails too, the smallest such case (harness.conv_check). pytest collects
the three checks too, with the same lines in its assertion message.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import gradcheck

from harness import cli, conv_check, student


def custom_conv2d(*args):
    """The student's CustomConv2DFunction.apply, as the assignment's test calls it."""
    return student.get("CustomConv2DFunction", "test_conv.py").apply(*args)

# The assignment's case: 2 x 3 x 12 x 12 input, 64 filters of 7 x 7, stride 2, padding 3, float64.
STRIDE, PADDING = 2, 3
ATOL = conv_check.ATOL
GRADCHECK_EPS = 1e-4


def pick_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_inputs(device):
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=generator).to(device).requires_grad_()

    return randn(2, 3, 12, 12), randn(64, 3, 7, 7), randn(64)


# Each check returns (passed, lines): the lines say what differs from PyTorch's and by how much
# (harness.conv_check), printed under a failed check and given to pytest's assertion.


def check_fprop(device):
    """The custom forward matches F.conv2d within ATOL."""
    input_feats, weight, bias = make_inputs(device)
    ref_output = F.conv2d(input_feats, weight, bias, STRIDE, PADDING)
    output = custom_conv2d(input_feats, weight, bias, STRIDE, PADDING)
    passed = output.shape == ref_output.shape and bool((output - ref_output).abs().max() < ATOL)
    return passed, [] if passed else conv_check.diagnose(custom_conv2d, device)


def check_bprop(device):
    """The custom backward matches finite differences (gradcheck)."""
    input_feats, weight, bias = make_inputs(device)
    # Finite differences: some 20,000 tiny forward passes. One thread each: on a busy 2-core machine the
    # intra-op pool's spinning made them 10x slower (13 s alone, over 150 s beside two other runs).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        passed = gradcheck(
            custom_conv2d, (input_feats, weight, bias, STRIDE, PADDING),
            eps=GRADCHECK_EPS, atol=ATOL, raise_exception=False,
        )
    finally:
        torch.set_num_threads(threads)
    return passed, [] if passed else conv_check.diagnose(custom_conv2d, device)


def check_module(device):
    """CustomConv2d and nn.Conv2d sharing one state_dict give the same output and gradients."""
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 64, kernel_size=7, stride=STRIDE, padding=PADDING).to(device).double()
    custom_module = student.get("CustomConv2d", "test_conv.py")
    custom = custom_module(3, 64, kernel_size=7, stride=STRIDE, padding=PADDING).to(device).double()
    custom.load_state_dict(reference.state_dict())
    input_feats, _, _ = make_inputs(device)
    ref_output, output = reference(input_feats), custom(input_feats)
    passed = output.shape == ref_output.shape and torch.allclose(output, ref_output, atol=ATOL)
    if passed:
        grad = torch.randn_like(output)
        ref_grads = torch.autograd.grad(ref_output, [input_feats, *reference.parameters()], grad)
        grads = torch.autograd.grad(output, [input_feats, *custom.parameters()], grad)
        passed = all(torch.allclose(a, b, atol=ATOL) for a, b in zip(grads, ref_grads))
    return passed, [] if passed else conv_check.diagnose(conv_check.module_as_function(custom_module), device)


CHECKS = (
    ("Check Fprop ...", "Fprop testing", check_fprop),
    ("Check Bprop ...", "Bprop testing", check_bprop),
    ("Check nn.module wrapper ...", "nn.module wrapper testing", check_module),
)


def main():
    """Entry point; returns the exit code: 0 all passed, 1 a check failed, 4 the student's file cannot
    be imported, 128 + N a signal N (130 Ctrl-C)."""
    return cli.run(run_checks)


def run_checks(argv=None):
    student.load()
    device = pick_device()
    print(f"Using device: {device}")
    failed = 0
    for heading, name, check in CHECKS:
        print(heading)
        try:
            passed, lines = check(device)
        except student.RAISES as exc:  # the student's code may raise anything, sys.exit too: name it and go on
            print(f"{name} failed: {student.describe(exc)}")
            failed += 1
            continue
        print(f"{name} {'passed' if passed else 'failed'}")
        for line in lines:
            print(f"  {line}")
        failed += not passed
    if failed:
        print(f"{failed} of {len(CHECKS)} checks failed.")
        return 1
    print("All passed! End of testing.")
    return 0


# pytest entry points: the same checks, on the same device, with the same detail on failure.
def test_fprop():
    passed, lines = check_fprop(pick_device())
    assert passed, "\n".join(lines)


def test_bprop():
    passed, lines = check_bprop(pick_device())
    assert passed, "\n".join(lines)


def test_module_wrapper():
    passed, lines = check_module(pick_device())
    assert passed, "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
