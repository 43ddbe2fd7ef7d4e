"""test_conv.py says what is wrong: harness.conv_check against F.conv2d, and test_conv.py run on a
copy of code/ whose student_code.py has a typical silent bug (a transposed weight gradient)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness import conv_check

REPO_ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
DIFFERS = r"differs from F\.conv2d's by up to \d\.\de[+-]\d\d"


class TransposedWeightGrad(torch.autograd.Function):
    """F.conv2d with the bug of the issue: dW computed right, then laid out as (K, O) and reshaped."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, w, b, stride, padding)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dx = torch.nn.grad.conv2d_input(x.shape, w, dy, ctx.stride, ctx.padding)
        dw = torch.nn.grad.conv2d_weight(x, w.shape, dy, ctx.stride, ctx.padding)
        return dx, dw.reshape(w.shape[0], -1).t().reshape(w.shape), dy.sum((0, 2, 3)), None, None


def without_bias(x, w, b, stride, padding):
    return F.conv2d(x, w, None, stride, padding)


def test_pytorchs_own_convolution_has_nothing_to_report():
    assert conv_check.diagnose(lambda *args: F.conv2d(*args), CPU) == []


def test_a_transposed_weight_gradient_is_named_with_its_size_and_the_smallest_case():
    lines = conv_check.diagnose(TransposedWeightGrad.apply, CPU)
    assert re.fullmatch(rf"grad_weight {DIFFERS} \(input 2x3x12x12, 64 filters 7x7, stride 2, padding 3\)",
                        lines[0])
    # The simplest cases (one channel and filter, square kernels) transpose to themselves: the first
    # that fails has several input channels and filters.
    assert re.fullmatch(rf"the smallest failing case: grad_weight {DIFFERS} \(input 1x2x5x5, 3 filters 3x3, "
                        r"stride 1, padding 0\)", lines[1])
    assert len(lines) == 2  # the output and the input and bias gradients are right


def test_a_forgotten_bias_shows_in_the_output_and_its_gradient():
    diffs = conv_check.differences(without_bias, conv_check.ASSIGNMENT_CASE, CPU)
    case = conv_check.ASSIGNMENT_CASE
    expected_bias = case.tensors(CPU)[2].detach().abs().max().item()  # the output misses the bias
    assert diffs["output"] == pytest.approx(expected_bias)
    assert diffs["grad_bias"] == "is not computed (None)"
    assert diffs["grad_input"] < 1e-12 and diffs["grad_weight"] < 1e-12


def test_a_wrong_shape_is_said_instead_of_a_difference():
    def transposed_output(*args):
        return F.conv2d(*args).transpose(2, 3)[..., :5]

    lines = conv_check.diagnose(transposed_output, CPU)
    assert lines[0] == ("output has shape (2, 64, 6, 5), F.conv2d's (2, 64, 6, 6) (input 2x3x12x12, 64 filters 7x7, "
                        "stride 2, padding 3)")


@pytest.fixture(scope="module")
def buggy_code(tmp_path_factory):
    """A copy of code/ whose student_code.py (ours) lays its weight gradient out transposed."""
    code = tmp_path_factory.mktemp("repo") / "code"
    shutil.copytree(REPO_ROOT / "code", code, ignore=shutil.ignore_patterns("__pycache__"))
    source = (code / "student_code.py").read_text()
    right = "grad_weight = grad_weight.view_as(weight) if need_weight else None"
    assert right in source
    (code / "student_code.py").write_text(source.replace(
        right, "grad_weight = grad_weight.transpose(1, 2).reshape(weight.shape) if need_weight else None"))
    return code


def test_test_conv_names_grad_weight_and_a_figure(buggy_code):
    result = subprocess.run([sys.executable, "test_conv.py"], cwd=buggy_code, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    # The assignment's lines stay; the detail is indented under the failed check.
    assert lines[lines.index("Check Fprop ...") + 1] == "Fprop testing passed"
    bprop = lines.index("Bprop testing failed")
    assert re.fullmatch(rf"  grad_weight {DIFFERS} \(input 2x3x12x12, 64 filters 7x7, stride 2, padding 3\)",
                        lines[bprop + 1])
    assert lines[bprop + 2].startswith("  the smallest failing case: grad_weight differs")
    assert "nn.module wrapper testing failed" in lines
    assert lines[-1] == "2 of 3 checks failed."


def test_pytest_gets_the_same_detail(buggy_code):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_conv.py"],
                            cwd=buggy_code, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert re.search(rf"AssertionError: grad_weight {DIFFERS} \(input 2x3x12x12", result.stdout), result.stdout
