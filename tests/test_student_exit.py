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
