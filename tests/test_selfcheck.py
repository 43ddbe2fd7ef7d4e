"""tools/check_student_code.py tells a right file from a wrong one, part by part.

The files are the 2019 student's (tests/student_2019, a small network: seconds a run) with one
typical mistake each, written into a temporary folder. (Our own file passes too: 18 s on a 2-core
CPU, left to `python tools/check_student_code.py` to keep the suite short.)
"""
import re

import pytest

from helpers import REPO_ROOT, run_python

STUDENT_2019 = REPO_ROOT / "tests" / "student_2019" / "student_code.py"
TOOL = REPO_ROOT / "tools" / "check_student_code.py"

MISTAKES = {
    "transposed weight gradient": (
        "grad_weight = dy.matmul(cols.transpose(1, 2)).sum(0).view_as(weight)",
        "grad_weight = dy.matmul(cols.transpose(1, 2)).sum(0).t().reshape(weight.shape)"),
    "PGD steps up the target's loss": (
        "output = output - self.step_size * output.grad.sign()",
        "output = output + self.step_size * output.grad.sign()"),
    "PGD forgets the projection": (
        "output = torch.min(torch.max(output, input - self.epsilon), input + self.epsilon).detach()",
        "output = output.detach()"),
    "backward returns too few gradients": (
        "return grad_input, grad_weight, grad_bias, None, None",
        "return grad_input, grad_weight, grad_bias"),
    "PGD changes its input in place": (
        "input + self.epsilon).detach()\n    return output",
        "input + self.epsilon).detach()\n    input.data.copy_(output)\n    return output"),
    "saliency keeps the gradient's sign": (
        "output = input.grad.abs().max(1, keepdim=True)[0]",
        "output = input.grad.max(1, keepdim=True)[0]"),
}
# Which parts each mistake fails; every other part passes.
FAILS = {
    "transposed weight gradient": {"the convolution", "the network"},
    "PGD steps up the target's loss": {"PGD"},
    "PGD forgets the projection": {"PGD"},
    "saliency keeps the gradient's sign": {"saliency"},
    "backward returns too few gradients": {"the convolution", "the network"},
    "PGD changes its input in place": {"PGD"},
}


def check(path, data, *flags):
    code, out, err = run_python(TOOL, path, "--data", data, *flags)
    verdicts = dict(re.findall(r"^Part [IV]+ +(the convolution|the network|saliency|PGD) +(PASS|FAIL) ", out, re.M))
    return code, out, err, verdicts


@pytest.fixture(scope="module")
def data(demo_dataset):
    return demo_dataset(train_per_class=4)  # 40 images: the check takes 32


def test_the_2019_file_passes_every_part(data):
    # In bf16 (the default where the CPU computes it natively); the mistakes below run in this CPU's
    # default, so fp32 is covered on the CPUs without it.
    code, out, err, verdicts = check(STUDENT_2019, data, "--amp")
    assert code == 0, out + err
    assert len(verdicts) == 4 and set(verdicts.values()) == {"PASS"}
    assert out.strip().splitlines()[-1].startswith("4 of 4 parts pass")
    assert "The network learns in bf16 autocast" in out


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_fails_its_part_and_only_it(mistake, data, tmp_path):
    right, wrong = MISTAKES[mistake]
    source = STUDENT_2019.read_text()
    assert right in source
    # Another file name than student_code.py is read too (a download saved as "student_code (1).py").
    path = tmp_path / "student_code (1).py"
    path.write_text(source.replace(right, wrong))
    code, out, err, verdicts = check(path, data)
    assert code == 1, out + err
    failed = {part for part, verdict in verdicts.items() if verdict == "FAIL"}
    assert failed == FAILS[mistake], out
    if mistake == "transposed weight gradient":
        assert re.search(r"grad_weight differs from F\.conv2d's by up to \d\.\de[+-]\d\d \(input 2x3x12x12", out)
        assert "check Part I's backward" in out


def test_a_file_that_cannot_be_imported_exits_4(tmp_path, data):
    path = tmp_path / "student_code.py"
    path.write_text("import torch\nraise RuntimeError('half-written')\n")
    code, out, err, _ = check(path, data)
    assert code == 4
    assert re.fullmatch(r"error: cannot import student_code\.py: .*student_code\.py:2 in <module>: "
                        r"RuntimeError: half-written", err.strip())


def test_a_missing_file_is_one_line(tmp_path):
    code, _, err = run_python(TOOL, tmp_path / "nope.py")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nope.py'}: no such file (give the student's student_code.py)"
