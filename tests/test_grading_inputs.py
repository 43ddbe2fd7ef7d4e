"""What tools/grade.py accepts, without running any submission: the folder's entries (folders, zips as
zip_submission.py makes them, bare files), unsafe zips, the rubric's overrides and its errors, the
script's one-line errors."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.cli import UserError
from harness import devices
from harness.grading import batch, rubric as rubrics, runner, submissions

REPO = Path(__file__).resolve().parent.parent


def test_folders_zips_and_bare_files_are_staged(tmp_path):
    tmp_path = tmp_path / ".grader"  # the grader stages under GRADES/.grader: a dot folder above is fine
    subs = tmp_path / "subs"
    (subs / "alice" / "code").mkdir(parents=True)
    (subs / "alice" / "code" / "student_code.py").write_text("x = 1\n")
    (subs / "alice" / "code" / "helpers.py").write_text("y = 2\n")
    (subs / "alice" / "results").mkdir()
    (subs / "alice" / "results" / "predictions_val.txt").write_text("val/00000001.jpg 1 2 3 4 5\n")
    (subs / "bob.py").write_text("x = 2\n")
    with zipfile.ZipFile(subs / "carol.zip", "w") as archive:  # zip_submission.py's layout
        archive.writestr("code/student_code.py", "x = 3\n")
        archive.writestr("results/model.pth.tar", b"weights")
        archive.writestr("writeup/report.pdf", b"%PDF")
    with zipfile.ZipFile(subs / "mallory.zip", "w") as archive:
        archive.writestr("../../escape.py", "x = 4\n")
    (subs / ".hidden").mkdir()
    (subs / "dave").mkdir()  # nothing handed in
    found = {sub.name: sub for sub in submissions.discover(subs, tmp_path / "staging")}
    assert sorted(found) == ["alice", "bob", "carol", "dave", "mallory"]
    assert sorted(p.name for p in found["alice"].source.iterdir()) == ["helpers.py", "results", "student_code.py"]
    assert (found["carol"].source / "results" / "model.pth.tar").read_bytes() == b"weights"
    assert (found["bob"].source / "student_code.py").read_text() == "x = 2\n"
    assert "unsafe path: ../../escape.py" in found["mallory"].problem
    assert found["dave"].problem == "no student_code.py in the submission"
    assert not (tmp_path / "escape.py").exists()
    again = {sub.name: sub.digest for sub in submissions.discover(subs, tmp_path / "staging2")}
    assert again["alice"] == found["alice"].digest != found["bob"].digest
    with pytest.raises(UserError, match="no submission called 'erin'"):
        submissions.discover(subs, tmp_path / "staging3", only=["erin"])


def test_a_rubric_overrides_points_timeouts_and_runs(tmp_path):
    default = rubrics.load()
    assert default.max_score == 30 and default.items[0].name.startswith("Part I: ")
    path = tmp_path / "rubric.toml"
    path.write_text('[grader]\nmemory_mb = 512\n[checks."Part I: no built-in convolution"]\npoints = 5\n'
                    '[checks."Part II: short training lowers the loss"]\nrun = false\n')
    rubric = rubrics.load(path)
    assert rubric.item("Part I: no built-in convolution").points == 5 and rubric.grader["memory_mb"] == 512
    assert "Part II: short training lowers the loss" not in [item.name for item in rubric.items]
    assert rubric.max_score == 30 + 3 - 2
    path.write_text('[checks."Part I: no such check"]\npoints = 1\n')
    with pytest.raises(UserError, match="no check is called 'Part I: no such check'"):
        rubrics.load(path)
    path.write_text('[checks."Part I: test_conv forward"]\npoints = "two"\n')
    with pytest.raises(UserError, match="points = 'two' is not valid"):
        rubrics.load(path)
    path.write_text("[grader\n")
    with pytest.raises(UserError, match="not a TOML rubric"):
        rubrics.load(path)


def test_the_output_is_split_per_probe():
    text = "imported\n\n@@grader-probe@@ conv\nconv says\n\n@@grader-probe@@ pgd\npgd says\n"
    assert runner._split_output(text) == {"conv": "imported\nconv says\n", "pgd": "pgd says\n"}


def test_the_script_says_what_is_wrong_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "grade.py"), str(tmp_path / "none"), "--out",
                           str(tmp_path / "grades")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "no such folder" in done.stderr
    (tmp_path / "subs").mkdir()
    (tmp_path / "grades.txt").write_text("a file")
    done = subprocess.run([sys.executable, str(REPO / "tools" / "grade.py"), str(tmp_path / "subs"), "--out",
                           str(tmp_path / "grades.txt")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == f"error: --out: {tmp_path / 'grades.txt'} is a file, not a folder"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "make_starter.py"), "--solution",
                           str(tmp_path / "none.py"), "--out", str(tmp_path / "s.py")], capture_output=True, text=True)
    assert done.returncode == 2 and "cannot read it" in done.stderr


def test_similar_pairs_beyond_the_starter_and_identical_hand_ins(tmp_path):
    from harness.grading import similarity

    starter = "def f(x):\n    raise NotImplementedError\n"
    body = "\n".join(f"def g{i}(x):\n    return x * {i} + sum(range({i})) - len(str(x))" for i in range(12))
    folders = {}
    for name, text in (("a", starter + body), ("b", starter + body.replace("len(str(x))", "abs(x)", 1)), ("c", starter),
                       ("d", starter + "\n".join(f"value_{i} = [{i}] * {i}" for i in range(40)))):
        folders[name] = tmp_path / name
        (folders[name] / "results").mkdir(parents=True)
        (folders[name] / "student_code.py").write_text(text)
    for name in ("c", "d"):
        (folders[name] / "results" / "predictions_test.txt").write_text("test/00000001.jpg 1 2 3 4 5\n")
    pairs = similarity.similar_pairs(folders, starter)
    assert [(a, b, why) for a, b, _, why in pairs] == [("c", "d", "identical predictions_test.txt"), ("a", "b", "code")]


def test_grade_py_without_its_arguments_is_one_line():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "grade.py")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "error: give SUBMISSIONS and --out (or --gradescope ROOT)"


def test_make_starter_refuses_a_file_without_solution_regions(tmp_path):
    from harness.grading import starter

    with pytest.raises(ValueError, match="no '# BEGIN SOLUTION' region"):
        starter.make("def f():\n    return 1\n")


def test_a_folder_keeps_the_precision_it_was_first_graded_in(tmp_path, monkeypatch):
    # The default follows a timing probe; a busier hour must not flip it (and with it the grader version,
    # which regrades everyone). --amp / --no-amp change it, and the folder remembers the change.
    work = tmp_path / "grades" / ".grader"
    work.mkdir(parents=True)
    probe = {"faster": True}
    said = []
    monkeypatch.setattr(devices, "cpu_bf16_is_faster", lambda device: probe["faster"])
    monkeypatch.setattr(devices, "native_bf16_features", lambda: ["AVX512_BF16"])
    assert batch.training_precision(work, None, said.append) is True
    batch.remember_precision(work, True)
    probe["faster"] = False  # a loaded machine's probe
    assert batch.training_precision(work, None, said.append) is True
    assert batch.training_precision(work, False, said.append) is False  # --no-amp
    batch.remember_precision(work, False)
    probe["faster"] = True
    assert batch.training_precision(work, None, said.append) is False
    assert not said
    for damaged in ("{not json", "", '{"amp": "yes"}', '{"amp": 0}', "[true]", "null"):
        (work / batch.PRECISION_FILE).write_text(damaged)  # chosen again, and said
        assert batch.training_precision(work, None, said.append) is True
        assert said.pop().endswith("is damaged or unreadable; the training check's precision is chosen again")
    monkeypatch.setattr(devices, "native_bf16_features", lambda: [])  # the folder moved to a CPU without bf16
    batch.remember_precision(work, True)
    assert batch.training_precision(work, None, said.append) is True
    assert "this CPU emulates bf16" in said.pop()


def test_a_refused_run_leaves_the_remembered_precision_alone(tmp_path):
    out = tmp_path / "grades"
    (out / batch.WORKDIR).mkdir(parents=True)
    (out / batch.WORKDIR / batch.PRECISION_FILE).write_text('{"amp": true}')
    with pytest.raises(UserError, match="no such"):
        batch.grade_folder(tmp_path / "no-such-folder", out, amp=False, say=lambda line: None)
    assert (out / batch.WORKDIR / batch.PRECISION_FILE).read_text() == '{"amp": true}'


def test_a_grades_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "subs").mkdir()
    (tmp_path / "grades").mkdir()
    (tmp_path / "grades" / batch.WORKDIR).write_text("not a folder")
    with pytest.raises(UserError, match=r"--out: cannot create .*\.grader"):
        batch.grade_folder(tmp_path / "subs", tmp_path / "grades", say=lambda line: None)
