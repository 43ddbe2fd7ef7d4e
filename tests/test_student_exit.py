"""sys.exit() in the student's code is the student's error: exit code 4 and one line naming the file and
line, in every mode and at any moment (the 2019 student's file, made to exit at its Nth forward call)."""
import importlib.util
import re
import sys

import pytest

from helpers import REPO_ROOT, run_main
from harness import student

STUDENT_2019 = REPO_ROOT / "tests" / "student_2019" / "student_code.py"
FORWARD = "  def forward(self, x):\n    x = self.avgpool(self.features(x))\n"


def exiting_student(folder, code, at_call=1, where="forward"):
    """A student_code module whose SimpleNet.forward (or CustomConv2DFunction.forward) calls
    sys.exit(code) at its `at_call`-th call, imported from folder/student_code.py."""
    source = STUDENT_2019.read_text()
    if where == "forward":
        assert FORWARD in source
        source = source.replace(FORWARD, FORWARD.replace(
            "  def forward(self, x):\n",
            f"  calls = 0\n\n  def forward(self, x):\n    SimpleNet.calls += 1\n"
            f"    if SimpleNet.calls >= {at_call}:\n      import sys; sys.exit({code!r})\n"))
    else:
        head = "  def forward(ctx, input_feats, weight, bias, stride=1, padding=0):\n"
        assert head in source
        source = source.replace(head, head + f"    import sys; sys.exit({code!r})\n")
    path = folder / "student_code.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("student_code", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def use_student(monkeypatch):
    def install(module):
        monkeypatch.setitem(sys.modules, "student_code", module)
    return install


@pytest.mark.parametrize("code", [0, "bye"])
def test_training_that_exits_is_the_students_error(code, tiny_data, tmp_path, use_student, capsys):
    use_student(exiting_student(tmp_path, code, at_call=4))  # past the harness's own probes
    exit_code, _, err = run_main([tiny_data, "--epochs", "1", "-b", "4", "-j", "0", "--gpu", "-1",
                                  "--logdir", tmp_path / "logs"], capsys)
    assert exit_code == 4
    assert re.fullmatch(rf"error: \S*student_code\.py:\d+ in forward: it called sys\.exit\({code!r}\) "
                        r"\(an error in the student's code\)", err.strip())


def test_an_exit_while_building_the_network_is_one_line(tiny_data, tmp_path, use_student, capsys):
    use_student(exiting_student(tmp_path, 0, at_call=1))  # the harness's check of the logits
    exit_code, _, err = run_main([tiny_data, "--epochs", "1", "-b", "4", "-j", "0", "--gpu", "-1",
                                  "--logdir", tmp_path / "logs"], capsys)
    assert exit_code == 4
    assert "in forward: it called sys.exit(0)" in err and len(err.strip().splitlines()) == 1


def test_test_conv_names_the_exit_and_goes_on(tmp_path, use_student, capsys):
    import test_conv

    use_student(exiting_student(tmp_path, 0, where="conv"))
    assert test_conv.main() == 1
    out = capsys.readouterr().out
    assert re.search(r"^Fprop testing failed: \S*student_code\.py:\d+ in forward: it called sys\.exit\(0\)$",
                     out, re.M)
    assert out.strip().splitlines()[-1] == "3 of 3 checks failed."


def test_our_own_sys_exit_is_not_the_students():
    assert not student.raised_in_student_code(SystemExit(0))


def student_with(folder, right, wrong):
    """The 2019 student's file with `right` replaced by `wrong`, imported from folder/student_code.py."""
    source = STUDENT_2019.read_text()
    assert right in source
    path = folder / "student_code.py"
    path.write_text(source.replace(right, wrong))
    spec = importlib.util.spec_from_file_location("student_code", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_backward_returning_too_few_gradients_is_one_line(tiny_data, tmp_path, use_student, capsys):
    # Autograd raises this after the student's backward has returned: no frame of their file in it.
    use_student(student_with(tmp_path, "return grad_input, grad_weight, grad_bias, None, None",
                             "return grad_input, grad_weight, grad_bias"))
    exit_code, _, err = run_main([tiny_data, "--use-custom-conv", "--epochs", "1", "-b", "4", "-j", "0",
                                  "--gpu", "-1", "--logdir", tmp_path / "logs"], capsys)
    assert exit_code == 4
    assert re.fullmatch(r"error: \S*student_code\.py: CustomConv2DFunction\.backward: RuntimeError: function "
                        r"CustomConv2DFunctionBackward returned an incorrect number of gradients \(expected \d, got 3\)"
                        r" \(an error in the student's code\)", err.strip())


def test_an_unfinished_explain_is_refused_in_one_line(tmp_path, use_student):
    import torch

    from harness import engine

    use_student(student_with(tmp_path, "    output = input.grad.abs().max(1, keepdim=True)[0]\n",
                             "    output = None\n"))
    module = sys.modules["student_code"]
    model = module.SimpleNet(num_classes=3).eval()
    batch = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))]
    with pytest.raises(student.StudentCodeError, match=r"student_code\.py's GradAttention\.explain returned a "
                                                       r"NoneType, not a saliency map of shape \(2, 1, 32, 32\)"):
        engine.validate(model, batch, torch.nn.CrossEntropyLoss(), torch.device("cpu"), print_freq=1,
                        attention=module.GradAttention(torch.nn.CrossEntropyLoss()),
                        visualize=module.vis_grad_attention, log=engine.RunLog(tmp_path, active=True))


def test_an_attack_that_changes_its_input_leaves_the_clean_batch_alone():
    import torch

    from harness import engine

    class InPlace:
        def perturb(self, model, images):
            return images.add_(1.0)  # the mistake: the caller's tensor changes

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).eval()
    images = torch.randn(2, 3, 4, 4)
    before = images.clone()
    engine.attack_eval(model, [(images, torch.tensor([0, 1]))], {0.1: InPlace()}, torch.device("cpu"))
    assert torch.equal(images, before)
