"""test_conv.py says what is wrong: harness.conv_check against F.conv2d, and test_conv.py with a
student file that has a typical silent bug (a transposed weight gradient). test_student_interface.py
runs test_conv.py as a script on a 2019 student file."""
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from harness import conv_check

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


@pytest.fixture
def buggy_student(monkeypatch):
    """A student module whose CustomConv2DFunction has the transposed weight gradient (in place of
    student_code: test_conv.py loads it through the seam) and whose CustomConv2d uses it."""
    module = types.ModuleType("student_code")
    module.__file__ = "student_code.py"
    module.CustomConv2DFunction = TransposedWeightGrad

    class CustomConv2d(torch.nn.Conv2d):
        def _conv_forward(self, input, weight, bias):
            return TransposedWeightGrad.apply(input, weight, bias, self.stride[0], self.padding[0])

    module.CustomConv2d = CustomConv2d
    monkeypatch.setitem(sys.modules, "student_code", module)
    return module


def test_test_conv_names_grad_weight_and_a_figure(buggy_student, capsys, monkeypatch):
    import test_conv

    # gradcheck's finite differences take 10 s here and can only say False for this bug (the weight
    # gradient is off by up to 3.7): its verdict is given, the lines under it are what is tested.
    monkeypatch.setattr(test_conv, "gradcheck", lambda *args, **kwargs: False)
    assert test_conv.main() == 1
    lines = capsys.readouterr().out.splitlines()
    # The assignment's lines stay; the detail is indented under the failed check.
    assert lines[lines.index("Check Fprop ...") + 1] == "Fprop testing passed"
    bprop = lines.index("Bprop testing failed")
    assert re.fullmatch(rf"  grad_weight {DIFFERS} \(input 2x3x12x12, 64 filters 7x7, stride 2, padding 3\)",
                        lines[bprop + 1])
    assert lines[bprop + 2].startswith("  the smallest failing case: grad_weight differs")
    module = lines.index("nn.module wrapper testing failed")
    assert lines[module + 1].startswith("  grad_weight differs from F.conv2d's by up to")
    assert lines[-1] == "2 of 3 checks failed."


def test_pytest_gets_the_same_detail(buggy_student):
    import test_conv

    with pytest.raises(AssertionError, match=rf"^grad_weight {DIFFERS} \(input 2x3x12x12"):
        test_conv.test_module_wrapper()
    test_conv.test_fprop()  # the forward is right
