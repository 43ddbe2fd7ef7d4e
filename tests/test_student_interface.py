"""The course's interface both ways: a student's student_code.py written to the 2019 interface runs in
our harness, and our student_code.py runs next to the 2019 starter's helpers alone.

The 2019 file (tests/student_2019/student_code.py) is dropped into a temporary copy of code/, and the
scripts run as a student runs them, in their own processes: test_conv.py, a 1-epoch training run,
-e -v, -a -v and predict.py.
Run: python -m pytest tests/test_student_interface.py -q
"""
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO_ROOT, run_main, run_python, train_argv

STUDENT_2019 = Path(__file__).resolve().parent / "student_2019" / "student_code.py"
# The Spring 2019 starter's utils.py helpers that student files import, written without OpenCV.
UTILS_2019 = '''
import numpy as np


def resize_image(img, new_size, interpolation):
    return img


def load_image(filename):
    raise NotImplementedError


class AverageMeter(object):
    def __init__(self):
        self.reset()

    def reset(self):
        self.val = self.avg = self.sum = self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count
'''


def run(script, *args, cwd):
    """(exit code, stdout, stderr) of `python script args` in a fresh process on the CPU, with none of
    our environment (as a student's shell would start it)."""
    return run_python(script, *args, cwd=cwd, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin",
                                                   "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def code_2019(tmp_path_factory):
    """A temporary copy of code/ holding the 2019 student's file instead of ours."""
    repo = tmp_path_factory.mktemp("repo")
    code = repo / "code"
    shutil.copytree(REPO_ROOT / "code", code, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "tools", repo / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(STUDENT_2019, code / "student_code.py")
    return code


@pytest.fixture(scope="module")
def trained_2019(code_2019, tiny_data):
    """A 1-epoch run of the 2019 student's default_model with its own CustomConv2d: its folder."""
    logdir = code_2019.parent / "logs"
    argv = train_argv(tiny_data, logdir, "student", "--use-custom-conv", gpu=None)  # the CPU by its environment
    code, out, err = run(code_2019 / "main.py", *argv, cwd=code_2019.parent)
    assert code == 0, err
    # A network built with the student's CustomConv2d runs NCHW, as a 2019 convolution (weight.view(...))
    # needs: nothing to note about the memory format (a CPU with native bf16 notes what --amp gives).
    assert "=> simplenet (CustomConv2d) on cpu (NCHW)" in out
    assert [line for line in out.splitlines() if line.startswith("note:") and "bf16" not in line] == []
    return logdir / "student"


def test_test_conv_passes_with_the_2019_student_file(code_2019):
    code, out, err = run(code_2019 / "test_conv.py", cwd=code_2019)
    assert code == 0, out + err
    assert "All passed!" in out


def test_training_builds_default_model_and_saves_its_arch(trained_2019):
    args = json.loads((trained_2019 / "args.json").read_text())
    assert args["arch"] == "simplenet" and args["use_custom_conv"] is True
    assert (trained_2019 / "model_best.pth.tar").is_file()


def test_evaluation_with_saliency_maps(code_2019, trained_2019, tiny_data):
    code, out, err = run(code_2019 / "main.py", tiny_data, "-e", "-v", "-j", "0", "--resume",
                         trained_2019 / "model_best.pth.tar", cwd=code_2019.parent)
    assert code == 0, err
    assert json.loads((trained_2019 / "evaluation.json").read_text())["count"] == 10
    assert (trained_2019 / "Image_Atten_0000.png").is_file()


def test_attack_with_images(code_2019, trained_2019, tiny_data):
    code, out, err = run(code_2019 / "main.py", tiny_data, "-a", "-v", "-j", "0", "--resume",
                         trained_2019 / "model_best.pth.tar", cwd=code_2019.parent)
    assert code == 0, err
    result = json.loads((trained_2019 / "attack.json").read_text())
    assert result["attacks"][0]["epsilon"] == 0.1 and result["count"] == 10
    assert (trained_2019 / "Adv_Image_0000.png").is_file()


def test_predict_writes_the_submission(code_2019, trained_2019, tiny_data, tmp_path):
    code, out, err = run(code_2019.parent / "tools" / "predict.py", tiny_data, "--resume", trained_2019 / "model_best.pth.tar",
                         "--out", tmp_path, "--gpu", "-1", "-j", "0", cwd=code_2019.parent)
    assert code == 0, err
    assert len((tmp_path / "predictions_test.txt").read_text().splitlines()) == 2
    assert len((tmp_path / "predictions_val.txt").read_text().splitlines()) == 10


def test_our_student_code_runs_beside_the_2019_helpers_alone(tmp_path):
    """Our student_code.py in a folder with nothing of ours but a 2019-style utils.py, called as the
    2019 harness calls it."""
    shutil.copy(REPO_ROOT / "code" / "student_code.py", tmp_path / "student_code.py")
    (tmp_path / "utils.py").write_text(UTILS_2019)
    harness_2019 = textwrap.dedent("""
        import torch, torch.nn as nn
        from student_code import (default_model, default_attack, default_attention, default_visfunction,
                                  CustomConv2d, CustomConv2DFunction)
        criterion = nn.CrossEntropyLoss()
        model = default_model(conv_op=CustomConv2d, num_classes=100)
        images, labels = torch.randn(2, 3, 128, 128), torch.tensor([1, 2])
        loss = criterion(model(images), labels)
        loss.backward()
        model.eval()
        adv = default_attack(criterion).perturb(model, images)
        saliency = default_attention(criterion).explain(model, images)
        grid = default_visfunction(images, vis_output=saliency)
        print(tuple(adv.shape), tuple(saliency.shape), tuple(grid.shape), CustomConv2DFunction.__name__)
    """)
    (tmp_path / "harness_2019.py").write_text(harness_2019)
    code, out, err = run(tmp_path / "harness_2019.py", cwd=tmp_path)
    assert code == 0, err
    assert out.split("CustomConv2DFunction")[0].strip() == "(2, 3, 128, 128) (2, 1, 128, 128) (3, 132, 262)"


# ---------------------------------------------------------------------------------------------------
# utils.py keeps the 2019 helpers that student files import
# ---------------------------------------------------------------------------------------------------


def test_resize_image_takes_opencvs_interpolation_codes():
    import numpy as np

    import utils

    image = np.array([[0, 100], [200, 255]], dtype=np.uint8)  # (H, W) = (2, 2)
    # cv2.INTER_NEAREST (0) to (width 4, height 2): every column twice, as cv2.resize gives it.
    np.testing.assert_array_equal(utils.resize_image(image, (4, 2), 0),
                                  [[0, 0, 100, 100], [200, 200, 255, 255]])
    colour = np.zeros((6, 8, 3), dtype=np.uint8)
    assert utils.resize_image(colour, (5, 3), 1).shape == (3, 5, 3)  # new_size is (width, height)
    with pytest.raises(ValueError, match="interpolation must be an OpenCV code 0-4"):
        utils.resize_image(image, (4, 2), 7)


def test_save_image_and_load_image_round_trip_an_rgb_array(tmp_path):
    import numpy as np

    import utils

    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    utils.save_image(tmp_path / "picture.png", rgb)
    loaded = utils.load_image(tmp_path / "picture.png")
    assert loaded.dtype == np.uint8 and loaded.shape == (5, 7, 3)
    np.testing.assert_array_equal(loaded, rgb)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written atomically


def test_load_image_reads_every_pixel_mode_as_the_dataset_does(tmp_path):
    import numpy as np
    from PIL import Image

    import utils

    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)  # 16-bit grey: scaled, not clipped
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(utils.load_image(tmp_path / "deep.png")[..., 0], [[0, 100, 255]])


# ---------------------------------------------------------------------------------------------------
# Mistakes in a student's file, each one line naming it. In-process (seconds each): the 2019 file is
# imported as student_code for the test, as the harness would import it from code/.
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def student_file(tmp_path, monkeypatch):
    """install(old, new): the 2019 file with `old` replaced by `new` becomes student_code (not yet imported)."""
    def install(old="", new=""):
        source = STUDENT_2019.read_text()
        assert old in source
        folder = tmp_path / "student"
        folder.mkdir(exist_ok=True)
        (folder / "code").mkdir(exist_ok=True)
        (folder / "code" / "student_code.py").write_text(source.replace(old, new) if old else source)
        monkeypatch.delitem(sys.modules, "student_code", raising=False)
        monkeypatch.syspath_prepend(str(folder / "code"))
        return folder / "code" / "student_code.py"

    yield install
    sys.modules.pop("student_code", None)  # the next test imports ours again


def test_adversarial_training_uses_the_harness_batch(student_file, tiny_data, tmp_path, capsys):
    # The 2019 file has no adversarial_training_batch: the harness's own runs the student's PGDAttack.
    student_file()
    code, _, err = run_main(train_argv(tiny_data, tmp_path, "adv", "--adv-train", "--adv-steps", "1", batch_size=10),
                            capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "adv" / "args.json").read_text())["adv_train"] is True


def test_arch_the_file_does_not_define_is_one_line(student_file, tiny_data, tmp_path, capsys):
    student_file()
    code, _, err = run_main(train_argv(tiny_data, tmp_path, None, "--arch", "customnet2"), capsys)
    assert code == 2
    assert err.strip().splitlines() == ["error: --arch customnet2: student_code.py defines no CustomNet2 "
                                        "(the class --arch customnet2 builds)"]


@pytest.mark.parametrize("old, new, message", [
    # The student's bug, not the harness's: the line and the exception are named.
    ("    super(SimpleNet, self).__init__()\n", "    super(SimpleNet, self).__init__()\n    1 / 0\n",
     r"error: building SimpleNet: code/student_code.py:\d+ in __init__: ZeroDivisionError: division by zero"),
    ("from utils import resize_image", "from utils import resize_images",
     r"error: cannot import student_code.py: code/student_code.py:\d+ in <module>: ImportError: cannot import "
     r"name 'resize_images' from 'utils'"),
    ("import math\n", "import math\nimport sys\nsys.exit('no')\n",
     r"error: cannot import student_code.py: it called sys.exit\('no'\)"),
    # A 2019 habit on a machine without a GPU: moving tensors to CUDA inside forward.
    ("    x = self.avgpool(self.features(x))", "    x = self.avgpool(self.features(x.cuda()))",
     r"error: running SimpleNet on two blank images: code/student_code.py:\d+ in forward: "),
    ("    return self.fc(x.view(x.size(0), -1))", "    return self.fc(x.view(x.size(0), -1)), x",
     r"error: student_code.py's SimpleNet \(--arch simplenet\) returned a tuple for a batch of 2 images, not "
     r"\(2, 10\) logits: its forward must return one row of 10 class scores per image"),
    ("    self.fc = nn.Linear(32, num_classes)", "    self.fc = nn.Linear(32, 100)",
     r"error: student_code.py's SimpleNet \(--arch simplenet\) returned a tensor of shape \(2, 100\) for a "
     r"batch of 2 images, not \(2, 10\) logits"),
])
def test_mistakes_in_the_student_file_are_one_line(student_file, tiny_data, tmp_path, capsys, old, new, message):
    student_file(old, new)
    code, _, err = run_main(train_argv(tiny_data, tmp_path), capsys)
    assert code == 4
    assert len(err.strip().splitlines()) == 1 and re.match(message, err.strip()), err


def test_a_students_bug_while_training_is_one_line(student_file, tiny_data, tmp_path, capsys):
    # Raised in the training step, not while building: forward fails on batches of more than 2 images.
    student_file("    x = self.avgpool(self.features(x))",
                 "    assert x.shape[0] <= 2, 'too many images'\n    x = self.avgpool(self.features(x))")
    code, _, err = run_main(train_argv(tiny_data, tmp_path), capsys)
    assert code == 4
    (line,) = err.strip().splitlines()
    assert re.fullmatch(r"error: code/student_code\.py:\d+ in forward: AssertionError: too many images "
                        r"\(an error in the student's code\)", line)


def test_an_attack_that_returns_nothing_is_one_line(student_file, tiny_data, tmp_path, capsys):
    student_file("    return output\n\n\ndefault_attack", "    return None\n\n\ndefault_attack")
    assert run_main(train_argv(tiny_data, tmp_path, "r"), capsys)[0] == 0
    code, _, err = run_main([tiny_data, "-a", "-j", "0", "--resume", tmp_path / "r" / "model_best.pth.tar"], capsys)
    assert code == 4
    assert err.strip().splitlines() == ["error: student_code.py's PGDAttack.perturb returned a NoneType, not a batch "
                                        "of images shaped like its input (10, 3, 160, 160)"]


def test_test_conv_names_the_students_error_and_goes_on(code_2019, tmp_path):
    # The most common 2019 bug: a wrong view of the output in forward.
    broken = tmp_path / "code"
    shutil.copytree(code_2019, broken, ignore=shutil.ignore_patterns("__pycache__"))
    source = (broken / "student_code.py").read_text()
    (broken / "student_code.py").write_text(source.replace("output.view(n, out_channels, out_h, out_w)",
                                                           "output.view(n, out_channels, out_h + 1, out_w)"))
    code, out, _ = run(broken / "test_conv.py", cwd=broken)
    assert code == 1
    lines = out.splitlines()
    fprop = next(line for line in lines if line.startswith("Fprop testing"))
    assert fprop.startswith("Fprop testing failed: code/student_code.py:") and " in forward: RuntimeError: " in fprop
    assert "nn.module wrapper testing failed: " in out and lines[-1] == "3 of 3 checks failed."


def test_a_missing_name_is_one_line(student_file):
    from harness import student

    student_file("default_attack = PGDAttack\n", "")
    with pytest.raises(student.StudentCodeError,
                       match=r"^code/student_code.py defines no default_attack \(needed for -a\)$"):
        student.get("default_attack", "-a")
